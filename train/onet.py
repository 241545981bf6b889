"""ONet's conditional occupancy networks f(p, c(x)) (Mescheder et al., "Occupancy Networks", CVPR 2019): an
encoder maps an observation x (a point cloud, a voxel grid) to a code c, and a decoder of ResNet blocks with
conditional batch norm maps points p and c to occupancy logits.

Written here from the paper and the published architecture, with the parameter names of ONet's modules, so that
a state dict saved by ONet's training code loads as it is: ``encoder.*`` and ``decoder.*``. Sizes are
parameters (:class:`OnetArchitecture`); ONet's released models are the defaults.

Layouts (torch): point clouds ``(B, T, 3)``, voxel grids ``(B, 32, 32, 32)`` indexed ``[x, y, z]``, query
points ``(B, N, 3)``, codes ``(B, c_dim)``, logits ``(B, N)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from occnet.runtime.checks import check_choice, check_integer
from occnet.runtime.errors import InputError

POINTCLOUD_ENCODERS = ("pointnet_resnet", "pointnet_simple")
"""ONet's names of the point-cloud encoders."""
VOXEL_ENCODERS = ("voxel_simple",)
"""ONet's name of the 32^3 voxel encoder."""
ENCODERS = POINTCLOUD_ENCODERS + VOXEL_ENCODERS
VOXEL_RESOLUTION = 32
"""Voxels per side of the grid the voxel encoder reads (four stride-2 convolutions leave 2^3)."""
BLOCKS = 5
"""ResNet blocks of the decoder and of the ResNet-PointNet encoder, as in ONet."""


@dataclass(frozen=True)
class OnetArchitecture:
    """The sizes of an ONet model: ``encoder`` one of :data:`ENCODERS`, ``c_dim`` the code's length,
    ``encoder_hidden`` the point-cloud encoder's width (unused by the voxel encoder), ``hidden_size`` the
    decoder's width, ``legacy`` the decoder's older layout (``fc_gamma``/``fc_beta`` linear projections of the
    code instead of ``conv_gamma``/``conv_beta`` 1x1 convolutions; ONet's released image model has it).
    Defaults: ONet's released point-cloud model (10.4 M parameters)."""

    encoder: str = "pointnet_resnet"
    c_dim: int = 512
    encoder_hidden: int = 512
    hidden_size: int = 256
    legacy: bool = False

    def __post_init__(self) -> None:
        check_choice("encoder", self.encoder, ENCODERS)
        for name in ("c_dim", "encoder_hidden", "hidden_size"):
            object.__setattr__(self, name, check_integer(name.replace("_", " "), getattr(self, name), 1, 4096))
        if not isinstance(self.legacy, bool):
            raise InputError(f"legacy must be true or false, got {self.legacy!r}")

    @property
    def observation(self) -> str:
        """``pointcloud`` or ``voxels``: what the encoder reads."""
        return "voxels" if self.encoder in VOXEL_ENCODERS else "pointcloud"


class ResnetBlockFC(nn.Module):
    """Linear ResNet block ``relu -> fc_0 -> relu -> fc_1`` plus a bias-free linear shortcut where the sizes
    differ; ``fc_1`` starts at zero, so the block starts as its shortcut."""

    def __init__(self, size_in: int, size_out: int) -> None:
        super().__init__()
        self.fc_0 = nn.Linear(size_in, min(size_in, size_out))
        self.fc_1 = nn.Linear(min(size_in, size_out), size_out)
        self.shortcut = nn.Linear(size_in, size_out, bias=False) if size_in != size_out else None
        nn.init.zeros_(self.fc_1.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dx = self.fc_1(F.relu(self.fc_0(F.relu(x))))
        return (x if self.shortcut is None else self.shortcut(x)) + dx


class CBatchNorm1d(nn.Module):
    """Conditional batch norm: features normalised by batch statistics (no affine of their own), then scaled
    and shifted by ``gamma(c)`` and ``beta(c)``, projections of the code. ``legacy``: the projections are
    ``fc_gamma``/``fc_beta`` (Linear) instead of ``conv_gamma``/``conv_beta`` (1x1 Conv1d); the same maps."""

    def __init__(self, c_dim: int, features: int, legacy: bool) -> None:
        super().__init__()
        if legacy:
            self.fc_gamma, self.fc_beta = nn.Linear(c_dim, features), nn.Linear(c_dim, features)
        else:
            self.conv_gamma, self.conv_beta = nn.Conv1d(c_dim, features, 1), nn.Conv1d(c_dim, features, 1)
        self.legacy = legacy
        self.bn = nn.BatchNorm1d(features, affine=False)
        gamma, beta = self._projections()
        nn.init.zeros_(gamma.weight), nn.init.ones_(gamma.bias), nn.init.zeros_(beta.weight), nn.init.zeros_(beta.bias)

    def _projections(self) -> tuple[nn.Module, nn.Module]:
        return (self.fc_gamma, self.fc_beta) if self.legacy else (self.conv_gamma, self.conv_beta)

    def affine(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``gamma, beta``: ``(B, features)`` each, from codes ``c (B, c_dim)``."""
        gamma, beta = self._projections()
        if self.legacy:
            return gamma(c), beta(c)
        return gamma(c[:, :, None])[:, :, 0], beta(c[:, :, None])[:, :, 0]

    def folded(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """In evaluation: ``scale, shift`` ``(B, features)`` such that the layer is ``x * scale + shift``, the
        running statistics folded into the code's affine map (what a shape's code fixes once)."""
        gamma, beta = self.affine(c)
        inverse = torch.rsqrt(self.bn.running_var + self.bn.eps)
        return gamma * inverse, beta - gamma * inverse * self.bn.running_mean

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``x (B, features, T)``, ``c (B, c_dim)`` -> ``(B, features, T)``."""
        gamma, beta = self.affine(c)
        return gamma[:, :, None] * self.bn(x) + beta[:, :, None]


class CResnetBlockConv1d(nn.Module):
    """Pointwise ResNet block with conditional batch norm: ``bn_0 -> relu -> fc_0 -> bn_1 -> relu -> fc_1``
    plus the input (1x1 convolutions over ``(B, size, T)``); ``fc_1`` starts at zero."""

    def __init__(self, c_dim: int, size: int, legacy: bool) -> None:
        super().__init__()
        self.bn_0, self.bn_1 = CBatchNorm1d(c_dim, size, legacy), CBatchNorm1d(c_dim, size, legacy)
        self.fc_0, self.fc_1 = nn.Conv1d(size, size, 1), nn.Conv1d(size, size, 1)
        nn.init.zeros_(self.fc_1.weight)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        net = self.fc_0(F.relu(self.bn_0(x, c)))
        return x + self.fc_1(F.relu(self.bn_1(net, c)))


class DecoderCBatchNorm(nn.Module):
    """ONet's decoder (``cbatchnorm``, z_dim 0): ``fc_p`` lifts each point to ``hidden_size`` features,
    ``block0`` .. ``block4`` refine them under the code, ``bn`` and ``fc_out`` give one logit per point."""

    def __init__(self, c_dim: int, hidden_size: int, legacy: bool) -> None:
        super().__init__()
        self.fc_p = nn.Conv1d(3, hidden_size, 1)
        for index in range(BLOCKS):
            setattr(self, f"block{index}", CResnetBlockConv1d(c_dim, hidden_size, legacy))
        self.bn = CBatchNorm1d(c_dim, hidden_size, legacy)
        self.fc_out = nn.Conv1d(hidden_size, 1, 1)

    def blocks(self) -> list[CResnetBlockConv1d]:
        return [getattr(self, f"block{index}") for index in range(BLOCKS)]

    def norms(self) -> list[CBatchNorm1d]:
        """The conditional norms in the order the features meet them."""
        return [norm for block in self.blocks() for norm in (block.bn_0, block.bn_1)] + [self.bn]

    def forward(self, p: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``p (B, N, 3)``, ``c (B, c_dim)`` -> logits ``(B, N)``."""
        net = self.fc_p(p.transpose(1, 2))
        for block in self.blocks():
            net = block(net, c)
        return self.fc_out(F.relu(self.bn(net, c)))[:, 0]


def _pooled(net: torch.Tensor) -> torch.Tensor:
    """Each point's features beside the cloud's maximum of them: ``(B, T, F)`` -> ``(B, T, 2F)``."""
    return torch.cat([net, net.max(dim=1, keepdim=True)[0].expand_as(net)], dim=2)


class ResnetPointnet(nn.Module):
    """ONet's ``pointnet_resnet``: per-point ResNet blocks, each fed the points' features beside their
    maximum over the cloud, then the maximum over the cloud, then ``fc_c`` to the code."""

    def __init__(self, c_dim: int, hidden: int) -> None:
        super().__init__()
        self.fc_pos = nn.Linear(3, 2 * hidden)
        for index in range(BLOCKS):
            setattr(self, f"block_{index}", ResnetBlockFC(2 * hidden, hidden))
        self.fc_c = nn.Linear(hidden, c_dim)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """``points (B, T, 3)`` -> codes ``(B, c_dim)``."""
        net = self.block_0(self.fc_pos(points))
        for index in range(1, BLOCKS):
            net = getattr(self, f"block_{index}")(_pooled(net))
        return self.fc_c(F.relu(net.max(dim=1)[0]))


class SimplePointnet(nn.Module):
    """ONet's ``pointnet_simple``: as :class:`ResnetPointnet` with single linear layers ``fc_0`` .. ``fc_3``."""

    def __init__(self, c_dim: int, hidden: int) -> None:
        super().__init__()
        self.fc_pos = nn.Linear(3, 2 * hidden)
        for index in range(4):
            setattr(self, f"fc_{index}", nn.Linear(2 * hidden, hidden))
        self.fc_c = nn.Linear(hidden, c_dim)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """``points (B, T, 3)`` -> codes ``(B, c_dim)``."""
        net = self.fc_0(F.relu(self.fc_pos(points)))
        for index in range(1, 4):
            net = getattr(self, f"fc_{index}")(F.relu(_pooled(net)))
        return self.fc_c(F.relu(net.max(dim=1)[0]))


class VoxelEncoder(nn.Module):
    """ONet's ``voxel_simple``: a 32^3 occupancy grid through ``conv_in`` and four stride-2 3D convolutions
    (32 -> 64 -> 128 -> 256 -> 512 channels, 32^3 -> 2^3) and ``fc`` to the code."""

    def __init__(self, c_dim: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv3d(1, 32, 3, padding=1)
        for index, (a, b) in enumerate(((32, 64), (64, 128), (128, 256), (256, 512))):
            setattr(self, f"conv_{index}", nn.Conv3d(a, b, 3, padding=1, stride=2))
        self.fc = nn.Linear(512 * 8, c_dim)

    def forward(self, voxels: torch.Tensor) -> torch.Tensor:
        """``voxels (B, 32, 32, 32)`` float, 1 inside -> codes ``(B, c_dim)``."""
        net = self.conv_in(voxels[:, None])
        for index in range(4):
            net = getattr(self, f"conv_{index}")(F.relu(net))
        return self.fc(F.relu(net.flatten(1)))


class ConditionalOccNet(nn.Module):
    """``encoder`` and ``decoder`` as ONet's ``OccupancyNetwork`` holds them (z_dim 0): logits of query
    points given an observation."""

    def __init__(self, arch: OnetArchitecture) -> None:
        super().__init__()
        self.arch = arch
        if arch.encoder == "pointnet_resnet":
            self.encoder = ResnetPointnet(arch.c_dim, arch.encoder_hidden)
        elif arch.encoder == "pointnet_simple":
            self.encoder = SimplePointnet(arch.c_dim, arch.encoder_hidden)
        else:
            self.encoder = VoxelEncoder(arch.c_dim)
        self.decoder = DecoderCBatchNorm(arch.c_dim, arch.hidden_size, arch.legacy)

    def forward(self, points: torch.Tensor, observation: torch.Tensor) -> torch.Tensor:
        """``points (B, N, 3)``, ``observation (B, T, 3)`` or ``(B, 32, 32, 32)`` -> logits ``(B, N)``."""
        return self.decoder(points, self.encoder(observation))


def measure_statistics(model: ConditionalOccNet, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Set every batch norm's running statistics to their averages over ``batches`` of ``(points (B, N, 3),
    observations)``, as training leaves them (for weights made outside training, e.g. to benchmark a model of
    realistic scale); the model is left in evaluation mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None                      # a cumulative average over the batches
    model.train()
    with torch.no_grad():
        for points, observations in batches:
            model(points, observations)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.eval()
