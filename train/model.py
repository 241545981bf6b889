"""The occupancy network: world coordinates in, one logit out.

Its input is points relative to a float64 ``origin`` (the data box's centre), in float32, so data far from
zero keeps its precision; the module then maps the box onto [-1, 1] along the longest side itself (a fixed
affine map kept as buffers), so the checkpoint and the ONNX model speak world units less the origin.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from occnet.runtime.contract import Architecture


class OccNet(nn.Module):
    """MLP ``3 -> hidden_size -> (hidden_layers x hidden_size, ReLU) -> 1``; the seed's is 64 wide, 4 deep.

    With ``encoding='fourier'`` the normalised point is concatenated with ``sin``/``cos`` of random
    projections (Tancik et al. 2020), the projection matrix a buffer so it is saved and exported.
    """

    def __init__(self, arch: Architecture, bounds_min, bounds_max, origin=(0.0, 0.0, 0.0), seed: int = 0) -> None:
        super().__init__()
        self.arch = arch
        lo = torch.tensor(bounds_min, dtype=torch.float64) - torch.tensor(origin, dtype=torch.float64)
        hi = torch.tensor(bounds_max, dtype=torch.float64) - torch.tensor(origin, dtype=torch.float64)
        self.register_buffer("centre", ((lo + hi) / 2).float())
        self.register_buffer("scale", (2.0 / (hi - lo).max().reshape(1)).float())
        width = 3
        if arch.encoding == "fourier":
            generator = torch.Generator().manual_seed(seed)
            basis = torch.randn(3, arch.fourier_features, generator=generator) * arch.fourier_scale
            self.register_buffer("fourier_basis", basis * (2 * math.pi))
            width += 2 * arch.fourier_features
        layers: list[nn.Module] = [nn.Linear(width, arch.hidden_size), nn.ReLU()]
        for _ in range(arch.hidden_layers):
            layers += [nn.Linear(arch.hidden_size, arch.hidden_size), nn.ReLU()]
        layers.append(nn.Linear(arch.hidden_size, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """``points (N, 3) float32`` relative to the origin -> ``(N,) float32`` occupancy logits."""
        x = (points - self.centre) * self.scale
        if self.arch.encoding == "fourier":
            projected = x @ self.fourier_basis
            x = torch.cat([x, torch.sin(projected), torch.cos(projected)], dim=1)
        return self.net(x).squeeze(-1)
