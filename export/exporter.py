"""What exporting either kind of model shares: its errors and report, tracing a module to ONNX with the
exporter's chatter silenced, the arithmetic of verification against float64, and provenance.

Exporter: ``torch.onnx.export(..., dynamo=True)``, the ``torch.export``-based path. The TorchScript-based
exporter (``dynamo=False``) has been deprecated since PyTorch 2.9 and is slated for removal; the dynamo
path is the one PyTorch supports and develops, and handles dynamic dimensions cleanly.
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

from occnet.runtime.contract import installed_version
from occnet.runtime.errors import OccNetError, OutputError, first_line
from occnet.runtime.files import check_output

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


def trace(module: torch.nn.Module, example: tuple, input_names: list[str], output_name: str, dynamic: dict,
          opset: int | None) -> onnx.ModelProto:
    """``module`` (in evaluation mode) as an ONNX model with inputs ``input_names`` (the ``example``'s
    tensors, ``dynamic``: their dynamic dimensions in ``torch.export`` form) and one output ``output_name``."""
    with warnings.catch_warnings(), quiet():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(module.eval(), example, dynamo=True, opset_version=opset,
                                        input_names=input_names, output_names=[output_name],
                                        dynamic_shapes=dynamic, verbose=False, report=False)
        except Exception as exc:  # the exporter raises a wide range of internal errors
            raise ExportError(f"ONNX export failed: {first_line(exc, 300)}") from None
    return program.model_proto


def opset_of(proto: onnx.ModelProto) -> int:
    """The default-domain opset a model was written for."""
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def agreement_of(got: np.ndarray, torch32: np.ndarray, exact: np.ndarray) -> Agreement:
    """onnxruntime's logits ``got`` and PyTorch float32's ``torch32`` against the float64 ``exact``, all
    ``(N,)``: the largest errors, and the inside/outside flips where neither float32 computation can be unsure."""
    onnx_error, torch_error = np.abs(got - exact), np.abs(torch32 - exact)
    sure = np.abs(exact) > max(float(onnx_error.max()), float(torch_error.max()))
    flips = int(np.count_nonzero(((got > 0) != (exact > 0)) & sure))
    return Agreement(len(got), float(onnx_error.max()), float(torch_error.max()),
                     float(np.abs(got - torch32).max()), flips)


EXPORTER_LOGGERS = ("torch", "onnxscript", "onnx_ir", "onnx")
"""Logger namespaces of the exporter's libraries: their records are dropped while it runs."""


class _ExporterRecords(logging.Filter):
    """Drops records of :data:`EXPORTER_LOGGERS` and their children; lets every other through."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".")[0] not in EXPORTER_LOGGERS


@contextlib.contextmanager
def quiet() -> Iterator[None]:
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


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
