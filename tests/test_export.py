import hashlib
import json
import os

import numpy as np
import onnx
import pytest
import torch

from occnet.export.onnx_export import export_checkpoint
from occnet.runtime.contract import FORMAT_VERSION, MetaKey
from occnet.runtime.field import batched
from occnet.runtime.session import OccupancyModel
from occnet.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from occnet.train.model import OccNet


def test_export_carries_its_metadata(trained_run, trained_onnx):
    props = {p.key: p.value for p in onnx.load(trained_onnx).metadata_props}
    assert props[MetaKey.FORMAT_VERSION] == str(FORMAT_VERSION)
    assert json.loads(props[MetaKey.BOUNDS_MIN]) == [-0.55] * 3
    assert json.loads(props[MetaKey.ARCHITECTURE])["hidden_size"] == 64
    best = load_checkpoint(trained_run / "best.pt")
    assert json.loads(props[MetaKey.METRICS])["val_iou"] == pytest.approx(best.metrics["val_iou"])
    assert props[MetaKey.CHECKPOINT_SHA256] == hashlib.sha256((trained_run / "best.pt").read_bytes()).hexdigest()
    assert {"torch", "onnx", "onnxruntime"} <= set(json.loads(props[MetaKey.PRODUCER]))


def test_onnxruntime_matches_pytorch_on_many_points_and_n_equals_one(trained_run, trained_onnx):
    ckpt = load_checkpoint(trained_run / "best.pt")
    model = OccNet(ckpt.architecture, ckpt.bounds_min, ckpt.bounds_max)
    model.load_state_dict(ckpt.model_state)
    model.eval()
    session = OccupancyModel(trained_onnx, device="cpu")
    points = np.random.default_rng(7).uniform(-0.6, 0.6, (300_000, 3)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(points)).numpy()
    got = batched(session.logits, points, 100_000)
    assert np.max(np.abs(got - expected) / np.maximum(1, np.abs(expected))) <= 1e-4
    assert session.logits(points[:1]).shape == (1,)


def test_report_and_no_verify(trained_run, tmp_path):
    report = export_checkpoint(trained_run / "best.pt", tmp_path / "m.onnx", verify_points=1000)
    assert report.max_scaled_diff <= 1e-4 and report.points_checked == 1000 + 32**3 + 1
    assert report.opset >= 18 and report.size_bytes == (tmp_path / "m.onnx").stat().st_size
    fast = export_checkpoint(trained_run / "best.pt", tmp_path / "n.onnx", verify=False)
    assert fast.max_abs_diff is None and (tmp_path / "n.onnx").exists()


def test_fourier_model_exports(tmp_path):
    from occnet.train.sampling import SamplingConfig, load_points
    from occnet.train.trainer import TrainConfig, train

    data = load_points(None, SamplingConfig(num_points=2000), 0)
    train(data, TrainConfig(epochs=1, encoding="fourier", fourier_features=8, fourier_scale=2.0,
                            device="cpu"), tmp_path)
    report = export_checkpoint(tmp_path / "best.pt", tmp_path / "f.onnx", verify_points=5000)
    assert report.max_scaled_diff <= 1e-4


class Boom:
    def __reduce__(self):
        return (open, ("/tmp/occnet-pwned", "w"))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = "/tmp/occnet-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    torch.save({"format": "occnet.checkpoint", "payload": Boom()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        export_checkpoint(tmp_path / "evil.pt", tmp_path / "m.onnx")
    assert not os.path.exists(marker)
    assert not (tmp_path / "m.onnx").exists()


def tamper(trained_run, tmp_path, **changes):
    state = dict(load_checkpoint(trained_run / "best.pt").state)
    state.update(changes)
    state.pop("format"), state.pop("version")
    path = tmp_path / "t.pt"
    save_checkpoint(path, state)
    return path


@pytest.mark.parametrize("case,match", [
    ("missing", "not found"), ("random", "not a PyTorch checkpoint"), ("empty", "not a PyTorch checkpoint"),
    ("plain", "not an occnet checkpoint"), ("newer", "newer"), ("arch", "do not fit"), ("bounds", "malformed"),
])
def test_bad_checkpoints_leave_no_file(trained_run, tmp_path, case, match):
    path = tmp_path / "c.pt"
    if case == "random":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "plain":
        torch.save({"weights": torch.zeros(3)}, path)
    elif case == "newer":
        state = load_checkpoint(trained_run / "best.pt").state
        torch.save({**state, "version": 99}, path)
    elif case == "arch":
        path = tamper(trained_run, tmp_path, architecture={"hidden_size": 32, "hidden_layers": 4,
                                                           "encoding": "none", "fourier_features": 0,
                                                           "fourier_scale": 0.0})
    elif case == "bounds":
        path = tamper(trained_run, tmp_path, bounds_min=[0.0, 0.0])
    with pytest.raises(CheckpointError, match=match):
        export_checkpoint(path, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_output_in_a_missing_folder(trained_run, tmp_path):
    from occnet.runtime.errors import OutputError
    with pytest.raises(OutputError, match="does not exist"):
        export_checkpoint(trained_run / "best.pt", tmp_path / "nope" / "m.onnx")
