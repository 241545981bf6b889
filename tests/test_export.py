import contextlib
import copy
import hashlib
import json
import logging
import re

import numpy as np
import onnx
import pytest
import torch
from conftest import ball_points, run_cli

from occnet.export.exporter import ERROR_FACTOR, ERROR_FLOOR, ExportError
from occnet.export.onnx_export import export_checkpoint, to_onnx, verify_model
from occnet.runtime.contract import UNCONDITIONAL_FORMAT, Architecture, MetaKey
from occnet.runtime.field import batched
from occnet.runtime.session import OccupancyModel
from occnet.train.checkpoint import load_checkpoint
from occnet.train.encodings import Fourier
from occnet.train.model import OccNet


def test_export_carries_its_metadata(trained_run, trained_onnx):
    props = {p.key: p.value for p in onnx.load(trained_onnx).metadata_props}
    assert props[MetaKey.FORMAT_VERSION] == str(UNCONDITIONAL_FORMAT)
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
    with torch.no_grad():
        exact = copy.deepcopy(model).double()(torch.from_numpy(points).double()).numpy()
    assert np.abs(got - exact).max() <= ERROR_FACTOR * np.abs(expected - exact).max()
    assert session.logits(points[:1]).shape == (1,)


def test_report_and_no_verify(trained_run, tmp_path):
    report = export_checkpoint(trained_run / "best.pt", tmp_path / "m.onnx", verify_points=1000)
    a = report.agreement
    assert a.ok and a.points == 1000 + 32**3 + 1 and a.sign_flips == 0
    assert a.torch_error > 0 and a.onnx_error <= ERROR_FACTOR * a.torch_error + ERROR_FLOOR
    assert report.opset >= 18 and report.size_bytes == (tmp_path / "m.onnx").stat().st_size
    fast = export_checkpoint(trained_run / "best.pt", tmp_path / "n.onnx", verify=False)
    assert fast.agreement is None and (tmp_path / "n.onnx").exists()


def test_verification_refuses_a_model_that_computes_something_else(trained_run, tmp_path):
    """A model whose ONNX graph is not the network (weights perturbed by 1e-3) fails verification."""
    ckpt = load_checkpoint(trained_run / "best.pt")
    model = ckpt.network()
    export_checkpoint(trained_run / "best.pt", tmp_path / "m.onnx", verify_points=1000)
    with torch.no_grad():
        model.net[0].bias.add_(1e-3)
    with pytest.raises(ExportError, match="verification failed"):
        verify_model(model, tmp_path / "m.onnx", 1000, 0)


def test_what_pytorch_logs_while_exporting_stays_off_stderr(monkeypatch):
    """PyTorch's loggers write to stderr through handlers of their own; one that logs a traceback before
    re-raising (the fake-tensor kernel a Ctrl-C interrupted did, 400 lines) must leave only the one-line error:
    no record of the exporter's libraries reaches a handler while it runs, whatever level their loggers were
    given (the exporter sets some itself), while the caller's own loggers still do; after, all is as it was."""

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.names = []

        def emit(self, record):
            self.names.append(record.name)

    names = ("torch._subclasses.fake_tensor", "torch.onnx", "onnxscript.ir", "caller.app")
    on_root, on_onnx, onnx_logger = Collect(), Collect(), logging.getLogger("torch.onnx")  # propagates nowhere
    levels = {name: logging.getLogger(name).level for name in names}

    def failing_export(*args, **kwargs):
        for name in names:
            logging.getLogger(name).setLevel(logging.DEBUG)             # a level of its own, as exports leave it
            logging.getLogger(name).critical("a traceback of 400 lines")
        raise RuntimeError("meta kernel failed")

    monkeypatch.setattr(torch.onnx, "export", failing_export)
    logging.root.addHandler(on_root)
    onnx_logger.addHandler(on_onnx)
    try:
        with pytest.raises(ExportError, match="meta kernel failed"):
            to_onnx(OccNet(Architecture(), (-1, -1, -1), (1, 1, 1)), None)
        assert on_root.names == ["caller.app"] and on_onnx.names == []
        onnx_logger.critical("after the export")
        assert on_onnx.names == ["torch.onnx"] and on_root.filters == [] and on_onnx.filters == []
    finally:
        logging.root.removeHandler(on_root)
        onnx_logger.removeHandler(on_onnx)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize("options", [
    {"encoding": Fourier(features=32, scale=1.0)}, {"encoding": Fourier(features=32, scale=2.0)},
    {"encoding": Fourier(features=64, scale=8.0)},
    {"hidden_size": 16, "hidden_layers": 1}, {"hidden_size": 256, "hidden_layers": 8},
])
def test_every_trainable_option_exports(tmp_path, options):
    from occnet.runtime.points import make_point_set
    from occnet.train.trainer import TrainConfig, UntrainedError, train

    data = make_point_set(*ball_points(3000), "ball")
    with contextlib.suppress(UntrainedError):   # what it learned in 3 epochs does not matter here: the export does
        train(data, TrainConfig(epochs=3, batch_size=32, lr=1e-2, device="cpu", **options), tmp_path)
    report = export_checkpoint(tmp_path / "best.pt", tmp_path / "f.onnx", verify_points=20_000)
    assert report.agreement.ok and report.agreement.sign_flips == 0


def test_a_checkpoint_that_learned_nothing_exports_with_a_warning(trained_run, tmp_path):
    from occnet.runtime.points import make_point_set
    from occnet.train.trainer import TrainConfig, UntrainedError, train

    with pytest.raises(UntrainedError):                                   # weights never move
        train(make_point_set(*ball_points(2000), "ball"), TrainConfig(epochs=1, lr=1e-30, device="cpu"), tmp_path)
    report = export_checkpoint(tmp_path / "best.pt", tmp_path / "m.onnx", verify_points=1000)
    assert re.match(r"the checkpoint's validation IoU is 0\.[0-4]\d\d \(below 0\.5\): its model has not learned",
                    report.warning), report.warning
    assert (tmp_path / "m.onnx").is_file()
    assert export_checkpoint(trained_run / "best.pt", tmp_path / "n.onnx", verify=False).warning is None
    result = run_cli("occ-export", str(tmp_path / "best.pt"), str(tmp_path / "cli.onnx"))
    assert result.returncode == 0 and "warning: the checkpoint's validation IoU is 0." in result.stderr
