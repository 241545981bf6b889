"""ONet's conditional checkpoints -> one self-describing ONNX file, verified before it exists.

The file's graph is the per-point decoder: ``points [N, 3]`` and the shape's ``code`` in, ``logits [N]`` out.
The code is what an observation fixes: every conditional batch norm's scale and shift, its running statistics
folded in (``code [2 * norms, hidden]``). The encoder graph, ``observation`` in and ``code`` out, is a second
ONNX model carried in the metadata (``occnet.encoder``, base64), run once per observation. So the per-point
work is the decoder's matrix products and nothing that depends on the observation alone.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from occnet.export.exporter import (
    ERROR_FACTOR,
    Agreement,
    ExportError,
    ExportReport,
    agreement_of,
    opset_of,
    producer,
    sha256,
    trace,
)
from occnet.runtime.contract import (
    CODE_NAME,
    INPUT_NAME,
    OBSERVATION_NAME,
    OUTPUT_NAME,
    Condition,
    MetaKey,
    ModelInfo,
)
from occnet.runtime.field import batched
from occnet.runtime.files import atomic_path
from occnet.runtime.session import OccupancyModel
from occnet.train.onet import VOXEL_RESOLUTION, ConditionalOccNet, DecoderCBatchNorm
from occnet.train.onet_checkpoint import BOX, OnetCheckpoint

CLOUD_SIZES = (1, 7)
"""Cloud sizes verified besides the model's own: a single point (max-pooling over one) and an odd few."""


class ShapeCode(nn.Module):
    """The encoder graph: one observation (a cloud ``(T, 3)`` or a grid ``(R, R, R)``, float32) -> its
    ``code (2 * norms, hidden)``: rows ``2k`` and ``2k + 1`` are the scale and shift of the k-th conditional
    batch norm, in the order the features meet them (:meth:`DecoderCBatchNorm.norms`)."""

    def __init__(self, network: ConditionalOccNet) -> None:
        super().__init__()
        self.encoder, self.norms = network.encoder, nn.ModuleList(network.decoder.norms())

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        c = self.encoder(observation[None])
        return torch.cat([torch.cat(norm.folded(c)) for norm in self.norms])


class PointDecoder(nn.Module):
    """The per-point graph: ``points (N, 3)`` and a ``code`` -> logits ``(N,)``; the decoder's 1x1
    convolutions as matrix products over ``(N, hidden)`` rows, each norm ``x * scale + shift`` from the code."""

    def __init__(self, decoder: DecoderCBatchNorm) -> None:
        super().__init__()

        def linear(conv: nn.Conv1d) -> nn.Linear:
            layer = nn.Linear(conv.in_channels, conv.out_channels)
            layer.weight.data, layer.bias.data = conv.weight.data[:, :, 0].clone(), conv.bias.data.clone()
            return layer

        self.fc_p, self.fc_out = linear(decoder.fc_p), linear(decoder.fc_out)
        self.fc_0 = nn.ModuleList(linear(block.fc_0) for block in decoder.blocks())
        self.fc_1 = nn.ModuleList(linear(block.fc_1) for block in decoder.blocks())

    def forward(self, points: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        net = self.fc_p(points)
        for index, (fc_0, fc_1) in enumerate(zip(self.fc_0, self.fc_1)):
            h = fc_0(F.relu(net * code[4 * index] + code[4 * index + 1]))
            net = net + fc_1(F.relu(h * code[4 * index + 2] + code[4 * index + 3]))
        last = 4 * len(self.fc_0)
        return self.fc_out(F.relu(net * code[last] + code[last + 1]))[:, 0]


def export_onet(ckpt: OnetCheckpoint, output: Path, opset: int | None, verify: bool, verify_points: int,
                seed: int, replaced: bool) -> ExportReport:
    """Export ONet's checkpoint (read by :func:`~occnet.train.onet_checkpoint.load_onet_checkpoint`) to
    ``output`` (checked, ``replaced`` saying whether it exists) atomically; verify it unless told not to (see
    :func:`verify_conditional`)."""
    network = ckpt.network()
    arch = ckpt.architecture
    example = observation_examples(arch.observation, ckpt.config.cloud_points, 1, np.random.default_rng(seed))[0]
    code = ShapeCode(network)(torch.from_numpy(example))
    decoder = trace(PointDecoder(network.decoder), (torch.zeros(8, 3), code), [INPUT_NAME, CODE_NAME], OUTPUT_NAME,
                    {"points": {0: torch.export.Dim("N", min=1)}, "code": None}, opset)
    observation_dims = {0: torch.export.Dim("T", min=1)} if arch.observation == "pointcloud" else None
    encoder = trace(ShapeCode(network), (torch.from_numpy(example),), [OBSERVATION_NAME], CODE_NAME,
                    {"observation": observation_dims}, opset)
    condition = Condition(arch.observation, tuple(code.shape), ckpt.config.threshold,
                          points=ckpt.config.cloud_points if arch.observation == "pointcloud" else 0,
                          resolution=VOXEL_RESOLUTION if arch.observation == "voxels" else 0,
                          network={"kind": "onet", **arch.__dict__})
    info = ModelInfo((-BOX,) * 3, (BOX,) * 3, None, {}, sha256(Path(ckpt.path)), producer(), condition=condition)
    onnx.helper.set_model_props(decoder, {**info.to_metadata(),
                                          MetaKey.ENCODER: base64.b64encode(encoder.SerializeToString()).decode()})
    onnx.checker.check_model(decoder, full_check=True)
    used_opset = opset_of(decoder)
    data = decoder.SerializeToString()
    with atomic_path(output) as tmp:
        tmp.write_bytes(data)
        agreement = verify_conditional(network, tmp, verify_points, seed) if verify else None
    return ExportReport(output, len(data), used_opset, agreement, replaced)


def observation_examples(observation: str, cloud_points: int, count: int, rng: np.random.Generator) -> list:
    """``count`` random observations in ONet's frame: clouds ``(T, 3) float32`` in the unit cube, or voxel grids
    ``(32, 32, 32) float32`` of a random ellipsoid's occupancy (dense blocks, as shapes are, not noise)."""
    out = []
    for _ in range(count):
        if observation == "pointcloud":
            out.append(rng.uniform(-0.5, 0.5, (cloud_points, 3)).astype(np.float32))
        else:
            axis = (np.arange(VOXEL_RESOLUTION) + 0.5) / VOXEL_RESOLUTION - 0.5
            x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
            radii, centre = rng.uniform(0.15, 0.45, 3), rng.uniform(-0.1, 0.1, 3)
            inside = ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + \
                ((z - centre[2]) / radii[2]) ** 2 < 1
            out.append(inside.astype(np.float32))
    return out


def verify_conditional(network: ConditionalOccNet, path: Path, n_points: int, seed: int) -> Agreement:
    """The file, through the runtime's own loader (encoder graph, then the per-point graph), against the
    network in float64 on random observations — clouds of the model's size, of 1 and of 7 points, or voxel
    grids — each on ``n_points`` random points in the box and on a single point; :class:`ExportError` unless
    onnxruntime is as good as PyTorch float32 (``ERROR_FACTOR``) and agrees on inside/outside wherever that
    is certain."""
    model = OccupancyModel(path, device="cpu")
    condition = model.info.condition
    rng = np.random.default_rng(seed)
    if condition.observation == "pointcloud":
        seen = [observation_examples("pointcloud", size, 1, rng)[0] for size in (condition.points, *CLOUD_SIZES)]
    else:
        seen = observation_examples("voxels", 0, 3, rng)
    reference = copy.deepcopy(network).double()
    lo, hi = np.array(model.info.bounds_min), np.array(model.info.bounds_max)
    agreement = Agreement(0, 0.0, 0.0, 0.0, 0)
    for observation in seen:
        shaped = model.given(observation)
        for points in (rng.uniform(lo, hi, (n_points, 3)), rng.uniform(lo, hi, (1, 3))):
            agreement = agreement.merge(_compare(network, reference, shaped, observation, points))
    if not agreement.ok:
        raise ExportError(f"verification failed: onnxruntime's largest error against the float64 network is "
                          f"{agreement.onnx_error:.3g}, PyTorch float32's {agreement.torch_error:.3g} (limit "
                          f"{ERROR_FACTOR:g}x); {agreement.sign_flips} inside/outside disagreements")
    return agreement


def _compare(network: ConditionalOccNet, reference: ConditionalOccNet, shaped, observation: np.ndarray,
             points: np.ndarray) -> Agreement:
    points32 = torch.from_numpy(points.astype(np.float32))[None]
    seen = torch.from_numpy(observation)[None]
    with torch.no_grad():
        exact = reference(points32.double(), seen.double())[0].numpy()
        torch32 = network(points32, seen)[0].numpy()
    return agreement_of(batched(shaped.logits, points, 65536), torch32, exact)
