"""The Python API's records refuse wrong types and ranges where they are made, with a line naming the field
(not later, from numpy, onnxruntime, PyTorch or marching cubes)."""

import math

import numpy as np
import pytest
from conftest import DEMO_ONNX

from occnet.batch.job import BatchSettings
from occnet.runtime import MeshSettings, OccupancyModel
from occnet.runtime.errors import InputError
from occnet.train.config import ConditionalConfig, SamplingConfig, TrainConfig
from occnet.train.encodings import Fourier


@pytest.mark.parametrize("field,value,match", [
    ("resolution", "256", "resolution must be an integer >= 2, got '256'"),
    ("resolution", 64.0, "resolution must be an integer >= 2, got 64.0"),
    ("resolution", True, "resolution must be an integer >= 2, got True"),
    ("resolution", 1, "resolution must be an integer >= 2, got 1"),
    ("method", "marching", "method must be one of adaptive, dense"),
    ("method", None, "method must be one of adaptive, dense"),
    ("threshold", "0.5", "threshold is a probability .* got '0.5'"),
    ("threshold", float("nan"), "threshold is a probability .* got nan"),
    ("threshold", 1, "threshold is a probability .* got 1"),
    ("threshold", True, "threshold is a probability .* got True"),
    ("batch_size", 0, "batch size must be an integer >= 1, got 0"),
    ("batch_size", 1024.5, "batch size must be an integer >= 1, got 1024.5"),
    ("largest_only", 1, "largest only must be a bool, got int"),
    ("largest_only", "no", "largest only must be a bool, got str"),
    ("min_faces", -1, "min faces must be an integer >= 0, got -1"),
    ("min_faces", None, "min faces must be an integer >= 0, got None"),
])
def test_mesh_settings_are_checked_on_construction(field, value, match):
    with pytest.raises(InputError, match=match):
        MeshSettings(**{field: value})


def test_mesh_settings_take_numpy_numbers_as_plain_ones():
    settings = MeshSettings(resolution=np.int64(96), threshold=np.float32(0.25), batch_size=np.uint32(4096),
                            min_faces=np.int16(3))
    assert settings == MeshSettings(resolution=96, threshold=float(np.float32(0.25)), batch_size=4096, min_faces=3)
    assert all(type(getattr(settings, f)) is int for f in ("resolution", "batch_size", "min_faces"))
    assert type(settings.threshold) is float


@pytest.mark.parametrize("args,kwargs,match", [
    ((None,), {}, "model path must be a str or a path, got NoneType"),
    ((DEMO_ONNX,), {"device": "gpu"}, "device must be one of auto, cpu, cuda, got 'gpu'"),
    ((DEMO_ONNX,), {"device": ["cpu"]}, "device must be one of auto, cpu, cuda"),
    ((DEMO_ONNX,), {"threads": 1.5}, "threads must be an integer >= 0, got 1.5"),
    ((DEMO_ONNX,), {"threads": True}, "threads must be an integer >= 0, got True"),
    ((DEMO_ONNX,), {"threads": -1}, "threads must be an integer >= 0, got -1"),
    ((DEMO_ONNX,), {"threads": 100000}, r"threads must lie in 0\.\.\d+"),
])
def test_occupancy_model_arguments_are_checked(args, kwargs, match):
    with pytest.raises(InputError, match=match):
        OccupancyModel(*args, **kwargs)


@pytest.mark.parametrize("points,match", [
    (np.array([[0.0, 0.0, np.nan]]), "points must be finite"),
    (np.array([[0.0, np.inf, 0.0]]), "points must be finite"),
    (np.array([["a", "b", "c"]]), "points must be real numbers, got dtype <U1"),
    (np.zeros((4, 2)), r"points must have shape \(N, 3\), got \(4, 2\)"),
])
def test_points_without_an_occupancy_are_the_callers_error_not_the_models(points, match):
    model = OccupancyModel(DEMO_ONNX, device="cpu")
    with pytest.raises(InputError, match=match):
        model.logits(points)
    assert model.logits(np.zeros((2, 3))).shape == (2,)


@pytest.mark.parametrize("record,field,value,match", [
    (TrainConfig, "epochs", 10.5, "epochs must be an integer >= 1, got 10.5"),
    (TrainConfig, "epochs", "10", "epochs must be an integer >= 1, got '10'"),
    (TrainConfig, "batch_size", True, "batch size must be an integer >= 1, got True"),
    (TrainConfig, "lr", "0.01", "learning rate must be a finite number > 0, got '0.01'"),
    (TrainConfig, "lr", math.inf, "learning rate must be a finite number > 0, got inf"),
    (TrainConfig, "val_fraction", 1.0, "val fraction must be a finite number > 0 and < 1, got 1.0"),
    (TrainConfig, "seed", 1.5, "seed must be an integer in 0..9223372036854775807, got 1.5"),
    (TrainConfig, "threads", 1.0, "threads must be an integer >= 1, got 1.0"),
    (TrainConfig, "time_budget", math.nan, "time budget in seconds must be a number > 0, got nan"),
    (TrainConfig, "patience", 0, "patience must be an integer >= 1, got 0"),
    (TrainConfig, "device", "gpu", "device must be one of auto, cpu, cuda, got 'gpu'"),
    (TrainConfig, "encoding", "fourier", "encoding must be an Encoding, got str"),
    (Fourier, "scale", "8", "fourier scale must be a finite number > 0, got '8'"),
    (Fourier, "features", 0, "fourier features must be an integer in 1..1024, got 0"),
    (SamplingConfig, "num_points", 1e5, "num points must be an integer >= 100, got 100000.0"),
    (SamplingConfig, "near_sigma", None, "near sigma must be a finite number > 0, got None"),
    (SamplingConfig, "near_fraction", 1.5, r"near fraction must lie in \[0, 1\], got 1.5"),
    (SamplingConfig, "padding", -0.1, "padding must be a finite number >= 0, got -0.1"),
    (BatchSettings, "train", None, "train must be a TrainConfig, got NoneType"),
    (BatchSettings, "mesh", {"resolution": 64}, "mesh must be a MeshSettings, got dict"),
    (BatchSettings, "threads_per_shape", 1.5, "threads per shape must be an integer >= 1, got 1.5"),
    (BatchSettings, "eval_samples", 0, "eval samples must be an integer >= 1, got 0"),
    (BatchSettings, "gpus_per_shape", math.inf, "gpus per shape must be a finite number >= 0, got inf"),
    (BatchSettings, "mesh_format", "xyz", "mesh format must be one of ply, obj, stl, glb, off, got 'xyz'"),
])
def test_training_and_batch_records_are_checked_on_construction(record, field, value, match):
    with pytest.raises(InputError, match=match):
        record(**{field: value})


def test_training_records_take_numpy_numbers_as_plain_ones():
    config = TrainConfig(epochs=np.int64(5), lr=np.float32(0.5), seed=np.uint8(3))
    assert (type(config.epochs), type(config.lr), type(config.seed)) == (int, float, int)
    assert config == TrainConfig(epochs=5, lr=0.5, seed=3)
    assert type(SamplingConfig(num_points=np.int32(500)).num_points) is int


def _options(app) -> dict:
    """``{field name: default}`` of a typer app's options (choices as their strings)."""
    import typer

    command = typer.main.get_command(app)
    return {p.name: getattr(p.default, "value", p.default) for p in command.params if p.param_type_name == "option"}


def test_each_option_is_declared_once_on_its_record_and_every_command_takes_it_from_there():
    """The commands' option names, defaults and help come from the records' fields: a new field declared
    with ``option`` reaches occ-train, occ-batch and occ-mesh with no edit to them."""
    import dataclasses

    from occnet.batch.cli import MESH_OPTIONS, batch_app
    from occnet.runtime.cli import mesh_app
    from occnet.train.cli import train_app

    def declared(record, only=None, exclude=()):
        prefix = record.option_prefix + "_" if hasattr(record, "option_prefix") else ""
        return {prefix + f.name: getattr(f.default, "name", f.default) if f.metadata["cli_default"] is
                dataclasses.MISSING else f.metadata["cli_default"] for f in dataclasses.fields(record)
                if "help" in f.metadata and (only is None or f.name in only) and f.name not in exclude}

    train, batch, mesh = _options(train_app), _options(batch_app), _options(mesh_app)
    training = {**declared(TrainConfig), **declared(Fourier), **declared(SamplingConfig),
                **declared(ConditionalConfig)}
    assert len(training) == 27 and training.items() <= train.items()
    assert train["encoding"] == "none" and train["fourier_features"] == 32
    assert set(train) - set(training) == {"out_dir", "resume", "force", "workers", "address", "gpus_per_worker"}
    batch_options = {**declared(TrainConfig, exclude=("threads",)), **declared(Fourier), **declared(SamplingConfig),
                     **declared(MeshSettings, only=MESH_OPTIONS), **declared(BatchSettings)}
    assert batch_options.items() <= batch.items() and set(batch) - set(batch_options) == {"out_dir", "address", "model"}
    assert declared(MeshSettings).items() <= mesh.items() and len(declared(MeshSettings)) == 6


def test_a_command_line_builds_the_records_the_python_api_builds():
    from occnet.runtime.options import make_record
    from occnet.train.config import training_records

    values = {"epochs": 7, "encoding": "none", "fourier_features": 32, "fourier_scale": 2.0, "near_sigma": 0.02,
              "resolution": 64, "method": "dense"}
    assert training_records(values) == (TrainConfig(epochs=7), SamplingConfig(near_sigma=0.02))
    assert training_records({**values, "encoding": "fourier"})[0] == TrainConfig(
        epochs=7, encoding=Fourier(features=32, scale=2.0))
    assert make_record(MeshSettings, values, only=("method",)) == MeshSettings(method="dense")
    assert make_record(BatchSettings, values, eval_samples=10, mesh=MeshSettings(resolution=64)) == \
        BatchSettings(mesh=MeshSettings(resolution=64), eval_samples=10)
