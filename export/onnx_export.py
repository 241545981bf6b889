"""Checkpoint -> self-describing ONNX model, verified before it is allowed to exist: occnet's own checkpoints
(the MLP f(p) of one shape) here, ONet's conditional ones through :mod:`occnet.export.conditional`."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import onnx
import torch

from occnet.export.conditional import export_onet
from occnet.export.exporter import (
    ERROR_FACTOR,
    Agreement,
    ExportError,
    ExportReport,
    agreement_of,
    check_export_output,
    opset_of,
    producer,
    sha256,
    trace,
)
from occnet.runtime.contract import INPUT_NAME, LEARNED_IOU, OUTPUT_NAME, ModelInfo
from occnet.runtime.errors import InputError
from occnet.runtime.field import batched
from occnet.runtime.files import atomic_path
from occnet.runtime.grid import Grid
from occnet.runtime.session import OccupancyModel
from occnet.train.checkpoint import CheckpointError, checkpoint_from_state, read_torch_file
from occnet.train.model import OccNet
from occnet.train.onet_checkpoint import NUMPY_GLOBALS, is_onet_state, onet_checkpoint


def export_checkpoint(checkpoint: Path, output: Path, opset: int | None = None, verify: bool = True,
                      verify_points: int | None = None, seed: int = 0, config: Path | None = None) -> ExportReport:
    """Export ``checkpoint`` — occnet's, or ONet's (with its YAML ``config`` where given) — to ``output``
    (atomically) with occnet metadata; verify it unless told not to, on ``verify_points`` random points (per
    observation for a conditional model; default 200,000 and 20,000)."""
    replaced = check_export_output(checkpoint, output)
    state = read_torch_file(checkpoint, legacy=True, allowed=NUMPY_GLOBALS)
    if is_onet_state(state):
        return export_onet(onet_checkpoint(Path(checkpoint), state, config), output, opset, verify,
                           verify_points or 20_000, seed, replaced)
    if config is not None:
        raise InputError(f"{checkpoint} is an occnet checkpoint; a config file is for ONet's checkpoints")
    ckpt = checkpoint_from_state(Path(checkpoint), state)
    try:
        model = ckpt.network()
    except CheckpointError as exc:
        raise CheckpointError(f"{checkpoint}: {exc}") from None

    proto = to_onnx(model, opset)
    info = ModelInfo(ckpt.bounds_min, ckpt.bounds_max, ckpt.architecture, _plain(ckpt.metrics),
                     sha256(Path(checkpoint)), producer(), origin=ckpt.origin)
    onnx.helper.set_model_props(proto, info.to_metadata())
    onnx.checker.check_model(proto, full_check=True)
    used_opset = opset_of(proto)
    data = proto.SerializeToString()
    with atomic_path(output) as tmp:
        tmp.write_bytes(data)
        agreement = verify_model(model, tmp, verify_points or 200_000, seed) if verify else None
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
    return trace(model, (torch.zeros(8, 3),), [INPUT_NAME], OUTPUT_NAME,
                 {"points": {0: torch.export.Dim("N", min=1)}}, opset)


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
    return agreement_of(batched(session.logits, points, 65536), torch32, exact)


def _plain(metrics: dict) -> dict:
    """The checkpoint's figures as strict JSON values: numbers and strings kept, NaN and infinities as null
    (JSON has no such numbers; json.dumps would write ``NaN``, which strict readers refuse)."""
    return {str(k): (None if isinstance(v, float) and not math.isfinite(v) else float(v) if isinstance(v, float)
                     else v) for k, v in metrics.items() if isinstance(v, (int, float, str))}
