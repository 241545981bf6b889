"""The occupancy network: world coordinates in, one logit out.

Its input is points relative to a float64 ``origin`` (the data box's centre), in float32, so data far from
zero keeps its precision; the module then maps the box onto [-1, 1] along the longest side itself (a fixed
affine map kept as buffers), so the checkpoint and the ONNX model speak world units less the origin.
"""

from __future__ import annotations

import torch
from torch import nn

from occnet.runtime.contract import Architecture
from occnet.train.encodings import make_encoding


class OccNet(nn.Module):
    """MLP ``encoding -> hidden_size -> (hidden_layers x hidden_size, ReLU) -> 1``; the seed's is 64 wide, 4 deep,
    with no encoding. The encoding (:mod:`occnet.train.encodings`) sees the point normalised to [-1, 1]; its
    fixed tensors are buffers, so they are saved and exported with the weights."""

    def __init__(self, arch: Architecture, bounds_min, bounds_max, origin=(0.0, 0.0, 0.0), seed: int = 0) -> None:
        super().__init__()
        self.arch = arch
        self.encoding = make_encoding(arch.encoding, arch.encoding_options)
        lo = torch.tensor(bounds_min, dtype=torch.float64) - torch.tensor(origin, dtype=torch.float64)
        hi = torch.tensor(bounds_max, dtype=torch.float64) - torch.tensor(origin, dtype=torch.float64)
        self.register_buffer("centre", ((lo + hi) / 2).float())
        self.register_buffer("scale", (2.0 / (hi - lo).max().reshape(1)).float())
        self._buffer_names = {}
        for key, tensor in self.encoding.buffers(seed).items():
            self._buffer_names[key] = f"{arch.encoding}_{key}"
            self.register_buffer(self._buffer_names[key], tensor)
        layers: list[nn.Module] = [nn.Linear(self.encoding.width(), arch.hidden_size), nn.ReLU()]
        for _ in range(arch.hidden_layers):
            layers += [nn.Linear(arch.hidden_size, arch.hidden_size), nn.ReLU()]
        layers.append(nn.Linear(arch.hidden_size, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """``points (N, 3) float32`` relative to the origin -> ``(N,) float32`` occupancy logits."""
        x = (points - self.centre) * self.scale
        x = self.encoding.encode(x, {key: getattr(self, name) for key, name in self._buffer_names.items()})
        return self.net(x).squeeze(-1)
