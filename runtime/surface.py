"""Marching cubes on a :class:`~occnet.runtime.field.Field`: a closed mesh in world coordinates.

The field's storage hands out blocks of samples (the whole volume, or one brick with a one-sample apron); each
block is marched on the cells it owns, and the pieces are joined by merging the vertices that neighbouring
blocks both computed on their shared faces, so the result is the mesh the whole volume would give.
"""

from __future__ import annotations

import numpy as np
import trimesh
from skimage import measure

from occnet.runtime.errors import EmptySurfaceError, InputError
from occnet.runtime.field import BRICK, PAD_DEPTH, Block, Field, cell_corners, sign_change


def extract_mesh(field: Field, level: float) -> trimesh.Trimesh:
    """The ``level`` iso-surface of ``field`` (inside: value > level) as a watertight mesh.

    The volume's border counts as outside, so a surface cut by the box is closed there, by a cap on the box
    face; degenerate faces are dropped; faces wind counter-clockwise seen from outside; vertices ``(V, 3)
    float32`` are world coordinates. Raises :class:`EmptySurfaceError` when the field never crosses ``level``.
    """
    if field.highest <= level or field.lowest > level:
        side = "inside" if field.lowest > level else "outside"
        raise EmptySurfaceError(f"the field is {side} everywhere in the box at this threshold: no surface")
    pieces = [piece for block in field.storage.blocks(level) if (piece := _march(block, level)) is not None]
    if not pieces:
        raise EmptySurfaceError("marching cubes found no surface at this threshold")
    starts = np.cumsum([0] + [len(v) for v, _ in pieces])
    verts = np.concatenate([v for v, _ in pieces])
    faces = np.concatenate([f + start for (_, f), start in zip(pieces, starts)])
    # Caps closing a surface cut by the box lie between the last sample and the pad: put them on the box.
    # Vertices that then share one point in float32 grid coordinates (the copies two bricks made of a seam
    # vertex, cap vertices on the box face, vertices of a sample exactly at the level) are one vertex, as
    # scikit-image makes them on the whole volume; faces that collapse are dropped.
    n = np.array(field.grid.shape)
    verts = np.clip(verts, 0, n - 1).astype(np.float32)
    # only these can coincide: on a brick face, on the box, or on a sample (all coordinates whole numbers)
    whole = verts == np.round(verts)
    on_plane = whole & (((verts + 1) % BRICK == 0) | (verts == 0) | (verts == n - 1))
    maybe = np.flatnonzero(on_plane.any(axis=1) | whole.all(axis=1))
    _, first, inverse = np.unique(verts[maybe], axis=0, return_index=True, return_inverse=True)
    target = np.arange(len(verts))
    target[maybe] = maybe[first[inverse.reshape(-1)]]
    faces = target[faces]
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    used, faces = np.unique(faces, return_inverse=True)
    verts = verts[used]
    return trimesh.Trimesh(field.grid.to_world(verts), faces.reshape(-1, 3), process=False)


def _march(block: Block, level: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Marching cubes on ``block``: every cell if it is complete, else the cells whose 8 corners are known and
    change sign. Vertices in grid index coordinates ``(V, 3) float64``; None when nothing is meshed."""
    values, mask = block.values, None
    if not block.complete:
        cells = sign_change(cell_corners(values[None]), level)[0][0]
        if not cells.any():
            return None
        values = np.where(np.isnan(values), np.float32(level - PAD_DEPTH), values)
        mask = _upper_corner_mask(cells)
    verts, faces, _, _ = measure.marching_cubes(values, level, mask=mask, allow_degenerate=False,
                                                gradient_direction="ascent")
    if len(faces) == 0:
        return None
    return verts.astype(np.float64) + np.array(block.origin), faces.astype(np.int64)


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


def _upper_corner_mask(cells: np.ndarray) -> np.ndarray:
    """scikit-image's ``mask`` has the volume's shape and names a cell by its upper corner; ``cells (a-1, b-1,
    c-1)`` name it by its lower one."""
    mask = np.zeros(tuple(s + 1 for s in cells.shape), bool)
    mask[1:, 1:, 1:] = cells
    return mask
