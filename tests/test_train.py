import csv
import time

import numpy as np
import pytest
import torch

from occnet.runtime.contract import Architecture
from occnet.runtime.errors import InputError
from occnet.train.checkpoint import load_checkpoint
from occnet.train.model import OccNet
from occnet.train.sampling import SamplingConfig, load_points
from occnet.train.trainer import TrainConfig, split, train


@pytest.fixture(scope="module")
def small_data():
    return load_points(None, SamplingConfig(num_points=6000), seed=0)


def quick(**kwargs) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "batch_size": 512, "device": "cpu", **kwargs})


def test_run_writes_every_file_and_best_is_the_lowest_val_loss(trained_run):
    with open(trained_run / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["epoch", "train_loss", "val_loss", "val_iou", "val_accuracy", "lr", "seconds"]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    best = load_checkpoint(trained_run / "best.pt")
    losses = [float(r["val_loss"]) for r in rows]
    assert best.state["epoch"] == 1 + int(np.argmin(losses))
    assert best.metrics["val_loss"] == pytest.approx(min(losses), abs=1e-6)
    assert load_checkpoint(trained_run / "last.pt").state["epoch"] == 4
    assert (trained_run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


def test_checkpoint_records_the_contract(trained_run):
    state = load_checkpoint(trained_run / "best.pt").state
    assert state["format"] == "occnet.checkpoint" and state["version"] == 1
    assert state["architecture"] == {"hidden_size": 64, "hidden_layers": 4, "encoding": "none",
                                     "fourier_features": 0, "fourier_scale": 0.0}
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
    config = quick(encoding="fourier", fourier_features=8, fourier_scale=2.0)
    train(small_data, config, tmp_path)
    ckpt = load_checkpoint(tmp_path / "best.pt")
    assert ckpt.architecture.encoding == "fourier"
    assert ckpt.model_state["fourier_basis"].shape == (3, 8)


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"batch_size": 0}, {"lr": -1.0}, {"lr": float("nan")},
                                    {"val_fraction": 1.0}, {"val_fraction": 0.0}, {"device": "tpu"},
                                    {"hidden_size": 0}, {"encoding": "fourier"}, {"time_budget": 0.0},
                                    {"time_budget": float("nan")}, {"patience": 0}])
def test_bad_options(kwargs):
    with pytest.raises(InputError):
        TrainConfig(**kwargs)


def test_out_dir_that_is_a_file(small_data, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        train(small_data, quick(), tmp_path / "f")


def test_time_budget_plans_the_epochs_that_fit_and_fits_the_schedule_to_them(small_data, tmp_path):
    result = train(small_data, quick(epochs=20, time_budget=1e-3), tmp_path / "tight")
    assert [m.epoch for m in result.history] == [1] and "1 epochs fit" in result.stopped
    steps = -(-int(len(small_data.points) * 0.8) // quick().batch_size)
    saved = load_checkpoint(tmp_path / "tight" / "last.pt").state["scheduler"]["lr_lambdas"][0]
    assert saved["total_steps"] == steps                  # the schedule fitted to 1 epoch, saved for --resume
    with pytest.raises(InputError, match="finished the 1 epochs its time budget fitted"):
        train(small_data, quick(epochs=20, time_budget=1e-3), tmp_path / "tight", resume=True)
    extended = train(small_data, quick(epochs=30, time_budget=1e-3), tmp_path / "tight", resume=True)
    assert [m.epoch for m in extended.history] == [1, 2]


def test_no_time_budget_runs_every_epoch(small_data, tmp_path):
    result = train(small_data, quick(epochs=3, time_budget=float("inf")), tmp_path)
    assert [m.epoch for m in result.history] == [1, 2, 3] and result.stopped == "3 epochs"


def test_time_budget_spent_stops_the_run(small_data, tmp_path):
    def slow_second_epoch(row):
        if row.epoch == 2:
            time.sleep(4.0)

    result = train(small_data, quick(epochs=100, time_budget=4.0), tmp_path, on_epoch=slow_second_epoch)
    assert [m.epoch for m in result.history] == [1, 2] and result.stopped == "time budget (4 s) spent"


def test_patience_stops_a_run_that_no_longer_improves(small_data, tmp_path):
    frozen = train(small_data, quick(epochs=10, lr=1e-30, patience=2), tmp_path / "frozen")  # weights never move
    assert [m.epoch for m in frozen.history] == [1, 2, 3, 4, 5]          # not before half of the schedule
    assert frozen.stopped == "no better validation loss for 2 epochs"
    learning = train(small_data, quick(epochs=3, patience=2), tmp_path / "learning")
    assert learning.stopped == "3 epochs" and len(learning.history) == 3
