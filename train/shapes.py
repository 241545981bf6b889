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


def voxel_solid(occupied: np.ndarray, pitch: float = 1.0):
    """Closed triangle mesh of a union of voxels (``occupied``: 3D bool, face-connected, no edge-only contact):
    one outward quad per face between a filled and an empty voxel. Sharp 90-degree edges, like CAD parts."""
    import trimesh

    occ = np.pad(np.asarray(occupied, bool), 1)
    shape = np.array(occ.shape) + 1                               # lattice of voxel corners
    quads = []
    for axis in range(3):
        u, v = (axis + 1) % 3, (axis + 2) % 3
        e_u, e_v = np.eye(3, dtype=int)[u], np.eye(3, dtype=int)[v]
        step = np.eye(3, dtype=int)[axis]
        for sign in (1, -1):
            neighbour = np.roll(occ, -sign, axis=axis)
            ijk = np.argwhere(occ & ~neighbour)
            base = ijk + (step if sign > 0 else 0)
            corners = np.stack([base, base + e_u, base + e_u + e_v, base + e_v], axis=1)
            quads.append(corners if sign > 0 else corners[:, ::-1])
    corners = np.concatenate(quads)                              # (Q, 4, 3) lattice coordinates
    flat = np.ravel_multi_index(corners.reshape(-1, 3).T, shape)
    unique, inverse = np.unique(flat, return_inverse=True)
    vertices = (np.stack(np.unravel_index(unique, shape), axis=1) - 1) * pitch
    q = inverse.reshape(-1, 4)
    faces = np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]])
    return trimesh.Trimesh(vertices.astype(np.float64), faces, process=False)


def cad_parts(seed: int = 0) -> dict:
    """Three CAD-like test parts (millimetres, sharp edges, rotated off the grid axes): name -> Trimesh."""
    import trimesh

    bracket = np.zeros((12, 8, 8), bool)
    bracket[:, :, :2] = True                                       # base plate
    bracket[:2, :, :] = True                                       # upright wall
    bracket[6:9, 3:5, :2] = False                                  # slot through the base
    bracket[0:2, 2:4, 4:6] = False                                 # window in the wall
    stepped = np.zeros((10, 9, 7), bool)
    stepped[:, :, :3] = True
    stepped[1:7, 2:8, 3:5] = True
    stepped[2:5, 4:7, 5:7] = True
    stepped[7:10, 0:3, 0:3] = False                                # corner notch
    cross = np.zeros((11, 11, 4), bool)
    cross[4:7, :, :] = True
    cross[:, 3:6, :] = True
    cross[4:7, 0:2, 2:4] = False                                   # stepped arm end
    rng = np.random.default_rng(seed)
    parts = {}
    for name, grid, pitch in (("bracket", bracket, 4.0), ("stepped", stepped, 5.0), ("cross", cross, 3.0)):
        mesh = voxel_solid(grid, pitch)
        rotation = trimesh.transformations.random_rotation_matrix(rng.random(3))
        mesh.apply_transform(rotation)
        mesh.apply_translation(rng.uniform(-50, 50, 3))
        parts[name] = mesh
    return parts
