import csv

import numpy as np
import pytest
import torch

from occnet.runtime.contract import Architecture
from occnet.runtime.errors import InputError
from occnet.runtime.points import make_point_set
from occnet.train.checkpoint import CheckpointError, load_checkpoint
from occnet.train.encodings import Fourier
from occnet.train.model import OccNet
from occnet.train.trainer import (
    EpochMetrics,
    RunFiles,
    TrainConfig,
    TrainResult,
    UntrainedError,
    _check_learned,
    split,
    train,
)


@pytest.fixture(scope="module")
def small_data():
    """A ball in the demo's box, 6,000 uniform points: learned in one epoch of ``quick`` (IoU 0.90)."""
    points = np.random.default_rng(0).uniform(-0.55, 0.55, (6000, 3))
    return make_point_set(points, (np.linalg.norm(points, axis=1) < 0.4).astype(np.float32), "ball",
                          bounds=((-0.55,) * 3, (0.55,) * 3))


def quick(**kwargs) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "batch_size": 32, "lr": 1e-2, "device": "cpu", **kwargs})


def test_run_writes_every_file_and_best_is_the_lowest_val_loss(trained_run):
    with open(trained_run / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["epoch", "train_loss", "val_loss", "val_iou", "val_accuracy", "lr", "seconds"]
    assert [int(r["epoch"]) for r in rows] == list(range(1, 9))
    best = load_checkpoint(trained_run / "best.pt")
    losses = [float(r["val_loss"]) for r in rows]
    assert best.state["epoch"] == 1 + int(np.argmin(losses))
    assert best.metrics["val_loss"] == pytest.approx(min(losses), abs=1e-6)
    assert load_checkpoint(trained_run / "last.pt").state["epoch"] == 8
    assert (trained_run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


def test_checkpoint_records_the_contract(trained_run):
    state = load_checkpoint(trained_run / "best.pt").state
    assert state["format"] == "occnet.checkpoint" and state["version"] == 1
    assert state["architecture"] == {"hidden_size": 64, "hidden_layers": 4, "encoding": "none"}
    assert state["bounds_min"] == [-0.55] * 3 and state["bounds_max"] == [0.55] * 3
    assert state["config"]["seed"] == 0 and state["data_source"] == "demo"
    assert {"torch", "numpy", "occnet", "python"} <= set(state["versions"])


def test_network_takes_world_coordinates():
    """Same function of the shape whatever the box: normalisation lives inside the module."""
    torch.manual_seed(0)
    unit = OccNet(Architecture(), (-1, -1, -1), (1, 1, 1))
    shifted = OccNet(Architecture(), (99, -1, 9), (101, 1, 11))
    shifted.net.load_state_dict(unit.net.state_dict())
    p = torch.rand(100, 3) * 2 - 1
    torch.testing.assert_close(unit(p), shifted(p + torch.tensor([100.0, 0.0, 10.0])))


def test_seed_network_shape():
    net = OccNet(Architecture(), (0, 0, 0), (1, 1, 1)).net
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3, 64)] + [(64, 64)] * 4 + [(64, 1)]


def test_same_seed_same_weights(small_data, tmp_path):
    train(small_data, quick(), tmp_path / "a")
    train(small_data, quick(), tmp_path / "b")
    train(small_data, quick(seed=1), tmp_path / "c")
    a, b, c = (load_checkpoint(tmp_path / d / "best.pt").model_state for d in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_split_is_disjoint_and_sized():
    train_idx, val_idx = split(1000, 0.2, 0)
    assert len(val_idx) == 200 and len(train_idx) == 800
    assert len(set(train_idx.tolist()) | set(val_idx.tolist())) == 1000


def test_the_result_names_the_points_validation_scored(small_data, tmp_path):
    """best.pt's validation IoU is its IoU on exactly ``result.held_out``: what occ-batch scores a model on,
    so that it never scores one on its own training points."""
    result = train(small_data, quick(), tmp_path)
    held_out = result.held_out
    assert held_out.dtype == np.int64 and len(np.unique(held_out)) == len(held_out) == 1200
    network = load_checkpoint(result.files.best).network()
    with torch.no_grad():
        logits = network(torch.from_numpy(small_data.points[held_out]).float()).numpy()
    predicted, actual = logits > 0, small_data.labels[held_out] > 0.5
    iou = np.count_nonzero(predicted & actual) / np.count_nonzero(predicted | actual)
    assert iou == pytest.approx(result.best.val_iou, abs=1e-3)


def test_refuses_to_overwrite_a_previous_run(small_data, tmp_path):
    train(small_data, quick(epochs=1), tmp_path)
    before = (tmp_path / "best.pt").read_bytes()
    with pytest.raises(InputError, match="--resume .* --force"):
        train(small_data, quick(epochs=1), tmp_path)
    assert (tmp_path / "best.pt").read_bytes() == before
    train(small_data, quick(epochs=1, seed=5), tmp_path, force=True)
    assert (tmp_path / "best.pt").read_bytes() != before


def test_resume_ends_where_an_uninterrupted_run_ends(small_data, tmp_path):
    full = train(small_data, quick(epochs=4), tmp_path / "full")

    class Stop(Exception):
        pass

    def stop_after_two(row):
        if row.epoch == 2:
            raise Stop

    with pytest.raises(Stop):                       # as if killed right after epoch 2
        train(small_data, quick(epochs=4), tmp_path / "part", on_epoch=stop_after_two)
    resumed = train(small_data, quick(epochs=4), tmp_path / "part", resume=True)
    assert [m.epoch for m in resumed.history] == [1, 2, 3, 4]
    assert [m.val_loss for m in resumed.history] == [m.val_loss for m in full.history]
    a = load_checkpoint(tmp_path / "full" / "best.pt").model_state
    b = load_checkpoint(tmp_path / "part" / "best.pt").model_state
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_without_best_pt_writes_a_new_one(small_data, tmp_path):
    class Stop(Exception):
        pass

    def stop(row):
        raise Stop

    with pytest.raises(Stop):
        train(small_data, quick(epochs=3), tmp_path, on_epoch=stop)
    (tmp_path / "best.pt").unlink()
    result = train(small_data, quick(epochs=3), tmp_path, resume=True)
    assert load_checkpoint(tmp_path / "best.pt").state["epoch"] == min(
        (m for m in result.history if m.epoch > 1), key=lambda m: m.val_loss).epoch


def test_resume_needs_the_same_options_but_may_extend_the_epochs(small_data, tmp_path):
    train(small_data, quick(epochs=1), tmp_path)
    with pytest.raises(InputError, match="other options"):
        train(small_data, quick(epochs=2, lr=1e-3), tmp_path, resume=True)
    with pytest.raises(InputError, match="finished 1 epochs already"):
        train(small_data, quick(epochs=1), tmp_path, resume=True)
    extended = train(small_data, quick(epochs=2), tmp_path, resume=True)
    assert [m.epoch for m in extended.history] == [1, 2]
    with pytest.raises(InputError, match="nothing to resume"):
        train(small_data, quick(epochs=1), tmp_path / "empty", resume=True)
    assert not (tmp_path / "empty").exists()           # a folder a failed run created is not left behind


def test_fourier_encoding_trains_and_is_saved(small_data, tmp_path):
    config = quick(encoding=Fourier(features=8, scale=2.0))
    train(small_data, config, tmp_path)
    ckpt = load_checkpoint(tmp_path / "best.pt")
    assert ckpt.architecture.encoding == "fourier"
    assert ckpt.model_state["fourier_basis"].shape == (3, 8)


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"batch_size": 0}, {"lr": -1.0}, {"lr": float("nan")},
                                    {"val_fraction": 1.0}, {"val_fraction": 0.0}, {"device": "tpu"},
                                    {"hidden_size": 0}, {"encoding": "fourier"}, {"time_budget": 0.0},
                                    {"time_budget": float("nan")}, {"patience": 0}, {"threads": 0}])
def test_bad_options(kwargs):
    with pytest.raises(InputError):
        TrainConfig(**kwargs)


def test_out_dir_that_is_a_file(small_data, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        train(small_data, quick(), tmp_path / "f")


def test_time_budget_plans_the_epochs_before_training_and_the_plan_repeats_bit_for_bit(small_data, tmp_path):
    tight = train(small_data, quick(epochs=20, time_budget=1e-3), tmp_path / "tight")   # spent before it starts
    assert [m.epoch for m in tight.history] == [1]
    assert "1 epochs planned by the time budget (0.001 s): --epochs 1 repeats this run" in tight.stopped
    state = load_checkpoint(tmp_path / "tight" / "last.pt").state
    assert state["config"]["epochs"] == 1 and state["config"]["time_budget"] == float("inf")
    assert state["time_budget"] == 1e-3
    repeated = train(small_data, quick(epochs=1), tmp_path / "repeated")
    assert [m.val_loss for m in repeated.history] == [m.val_loss for m in tight.history]
    a, b = (load_checkpoint(tmp_path / d / "best.pt").model_state for d in ("tight", "repeated"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    extended = train(small_data, quick(epochs=2), tmp_path / "tight", resume=True)   # a plain run now
    assert [m.epoch for m in extended.history] == [1, 2]
    roomy = train(small_data, quick(epochs=2, time_budget=1e9), tmp_path / "roomy")   # never above --epochs
    assert [m.epoch for m in roomy.history] == [1, 2] and "2 epochs planned" in roomy.stopped


def test_without_a_time_budget_every_epoch_runs(small_data, tmp_path):
    result = train(small_data, quick(epochs=3), tmp_path)
    assert [m.epoch for m in result.history] == [1, 2, 3] and result.stopped == "3 epochs"
    assert "time_budget" not in load_checkpoint(tmp_path / "last.pt").state


def test_a_run_that_learned_nothing_fails_and_keeps_its_files(small_data, tmp_path):
    with pytest.raises(UntrainedError, match=r"did not learn the shape: best.pt \(epoch \d of 2\) has validation "
                       r"IoU 0.\d+ \(at least 0.5 needed\); train longer \(--epochs\)") as failed:
        train(small_data, quick(epochs=2, lr=1e-30), tmp_path)                          # weights never move
    assert len(failed.value.result.history) == 2
    assert {p.name for p in tmp_path.iterdir()} == {"best.pt", "last.pt", "metrics.csv", "loss.png"}


@pytest.mark.parametrize("iou,accuracy,inside,learned", [(0.9, 0.95, 0.3, True), (0.49, 0.99, 0.3, False),
                                                        (0.85, 0.85, 0.85, False), (0.85, 0.85, 0.15, False),
                                                        (0.86, 0.86, 0.85, True)])
def test_learning_means_an_iou_floor_and_beating_the_all_inside_and_all_outside_guesses(iou, accuracy, inside,
                                                                                         learned, tmp_path):
    row = EpochMetrics(1, 0.1, 0.1, iou, accuracy, 1e-3, 1.0)
    result = TrainResult([row], row, RunFiles.in_folder(tmp_path), 1.0, "1 epochs", np.arange(0))
    if learned:
        _check_learned(result, inside)
    else:
        with pytest.raises(UntrainedError, match="IoU" if iou < 0.5 else "no better than calling every point"):
            _check_learned(result, inside)


def test_training_threads_are_an_option_of_the_run_and_the_callers_count_comes_back(small_data, tmp_path):
    before = torch.get_num_threads()
    seen = []
    train(small_data, quick(epochs=1), tmp_path / "one", on_epoch=lambda row: seen.append(torch.get_num_threads()))
    assert seen == [1] and torch.get_num_threads() == before
    with pytest.raises(InputError, match="threads 4096 is more than the .* cores"):
        train(small_data, quick(epochs=1, threads=4096), tmp_path / "many")
    assert torch.get_num_threads() == before


def test_training_leaves_the_global_random_generator_alone(small_data, tmp_path):
    state = torch.get_rng_state()
    train(small_data, quick(epochs=1), tmp_path)
    assert torch.equal(torch.get_rng_state(), state)


def test_patience_stops_a_run_that_no_longer_improves(small_data, tmp_path):
    with pytest.raises(UntrainedError) as failed:                        # weights never move
        train(small_data, quick(epochs=10, lr=1e-30, patience=2), tmp_path / "frozen")
    frozen = failed.value.result
    assert [m.epoch for m in frozen.history] == [1, 2, 3, 4, 5]          # not before half of the schedule
    assert frozen.stopped == "no better validation loss for 2 epochs"
    learning = train(small_data, quick(epochs=3, patience=2), tmp_path / "learning")
    assert learning.stopped == "3 epochs" and len(learning.history) == 3


def test_a_new_encoding_is_one_record_and_its_registration(small_data, tmp_path):
    """Registered in the test, used through the public names only: it trains, its checkpoint records it and
    rebuilds it, and it exports verified; no other file knows it."""
    from dataclasses import dataclass

    from occnet.export.onnx_export import export_checkpoint
    from occnet.runtime.options import option
    from occnet.train.encodings import ENCODINGS, Encoding, register
    from occnet.train.trainer import run_options

    @dataclass(frozen=True)
    class Radial(Encoding):
        name = "radial"
        weight: float = option(1.0, "radial: weight of the distance feature.")

        def width(self) -> int:
            return 4

        def encode(self, x, buffers):
            return torch.cat([x, self.weight * x.norm(dim=1, keepdim=True)], dim=1)

    register(Radial)
    try:
        config = quick(encoding=Radial(weight=1.5))
        train(small_data, config, tmp_path)
        ckpt = load_checkpoint(tmp_path / "best.pt")
        assert ckpt.state["architecture"] == {"hidden_size": 64, "hidden_layers": 4, "encoding": "radial",
                                              "radial_weight": 1.5}
        assert ckpt.network().encoding == Radial(weight=1.5)
        assert run_options(tmp_path)["config"] == config
        report = export_checkpoint(tmp_path / "best.pt", tmp_path / "m.onnx", verify_points=5000)
        assert report.agreement.ok
    finally:
        del ENCODINGS["radial"]
    with pytest.raises(ValueError, match="not a new identifier"):
        register(type("Again", (Encoding,), {"name": "fourier"}))


def test_format_1_records_still_load(trained_run, tmp_path):
    """Format 1 wrote Fourier's options as fields of every architecture and training record, zero for
    networks without the encoding; such checkpoints load, rebuild and resume as they did."""
    from occnet.train.trainer import run_options

    state = load_checkpoint(trained_run / "last.pt").state
    format1 = {"fourier_features": 0, "fourier_scale": 0.0}
    state["architecture"] = {**state["architecture"], **format1}
    state["config"] = {**state["config"], **format1}
    torch.save(state, tmp_path / "last.pt")
    assert load_checkpoint(tmp_path / "last.pt").architecture == Architecture()
    assert run_options(tmp_path)["config"] == run_options(trained_run)["config"]
    state["architecture"]["fourier_features"] = 8                 # a Fourier option without the encoding
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match=r"unknown architecture fields \['fourier_features'\]"):
        load_checkpoint(tmp_path / "last.pt")
    fourier = {"hidden_size": 64, "hidden_layers": 4, "encoding": "fourier", "fourier_features": 8,
               "fourier_scale": 2.0}
    assert Architecture.from_dict(fourier) == Architecture(encoding="fourier",
                                                           encoding_options={"features": 8, "scale": 2.0})
    assert Architecture.from_dict(fourier).to_dict() == fourier
    state["architecture"] = {"hidden_size": 64, "hidden_layers": 4, "encoding": "wavelet", "wavelet_levels": 3}
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="unknown encoding 'wavelet'; expected one of none, fourier"):
        load_checkpoint(tmp_path / "last.pt")
