"""Checkpoint -> self-describing ONNX model, verified against PyTorch before it is allowed to exist.

Exporter: ``torch.onnx.export(..., dynamo=True)``, the ``torch.export``-based path. The TorchScript-based
exporter (``dynamo=False``) has been deprecated since PyTorch 2.9 and is slated for removal; the dynamo
path is the one PyTorch supports and develops, and handles the dynamic batch dimension (N >= 1) cleanly.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import platform
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from occnet.runtime.contract import INPUT_NAME, OUTPUT_NAME, ModelInfo, installed_version
from occnet.runtime.errors import OccNetError, OutputError, first_line
from occnet.runtime.field import batched
from occnet.runtime.files import atomic_path, check_output
from occnet.runtime.grid import Grid
from occnet.runtime.session import OccupancyModel
from occnet.train.checkpoint import CheckpointError, load_checkpoint
from occnet.train.model import OccNet

TOLERANCE = 1e-4
"""Verification bound: |onnxruntime - PyTorch| <= TOLERANCE * max(1, |logit|). Absolute where the surface is
decided (|logit| <= 1); relative far from it, where logits reach the hundreds and float32 itself is only
good to ~1e-4 (PyTorch float32 against float64 differed by 1.9e-4 at a logit of -724 here)."""


class ExportError(OccNetError):
    """Export or verification failed; no model file was written."""


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_checkpoint` wrote and how well it matched PyTorch (None: not verified)."""

    path: Path
    size_bytes: int
    opset: int
    max_abs_diff: float | None
    max_scaled_diff: float | None
    points_checked: int


def check_export_output(checkpoint: Path, output: Path) -> bool:
    """Refuse an output that is not ``.onnx``, is the checkpoint itself or another checkpoint, or cannot be
    written; True when an existing model would be replaced."""
    output = Path(output)
    if output.suffix.lower() != ".onnx":
        raise OutputError(f"{output}: the output must be an .onnx file")
    return check_output(output, [Path(checkpoint)])


def export_checkpoint(checkpoint: Path, output: Path, opset: int | None = None, verify: bool = True,
                      verify_points: int = 200_000, seed: int = 0) -> ExportReport:
    """Export ``checkpoint`` to ``output`` (atomically) with occnet metadata; verify it unless told not to."""
    check_export_output(checkpoint, output)
    ckpt = load_checkpoint(checkpoint)
    try:
        model = ckpt.network()
    except CheckpointError as exc:
        raise CheckpointError(f"{checkpoint}: {exc}") from None

    proto = to_onnx(model, opset)
    info = ModelInfo(ckpt.bounds_min, ckpt.bounds_max, ckpt.architecture, _plain(ckpt.metrics),
                     _sha256(Path(checkpoint)), producer())
    onnx.helper.set_model_props(proto, info.to_metadata())
    onnx.checker.check_model(proto, full_check=True)
    used_opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    data = proto.SerializeToString()
    with atomic_path(output) as tmp:
        tmp.write_bytes(data)
        diff, scaled, checked = verify_model(model, tmp, verify_points, seed) if verify else (None, None, 0)
    return ExportReport(output, len(data), used_opset, diff, scaled, checked)


def to_onnx(model: OccNet, opset: int | None) -> onnx.ModelProto:
    """Export ``model`` with input ``points [N, 3]`` (dynamic N) and output ``logits [N]``."""
    example = torch.zeros(8, 3)
    with warnings.catch_warnings(), _quiet(logging.getLogger("torch.onnx")):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset,
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                        dynamic_shapes={"points": {0: torch.export.Dim("N", min=1)}},
                                        verbose=False, report=False)
        except Exception as exc:  # the exporter raises a wide range of internal errors
            raise ExportError(f"ONNX export failed: {first_line(exc, 300)}") from None
    return program.model_proto


def verify_model(model: OccNet, path: Path, n_points: int, seed: int) -> tuple[float, float, int]:
    """Compare onnxruntime (through the runtime's own loader) with PyTorch on random points in the box, a
    coarse grid over it and a single point: returns max |diff|, max |diff| / max(1, |logit|) and the point
    count; raises :class:`ExportError` when the latter exceeds ``TOLERANCE``."""
    session = OccupancyModel(path, device="cpu")
    lo, hi = np.array(session.info.bounds_min), np.array(session.info.bounds_max)
    rng = np.random.default_rng(seed)
    grid = Grid.from_bounds(lo, hi, 32)
    samples = [rng.uniform(lo, hi, size=(n_points, 3)).astype(np.float32),
               grid.points(np.arange(grid.num_points)), rng.uniform(lo, hi, size=(1, 3)).astype(np.float32)]
    worst = worst_scaled = 0.0
    with torch.no_grad():
        for points in samples:
            expected = model(torch.from_numpy(points)).numpy()
            got = batched(session.logits, points, 65536)
            if got.shape != expected.shape or not np.all(np.isfinite(got)):
                raise ExportError(f"onnxruntime returned shape {got.shape} or non-finite logits")
            worst = max(worst, float(np.abs(got - expected).max()))
            worst_scaled = max(worst_scaled, float(scaled_difference(got, expected).max()))
    if worst_scaled > TOLERANCE:
        raise ExportError(f"verification failed: onnxruntime differs from PyTorch by {worst_scaled:.3g} "
                          f"x max(1, |logit|) (> {TOLERANCE:g})")
    return worst, worst_scaled, sum(len(s) for s in samples)


def scaled_difference(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """What verification bounds by ``TOLERANCE``: ``|got - expected| / max(1, |expected|)``, per logit."""
    return np.abs(got - expected) / np.maximum(1.0, np.abs(expected))


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """The exporter's progress chatter off for the duration, the caller's logging level restored after."""
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def producer() -> dict:
    """Versions of what produced the model."""
    return {"occnet": installed_version("occnet"), "torch": str(torch.__version__), "onnx": onnx.__version__,
            "onnxruntime": installed_version("onnxruntime"), "python": platform.python_version()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plain(metrics: dict) -> dict:
    return {k: (float(v) if isinstance(v, float) else v) for k, v in metrics.items()
            if isinstance(v, (int, float, str))}
