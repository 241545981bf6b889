"""Mesh extraction settings: one typed, validated record, light to import (the CLI's ``--help`` needs it)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from occnet.runtime.errors import InputError

MESH_FORMATS = {".ply": "ply", ".obj": "obj", ".stl": "stl", ".glb": "glb", ".off": "off"}
"""Mesh file suffixes occnet reads and writes, and trimesh's name for each."""
METHODS = ("adaptive", "dense")
"""``adaptive``: coarse-to-fine narrow band (default); ``dense``: every grid point (the reference)."""


def probability_to_logit(threshold: float) -> float:
    """The logit iso-level for an occupancy probability in (0, 1)."""
    if not 0.0 < threshold < 1.0:
        raise InputError(f"threshold is a probability and must lie strictly between 0 and 1, got {threshold}")
    return math.log(threshold) - math.log1p(-threshold)


@dataclass(frozen=True)
class MeshSettings:
    """How to turn a field into a mesh. ``threshold`` is an occupancy probability; ``largest_only`` and
    ``min_faces`` drop small components after marching cubes."""

    resolution: int = 256
    method: str = "adaptive"
    threshold: float = 0.5
    batch_size: int = 16384
    largest_only: bool = False
    min_faces: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {self.batch_size}")
        if self.min_faces < 0:
            raise InputError(f"min faces must be >= 0, got {self.min_faces}")
        probability_to_logit(self.threshold)
