"""Marching cubes on a :class:`~occnet.runtime.extract.Field`: a closed mesh in world coordinates."""

from __future__ import annotations

import numpy as np
import trimesh
from skimage import measure

from occnet.runtime.errors import EmptySurfaceError, InputError
from occnet.runtime.extract import Field


def extract_mesh(field: Field, level: float) -> trimesh.Trimesh:
    """The ``level`` iso-surface of ``field`` (inside: value > level) as a watertight mesh.

    The volume's border counts as outside, so a surface cut by the box is closed there; degenerate faces
    are dropped; faces wind counter-clockwise seen from outside; vertices ``(V, 3) float32`` are world
    coordinates. Raises :class:`EmptySurfaceError` when the field never crosses ``level``.
    """
    values, cells = field.values, field.cells
    inside_any, outside_any = bool((values > level).any()), bool((values <= level).any())
    if not (inside_any and outside_any):
        side = "inside" if inside_any else "outside"
        raise EmptySurfaceError(f"the field is {side} everywhere in the box at this threshold: no surface")
    offset = 0
    if _border_inside(values, level):
        values, cells, offset = _pad_outside(values, level), _pad_cells(cells), 1
    mask = None if cells is None else _upper_corner_mask(cells)
    verts, faces, _, _ = measure.marching_cubes(values, level, mask=mask, allow_degenerate=False,
                                                gradient_direction="ascent")
    # Caps closing a surface cut by the box lie between the last sample and the padding: put them on the box.
    verts = field.grid.to_world(np.clip(verts - offset, 0, np.array(field.grid.shape) - 1))
    mesh = trimesh.Trimesh(verts, faces, process=False)
    if len(mesh.faces) == 0:
        raise EmptySurfaceError("marching cubes found no surface at this threshold")
    return mesh


def filter_components(mesh: trimesh.Trimesh, largest_only: bool = False, min_faces: int = 0) -> trimesh.Trimesh:
    """Keep the connected component with most faces, or drop components with fewer than ``min_faces``."""
    if min_faces < 0:
        raise InputError(f"min faces must be >= 0, got {min_faces}")
    if not largest_only and min_faces <= 1:
        return mesh
    parts = mesh.split(only_watertight=False)
    if largest_only:
        parts = [max(parts, key=lambda p: len(p.faces))]
    else:
        parts = [p for p in parts if len(p.faces) >= min_faces]
        if not parts:
            raise EmptySurfaceError(f"every component has fewer than {min_faces} faces")
    return trimesh.util.concatenate(parts) if len(parts) > 1 else parts[0]


def _border_inside(values: np.ndarray, level: float) -> bool:
    faces = (values[0], values[-1], values[:, 0], values[:, -1], values[:, :, 0], values[:, :, -1])
    return any(bool((f > level).any()) for f in faces)


def _pad_outside(values: np.ndarray, level: float) -> np.ndarray:
    padded = np.full(tuple(s + 2 for s in values.shape), min(float(values.min()), level) - 1.0, np.float32)
    padded[1:-1, 1:-1, 1:-1] = values
    return padded


def _pad_cells(cells: np.ndarray | None) -> np.ndarray | None:
    """Cell mask for the padded volume: the given cells, moved by one, plus the shell of border cells."""
    if cells is None:
        return None
    padded = np.zeros(tuple(s + 2 for s in cells.shape), bool)
    padded[1:-1, 1:-1, 1:-1] = cells
    for axis in range(3):
        index = [slice(None)] * 3
        for at in (0, cells.shape[axis]):
            index[axis] = at
            padded[tuple(index)] = True
    return padded


def _upper_corner_mask(cells: np.ndarray) -> np.ndarray:
    """scikit-image's ``mask`` names a cell by its upper corner; ``cells`` name it by its lower one."""
    mask = np.zeros_like(cells)
    mask[1:, 1:, 1:] = cells[:-1, :-1, :-1]
    return mask
