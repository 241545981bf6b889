"""The occupancy network: world coordinates in, one logit out.

The module normalises its input itself (a fixed affine map of the data box onto [-1, 1] along the longest
side, kept as buffers), so training data, the checkpoint and the exported ONNX model all speak world units.
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

    def __init__(self, arch: Architecture, bounds_min, bounds_max, seed: int = 0) -> None:
        super().__init__()
        self.arch = arch
        lo = torch.tensor(bounds_min, dtype=torch.float32)
        hi = torch.tensor(bounds_max, dtype=torch.float32)
        self.register_buffer("centre", (lo + hi) / 2)
        self.register_buffer("scale", 2.0 / (hi - lo).max().reshape(1))
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
        """``points (N, 3) float32`` world coordinates -> ``(N,) float32`` occupancy logits."""
        x = (points - self.centre) * self.scale
        if self.arch.encoding == "fourier":
            projected = x @ self.fourier_basis
            x = torch.cat([x, torch.sin(projected), torch.cos(projected)], dim=1)
        return self.net(x).squeeze(-1)
