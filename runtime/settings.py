"""Mesh extraction settings: one typed, validated record, light to import (the CLI's ``--help`` needs it)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from occnet.runtime.errors import InputError

MESH_FORMATS = {".ply": "ply", ".obj": "obj", ".stl": "stl", ".glb": "glb", ".off": "off"}
"""Mesh file suffixes occnet reads and writes, and trimesh's name for each."""
MIN_RESOLUTION = 2
"""Fewest samples along the box's longest side: two, the box's own corners."""
METHODS = ("adaptive", "dense")
"""``adaptive``: coarse-to-fine narrow band (default); ``dense``: every grid point (the reference)."""


def probability_to_logit(threshold: float) -> float:
    """The logit iso-level for an occupancy probability in (0, 1)."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0.0 < threshold < 1.0:
        raise InputError(f"threshold is a probability and must lie strictly between 0 and 1, got {threshold!r}")
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
        """Every field checked here, where the settings are made: a wrong type or range found later would be
        reported by whatever code first tripped on it (numpy, onnxruntime, marching cubes), far from the cause."""
        check_integer("resolution", self.resolution, MIN_RESOLUTION)
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise InputError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        probability_to_logit(self.threshold)
        check_integer("batch size", self.batch_size, 1)
        if not isinstance(self.largest_only, bool):
            raise InputError(f"largest only must be True or False, got {self.largest_only!r}")
        check_integer("min faces", self.min_faces, 0)
        for name in ("resolution", "batch_size", "min_faces"):    # numpy scalars as plain Python numbers,
            object.__setattr__(self, name, int(getattr(self, name)))  # so that --json and repr stay plain
        object.__setattr__(self, "threshold", float(self.threshold))


def check_integer(name: str, value: object, minimum: int) -> None:
    """Raise :class:`InputError` unless ``value`` is an integer (Python's or numpy's, not a bool, not a float
    that happens to be whole) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
