"""Built-in shapes with exact analytic occupancy (numpy only): the demo that ``occ-train`` fits by default.

The demo is a constructive-solid-geometry part, asymmetric along every axis so that a swapped or mirrored
axis anywhere in the pipeline shows: a rounded slab with a hole drilled through it, a torus handle on one
end and a sphere fused onto one corner.
"""

from __future__ import annotations

import numpy as np

DEMO_BOUNDS = ((-0.55, -0.55, -0.55), (0.55, 0.55, 0.55))
"""The box the demo is sampled and meshed in (world units): the unit cube with ONet's padding."""


def _box(p: np.ndarray, centre, half, radius: float) -> np.ndarray:
    q = np.abs(p - np.asarray(centre)) - (np.asarray(half) - radius)
    outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
    return outside + np.minimum(q.max(axis=1), 0.0) - radius


def _cylinder_z(p: np.ndarray, centre_xy, radius: float) -> np.ndarray:
    return np.linalg.norm(p[:, :2] - np.asarray(centre_xy), axis=1) - radius


def _torus_xz(p: np.ndarray, centre, major: float, minor: float) -> np.ndarray:
    q = p - np.asarray(centre)
    ring = np.linalg.norm(q[:, [0, 2]], axis=1) - major
    return np.hypot(ring, q[:, 1]) - minor


def _sphere(p: np.ndarray, centre, radius: float) -> np.ndarray:
    return np.linalg.norm(p - np.asarray(centre), axis=1) - radius


def demo_sdf(points: np.ndarray) -> np.ndarray:
    """Signed distance bound of the demo (negative inside): ``(N, 3) float -> (N,) float64``.

    Exact in sign; a lower bound on distance near the CSG seams, which is all occupancy needs.
    """
    p = np.asarray(points, dtype=np.float64)
    slab = _box(p, (0.06, -0.04, -0.02), (0.34, 0.21, 0.13), 0.04)
    slab = np.maximum(slab, -_cylinder_z(p, (0.16, -0.02), 0.09))
    handle = _torus_xz(p, (-0.30, -0.04, 0.12), 0.16, 0.045)
    cap = _sphere(p, (0.28, 0.19, 0.10), 0.14)
    return np.minimum(np.minimum(slab, handle), cap)


def demo_occupancy(points: np.ndarray) -> np.ndarray:
    """Exact demo occupancy: ``(N, 3) float -> (N,) uint8``, 1 inside."""
    return (demo_sdf(points) < 0).astype(np.uint8)
