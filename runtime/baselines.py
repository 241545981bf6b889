"""Reconstructions without a learned model, to score a conditional model against on the same observation: the
convex hull of its points, and screened Poisson reconstruction (Kazhdan and Hoppe 2013) of a point cloud.

Poisson is MeshLab's implementation through ``pymeshlab`` (the ``bench`` extra: the runtime does not need it),
imported on use so that a missing one fails there with its own error. A noisy 300-point cloud carries no
normals, so they are estimated as a user would: planes through each point's 10 nearest neighbours, oriented
consistently along a minimum spanning tree, then all flipped where they face the cloud's centroid on average.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import trimesh
from scipy.spatial import ConvexHull, QhullError

POISSON_DEPTH = 8
"""Octree depth of the Poisson solve (MeshLab's default): a 256³ grid at its finest, well below 300 points'
spacing, so the screening term, not the grid, limits the detail."""
NORMAL_NEIGHBOURS = 10
"""Neighbours of the plane fitted at each point (MeshLab's default)."""


def poisson_available() -> bool:
    """Whether ``pymeshlab`` is installed (the ``bench`` extra), without importing it."""
    return importlib.util.find_spec("pymeshlab") is not None


def convex_hull(points: np.ndarray) -> trimesh.Trimesh | None:
    """The convex hull of ``points (N, 3)`` as a closed mesh facing out; None for points that span no volume."""
    try:
        hull = ConvexHull(points)
    except QhullError:
        return None
    mesh = trimesh.Trimesh(points[hull.vertices], np.searchsorted(hull.vertices, hull.simplices), process=False)
    trimesh.repair.fix_normals(mesh)
    return mesh


def screened_poisson(points: np.ndarray) -> trimesh.Trimesh | None:
    """Screened Poisson reconstruction of the cloud ``points (N, 3)`` with estimated normals (see the module);
    None where it gives no surface (MeshLab refuses the cloud or returns no faces). Raises
    ``ModuleNotFoundError`` without ``pymeshlab``."""
    import pymeshlab

    points = np.asarray(points, np.float64)
    if len(points) <= NORMAL_NEIGHBOURS:
        return None
    try:
        meshes = pymeshlab.MeshSet()
        meshes.add_mesh(pymeshlab.Mesh(vertex_matrix=points))
        meshes.compute_normal_for_point_clouds(k=NORMAL_NEIGHBOURS)
        normals = meshes.current_mesh().vertex_normal_matrix()
        if np.sum(normals * (points - points.mean(axis=0))) < 0:
            normals = -normals
        meshes = pymeshlab.MeshSet()
        meshes.add_mesh(pymeshlab.Mesh(vertex_matrix=points, v_normals_matrix=normals))
        meshes.generate_surface_reconstruction_screened_poisson(depth=POISSON_DEPTH)
    except pymeshlab.PyMeshLabException:
        return None
    result = meshes.current_mesh()
    if result.face_number() == 0:
        return None
    return trimesh.Trimesh(result.vertex_matrix(), result.face_matrix(), process=False)
