"""The sampling grid: ``resolution`` samples along the box's longest side, cubic voxels, world coordinates.

Volume axes are (x, y, z) in that order (``indexing='ij'``): a marching-cubes vertex ``v`` in index space
lies at ``origin + v * spacing`` in the world. The seed's ``indexing='xy'`` swapped x and y; this does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from occnet.runtime.checks import check_integer
from occnet.runtime.errors import InputError
from occnet.runtime.settings import MIN_RESOLUTION


@dataclass(frozen=True)
class Grid:
    """A regular grid: ``shape`` samples per axis, ``spacing`` apart, the first at ``origin`` (world units)."""

    origin: tuple[float, float, float]
    spacing: float
    shape: tuple[int, int, int]

    @classmethod
    def from_bounds(cls, bounds_min, bounds_max, resolution: int) -> Grid:
        """Grid over the box with ``resolution`` samples along its longest side.

        The longest side is sampled exactly from min to max (``linspace``, both ends inclusive, as the
        seed's ``make_grid``); shorter sides get the same spacing, as many samples as cover them, centred.
        """
        check_integer("resolution", resolution, MIN_RESOLUTION)
        lo = np.asarray(bounds_min, dtype=np.float64)
        hi = np.asarray(bounds_max, dtype=np.float64)
        extent = hi - lo
        if lo.shape != (3,) or not np.all(np.isfinite(extent)) or np.any(extent <= 0):
            raise InputError(f"box must have positive finite extent, got min {lo} max {hi}")
        spacing = float(extent.max()) / (resolution - 1)
        shape = tuple(
            resolution if e == extent.max() else max(2, math.ceil(e / spacing - 1e-9) + 1) for e in extent
        )
        centre = (lo + hi) / 2
        origin = tuple(float(c - (n - 1) * spacing / 2) for c, n in zip(centre, shape))
        return cls(origin, spacing, shape)

    @property
    def num_points(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def points(self, flat: np.ndarray) -> np.ndarray:
        """World coordinates of grid samples given by flat (C-order) indices: ``(K,) int -> (K, 3) float64``."""
        ijk = np.stack(np.unravel_index(flat, self.shape), axis=1)
        return self.to_world(ijk)

    def to_world(self, ijk: np.ndarray) -> np.ndarray:
        """Map index-space coordinates ``(K, 3)`` (fractional allowed) to world ``(K, 3) float64``: full
        precision for boxes far from the origin (the model subtracts its own origin before float32)."""
        return np.asarray(self.origin) + np.asarray(ijk, np.float64) * self.spacing

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The sample coordinates along x, y and z: three ``(n_i,) float64`` arrays."""
        return tuple(o + self.spacing * np.arange(n) for o, n in zip(self.origin, self.shape))
