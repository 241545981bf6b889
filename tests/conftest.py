"""Shared fixtures: analytic fields, a small trained run, the repository's demo model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO_ONNX = ROOT / "models" / "demo.onnx"
BIN = Path(sys.executable).parent


def sphere_logits(centre, radius, sharpness=50.0):
    """Logit field of a sphere: positive inside. ``(N, 3) -> (N,) float32``."""
    centre = np.asarray(centre, np.float64)

    def fn(points: np.ndarray) -> np.ndarray:
        return ((radius - np.linalg.norm(points - centre, axis=1)) * sharpness).astype(np.float32)

    return fn


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run one of the installed commands (``occ-train`` ...) and capture its output."""
    exe = BIN / args[0]
    return subprocess.run([str(exe), *args[1:]], capture_output=True, text=True, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A small demo run (few points, few epochs): its folder holds best.pt and last.pt."""
    from occnet.train.sampling import SamplingConfig, load_points
    from occnet.train.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("run")
    data = load_points(None, SamplingConfig(num_points=20_000), seed=0)
    train(data, TrainConfig(epochs=4, batch_size=512, device="cpu"), out)
    return out


@pytest.fixture(scope="session")
def trained_onnx(trained_run: Path, tmp_path_factory) -> Path:
    """``trained_run``'s best.pt exported to ONNX."""
    from occnet.export.onnx_export import export_checkpoint

    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_checkpoint(trained_run / "best.pt", out, verify_points=10_000)
    return out
