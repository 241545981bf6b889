"""Mesh extraction settings: one typed, validated record, light to import (the CLI's ``--help`` needs it)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from occnet.runtime.checks import check_choice, check_instance, check_integer
from occnet.runtime.errors import InputError
from occnet.runtime.options import option

MESH_FORMATS = {".ply": "ply", ".obj": "obj", ".stl": "stl", ".glb": "glb", ".off": "off"}
"""Mesh file suffixes occnet reads and writes, and trimesh's name for each."""
MIN_RESOLUTION = 2
"""Fewest samples along the box's longest side: two, the box's own corners."""
DEFAULT_THRESHOLD = 0.5
"""The probability meshed where neither the settings nor the model say: even odds."""
METHODS = ("adaptive", "dense", "bounded")
"""``adaptive``: coarse-to-fine narrow band (default); ``dense``: every grid point (the reference);
``bounded``: the cells a sound bound of the network cannot rule out (dense's mesh, proven; see
:mod:`occnet.runtime.bounded`)."""


def probability_to_logit(threshold: float) -> float:
    """The logit iso-level for an occupancy probability in (0, 1)."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0.0 < threshold < 1.0:
        raise InputError(f"threshold is a probability and must lie strictly between 0 and 1, got {threshold!r}")
    return math.log(threshold) - math.log1p(-threshold)


@dataclass(frozen=True)
class MeshSettings:
    """How to turn a field into a mesh. ``threshold`` is an occupancy probability (None: the model's, which is
    :data:`DEFAULT_THRESHOLD` unless a conditional model records its own); ``largest_only`` and ``min_faces``
    drop small components after marching cubes."""

    resolution: int = option(256, "Grid samples along the box's longest side.")
    method: str = option("adaptive", "adaptive (coarse-to-fine), dense (every point) or bounded (cells a sound "
                         "bound of the network cannot rule out: dense's mesh, proven; slower).", choices=METHODS)
    threshold: float | None = option(None, "Occupancy probability of the surface, in (0, 1). Default: the "
                                     "model's (0.5; a conditional model's own, ONet's 0.2).")
    batch_size: int = option(16384, "Points per onnxruntime call.")
    largest_only: bool = option(False, "Keep only the largest connected component.")
    min_faces: int = option(0, "Drop components with fewer faces.")

    def __post_init__(self) -> None:
        if self.threshold is not None:
            probability_to_logit(self.threshold)
        checked = {"resolution": check_integer("resolution", self.resolution, MIN_RESOLUTION),
                   "method": check_choice("method", self.method, METHODS),
                   "threshold": None if self.threshold is None else float(self.threshold),
                   "batch_size": check_integer("batch size", self.batch_size, 1),
                   "largest_only": check_instance("largest only", self.largest_only, bool),
                   "min_faces": check_integer("min faces", self.min_faces, 0)}
        for name, value in checked.items():
            object.__setattr__(self, name, value)
