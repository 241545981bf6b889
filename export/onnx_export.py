"""Checkpoint -> self-describing ONNX model, verified against PyTorch before it is allowed to exist.

Exporter: ``torch.onnx.export(..., dynamo=True)``, the ``torch.export``-based path. The TorchScript-based
exporter (``dynamo=False``) has been deprecated since PyTorch 2.9 and is slated for removal; the dynamo
path is the one PyTorch supports and develops, and handles the dynamic batch dimension (N >= 1) cleanly.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
import platform
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from occnet.runtime.contract import INPUT_NAME, LEARNED_IOU, OUTPUT_NAME, ModelInfo, installed_version
from occnet.runtime.errors import OccNetError, OutputError, first_line
from occnet.runtime.field import batched
from occnet.runtime.files import atomic_path, check_output
from occnet.runtime.grid import Grid
from occnet.runtime.session import OccupancyModel
from occnet.train.checkpoint import CheckpointError, load_checkpoint
from occnet.train.model import OccNet

ERROR_FACTOR = 4.0
"""Verification bound: onnxruntime's largest error against the same network computed in float64 may be at
most ERROR_FACTOR times PyTorch float32's own largest error against it (plus ``ERROR_FLOOR``). Float32
arithmetic is the yardstick: far from the surface logits reach the hundreds, where float32 holds ~1e-4, and
random Fourier features amplify rounding; a fixed tolerance rejects correct exports of such networks."""
ERROR_FLOOR = 1e-6
"""Absolute slack for networks so small that float32 is nearly exact on them."""


class ExportError(OccNetError):
    """Export or verification failed; no model file was written."""


@dataclass(frozen=True)
class Agreement:
    """onnxruntime and PyTorch float32 against the network computed in float64, on the same points.

    ``onnx_error``/``torch_error``: largest |logit - float64 logit|; ``max_abs_diff``: largest |onnxruntime -
    PyTorch|; ``sign_flips``: points where onnxruntime's inside/outside differs from float64's although
    |float64 logit| exceeds both largest errors (where neither float32 computation can be unsure)."""

    points: int
    onnx_error: float
    torch_error: float
    max_abs_diff: float
    sign_flips: int

    @property
    def ok(self) -> bool:
        return self.onnx_error <= ERROR_FACTOR * self.torch_error + ERROR_FLOOR and self.sign_flips == 0

    def merge(self, other: Agreement) -> Agreement:
        return Agreement(self.points + other.points, max(self.onnx_error, other.onnx_error),
                         max(self.torch_error, other.torch_error), max(self.max_abs_diff, other.max_abs_diff),
                         self.sign_flips + other.sign_flips)


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_checkpoint` wrote and how well it matched (None: not verified); ``warning`` says
    why the model may be useless although it was exported faithfully (None: no doubt)."""

    path: Path
    size_bytes: int
    opset: int
    agreement: Agreement | None
    replaced: bool
    warning: str | None = None


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
    replaced = check_export_output(checkpoint, output)
    ckpt = load_checkpoint(checkpoint)
    try:
        model = ckpt.network()
    except CheckpointError as exc:
        raise CheckpointError(f"{checkpoint}: {exc}") from None

    proto = to_onnx(model, opset)
    info = ModelInfo(ckpt.bounds_min, ckpt.bounds_max, ckpt.architecture, _plain(ckpt.metrics),
                     _sha256(Path(checkpoint)), producer(), origin=ckpt.origin)
    onnx.helper.set_model_props(proto, info.to_metadata())
    onnx.checker.check_model(proto, full_check=True)
    used_opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    data = proto.SerializeToString()
    with atomic_path(output) as tmp:
        tmp.write_bytes(data)
        agreement = verify_model(model, tmp, verify_points, seed) if verify else None
    return ExportReport(output, len(data), used_opset, agreement, replaced, _untrained(ckpt.metrics))


def _untrained(metrics: dict) -> str | None:
    """A warning when the checkpoint's recorded validation IoU says its model has not learned the shape."""
    iou = metrics.get("val_iou")
    if isinstance(iou, (int, float)) and iou < LEARNED_IOU:
        return (f"the checkpoint's validation IoU is {iou:.3f} (below {LEARNED_IOU:g}): its model has not "
                "learned the shape and will mesh badly or not at all")
    return None


def to_onnx(model: OccNet, opset: int | None) -> onnx.ModelProto:
    """Export ``model`` with input ``points [N, 3]`` (dynamic N) and output ``logits [N]``."""
    example = torch.zeros(8, 3)
    with warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset,
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                        dynamic_shapes={"points": {0: torch.export.Dim("N", min=1)}},
                                        verbose=False, report=False)
        except Exception as exc:  # the exporter raises a wide range of internal errors
            raise ExportError(f"ONNX export failed: {first_line(exc, 300)}") from None
    return program.model_proto


def verify_model(model: OccNet, path: Path, n_points: int, seed: int) -> Agreement:
    """Check onnxruntime (through the runtime's own loader) against the network in float64 on random points
    in the box, a coarse grid over it and a single point; raises :class:`ExportError` unless it is as good as
    PyTorch float32 (see ``ERROR_FACTOR``) and agrees on inside/outside wherever that is certain."""
    session = OccupancyModel(path, device="cpu")
    lo, hi = np.array(session.info.bounds_min), np.array(session.info.bounds_max)
    rng = np.random.default_rng(seed)
    grid = Grid.from_bounds(lo, hi, 32)
    samples = [rng.uniform(lo, hi, size=(n_points, 3)), grid.points(np.arange(grid.num_points)),
               rng.uniform(lo, hi, size=(1, 3))]
    reference = copy.deepcopy(model).double()
    agreement = Agreement(0, 0.0, 0.0, 0.0, 0)
    for points in samples:
        agreement = agreement.merge(compare(model, reference, session, points))
    if not agreement.ok:
        raise ExportError(f"verification failed: onnxruntime's largest error against the float64 network is "
                          f"{agreement.onnx_error:.3g}, PyTorch float32's {agreement.torch_error:.3g} (limit "
                          f"{ERROR_FACTOR:g}x); {agreement.sign_flips} inside/outside disagreements")
    return agreement


def compare(model: OccNet, reference: OccNet, session: OccupancyModel, points: np.ndarray) -> Agreement:
    """onnxruntime and ``model`` (float32) against ``reference`` (the same network in float64) on world
    ``points (N, 3) float64``; the networks see them relative to the model's origin, as float32."""
    relative = (np.asarray(points, np.float64) - np.asarray(session.info.origin)).astype(np.float32)
    with torch.no_grad():
        exact = reference(torch.from_numpy(relative).double()).numpy()
        torch32 = model(torch.from_numpy(relative)).numpy()
    got = batched(session.logits, points, 65536)
    onnx_error, torch_error = np.abs(got - exact), np.abs(torch32 - exact)
    sure = np.abs(exact) > max(float(onnx_error.max()), float(torch_error.max()))
    flips = int(np.count_nonzero(((got > 0) != (exact > 0)) & sure))
    return Agreement(len(points), float(onnx_error.max()), float(torch_error.max()),
                     float(np.abs(got - torch32).max()), flips)


EXPORTER_LOGGERS = ("torch", "onnxscript", "onnx_ir", "onnx")
"""Logger namespaces of the exporter's libraries: their records are dropped while it runs."""


class _ExporterRecords(logging.Filter):
    """Drops records of :data:`EXPORTER_LOGGERS` and their children; lets every other through."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".")[0] not in EXPORTER_LOGGERS


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's own loggers silent for the duration, everything else as it was. PyTorch's loggers write
    to stderr through handlers of their own and the exporter sets some of their levels itself: its progress
    chatter, and tracebacks it logs before re-raising (a Ctrl-C that lands in a fake-tensor kernel logged 400
    lines); what fails is raised and reported in one line anyway. A filter on every handler there is (the
    root's, each logger's, the last resort) drops their records whatever level they were given; the caller's
    own loggers still reach their handlers, also from other threads (``logging.disable``, used before,
    silenced the whole process)."""
    drop = _ExporterRecords()
    loggers = [logging.root, *(logger for logger in list(logging.root.manager.loggerDict.values())
                               if isinstance(logger, logging.Logger))]
    handlers = {handler for logger in loggers for handler in logger.handlers}
    if logging.lastResort is not None:
        handlers.add(logging.lastResort)
    for handler in handlers:
        handler.addFilter(drop)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(drop)


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
    """The checkpoint's figures as strict JSON values: numbers and strings kept, NaN and infinities as null
    (JSON has no such numbers; json.dumps would write ``NaN``, which strict readers refuse)."""
    return {str(k): (None if isinstance(v, float) and not math.isfinite(v) else float(v) if isinstance(v, float)
                     else v) for k, v in metrics.items() if isinstance(v, (int, float, str))}
