"""The Python API's records refuse wrong types and ranges where they are made, with a line naming the field
(not later, from numpy, onnxruntime or marching cubes)."""

import numpy as np
import pytest
from conftest import DEMO_ONNX

from occnet.runtime import MeshSettings, OccupancyModel
from occnet.runtime.errors import InputError


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
    ("largest_only", 1, "largest only must be True or False, got 1"),
    ("largest_only", "no", "largest only must be True or False, got 'no'"),
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
