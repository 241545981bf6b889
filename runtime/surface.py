"""Marching cubes on a :class:`~occnet.runtime.field.Field`: a closed mesh in world coordinates.

The field's storage hands out bricks of samples, many to a block; each brick is marched on the cells it owns,
and the pieces are joined by merging the vertices that neighbouring bricks both computed on their shared
faces, so the result is the closed mesh the whole volume gives.
"""

from __future__ import annotations

import numpy as np
import trimesh
from scipy import ndimage, sparse
from scipy.sparse.csgraph import connected_components
from skimage import measure

from occnet.runtime.errors import EmptySurfaceError, InputError
from occnet.runtime.field import BRICK, Block, Field

CHUNK = 1 << 20
"""Face indices marked at once when looking for unused vertices (bounds the int64 copy numpy makes)."""


def extract_mesh(field: Field, level: float) -> trimesh.Trimesh:
    """The ``level`` iso-surface of ``field`` (inside: value > level) as a watertight mesh (see
    :func:`surface_arrays`)."""
    return trimesh.Trimesh(*surface_arrays(field, level), process=False)


def surface_arrays(field: Field, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The ``level`` iso-surface of ``field`` (inside: value > level): vertices ``(V, 3) float64`` in world
    coordinates and faces ``(F, 3) int32``, a watertight surface.

    The volume's border counts as outside, so a surface cut by the box is closed there, by a cap on the box
    face; degenerate faces are dropped; faces wind counter-clockwise seen from outside; vertices are float32
    grid coordinates mapped through the grid in float64, so boxes far from the origin keep their precision.
    Arrays rather than a trimesh, whose reference cycles would keep each intermediate mesh in memory until
    the garbage collector runs. Raises :class:`EmptySurfaceError` when the field never crosses ``level``.
    """
    if field.highest <= level or field.lowest > level:
        side = "inside" if field.lowest > level else "outside"
        raise EmptySurfaceError(f"the field is {side} everywhere in the box at this threshold: no surface")
    pieces = [piece for block in field.storage.blocks(level) if (piece := _march(block, level)) is not None]
    if not pieces:
        raise EmptySurfaceError("marching cubes found no surface at this threshold")
    starts = np.cumsum([0] + [len(v) for v, _ in pieces])
    verts = np.concatenate([v for v, _ in pieces])
    faces = np.concatenate([f + np.int32(start) for (_, f), start in zip(pieces, starts)])
    del pieces
    # Caps closing a surface cut by the box lie between the last sample and the pad: put them on the box.
    n = np.array(field.grid.shape)
    np.clip(verts, 0, (n - 1).astype(np.float32), out=verts)
    verts, faces = _weld(verts, faces, n)
    return field.grid.to_world(verts), faces


def _weld(verts: np.ndarray, faces: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``verts (V, 3) float32`` (grid coordinates) and ``faces (F, 3) int32`` with the copies of each vertex made
    one (:func:`_first_copies`), renumbered, and the faces that collapse dropped."""
    target = _first_copies(verts, n)
    kept = target == np.arange(len(verts), dtype=np.int32)          # the first copy of each name, and the rest
    # a kept vertex's new index is the number of kept vertices before it (cumsum - 1); every copy takes the
    # new index of the first copy it points to, and each face corner the new index of its vertex
    faces = (np.cumsum(kept, dtype=np.int32) - np.int32(1))[target][faces]
    del target
    whole = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    if whole.all():
        return verts[kept], faces
    return _compact(verts[kept], np.compress(whole, faces, axis=0))     # a collapsed face's lone vertex


def _first_copies(verts: np.ndarray, n: np.ndarray) -> np.ndarray:
    """For each vertex of ``verts (V, 3) float32`` (grid coordinates), the index of the first vertex with its
    name: ``(V,) int32``.

    Every vertex lies on a grid edge, so it is named by the edge: its lower sample and the axis along which
    its coordinate is fractional (3: on the sample itself). The copies two bricks made of a seam vertex
    (bitwise equal: see ``stacked_blocks``), cap vertices on the box face and vertices of a sample at the level
    share a name. Only vertices on a brick's face or the box's, or on a sample, can have a copy: the others
    keep their own. Tests run column by column (numpy runs rows of three slowly); a function of its own, so
    that its working arrays are freed before the faces are renumbered.
    """
    lower = np.floor(verts)
    whole = verts == lower                         # per coordinate: on a sample plane, or between two
    lower = lower.astype(np.int32)
    # on a plane two bricks share, or on the box's first or last sample plane (where caps lie): brick k's
    # first sample is at grid index k * BRICK - 1 (the pad is index -1), so bricks share the planes one below
    # a multiple of BRICK, where lower + 1 is that multiple (BRICK a power of 2: the mask tests it)
    plane = whole & ((((lower + 1) & (BRICK - 1)) == 0) | (lower == 0) | (lower == n - 1))
    maybe = np.flatnonzero(plane[:, 0] | plane[:, 1] | plane[:, 2] | (whole[:, 0] & whole[:, 1] & whole[:, 2]))
    fractional = ~whole[maybe]
    axis = np.where(fractional.any(axis=1), np.argmax(fractional, axis=1), 3)
    corner = lower[maybe].astype(np.int64)
    # the edge's name as one integer: its lower sample's flat index in the (n0, n1, n2) grid, times 4, plus
    # the axis it runs along (3: the vertex is the sample itself); equal names are copies of one vertex
    key = ((corner[:, 0] * n[1] + corner[:, 1]) * n[2] + corner[:, 2]) * 4 + axis
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    target = np.arange(len(verts), dtype=np.int32)
    target[maybe] = maybe[first[inverse.reshape(-1)]]
    return target


def is_closed(faces: np.ndarray) -> bool:
    """Whether every edge of ``faces (F, 3) int`` is shared by exactly two faces (trimesh's ``is_watertight``,
    counted in a sparse matrix, without sorting)."""
    if len(faces) == 0:
        return False
    faces = _indices(faces)
    a, b = faces.reshape(-1), np.roll(faces, -1, axis=1).reshape(-1)
    size = int(faces.max()) + 1
    shared = sparse.coo_matrix((np.ones(len(a), np.int16), (np.minimum(a, b), np.maximum(a, b))),
                               shape=(size, size)).tocsr()         # duplicates summed: faces on each edge
    return bool(np.all(shared.data == 2))


def _march(block: Block, level: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Marching cubes on ``block``'s masked cells (unknown samples, NaN, lie only outside the mask): vertices in
    grid index coordinates ``(V, 3) float32``, faces ``(F, 3) int32``; None when nothing is meshed. A float32
    sum is the exact sum rounded once, so each vertex is the float32 nearest its grid position, whichever
    brick computed it."""
    verts, faces, _, _ = measure.marching_cubes(block.values, level, mask=block.mask, allow_degenerate=True,
                                                gradient_direction="ascent")
    if len(faces) == 0:
        return None
    length = block.values.shape[0] // len(block.origins)                # each box's extent along x
    box = (verts[:, 0] // length).astype(np.int64)
    verts[:, 0] -= (box * length).astype(np.float32)                    # exact: whole numbers below 2^24
    verts += block.origins[box].astype(np.float32)
    return verts, faces.astype(np.int32)


def drop_specks(verts: np.ndarray, faces: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """``verts (V, 3)`` and ``faces (F, 3) int`` without the specks: connected pieces no wider than ``size``
    along any axis (at two grid cells, a sample or two alone on their side of the level: noise below what the
    grid resolves, not a part). A mesh that is all specks is kept whole."""
    faces = _indices(faces)
    count, piece = _pieces(faces, len(verts))
    if count == 1:
        return verts, faces
    index = np.arange(count)
    extent = np.stack([ndimage.maximum(verts[:, a], piece, index) - ndimage.minimum(verts[:, a], piece, index)
                       for a in range(3)], axis=1)
    speck = np.all(extent <= size, axis=1)
    if speck.all() or not speck.any():
        return verts, faces
    return _compact(verts, faces[~speck[piece[faces[:, 0]]]])


def filter_components(verts: np.ndarray, faces: np.ndarray, largest_only: bool = False,
                      min_faces: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Keep the connected component with most faces, or drop components with fewer than ``min_faces``:
    ``verts (V, 3)`` and ``faces (F, 3) int`` in, the kept ones out."""
    if min_faces < 0:
        raise InputError(f"min faces must be >= 0, got {min_faces}")
    faces = _indices(faces)
    if not largest_only and min_faces <= 1:
        return verts, faces
    count, piece = _pieces(faces, len(verts))
    of_face = piece[faces[:, 0]]
    sizes = np.bincount(of_face, minlength=count)
    keep = sizes == sizes.max() if largest_only else sizes >= min_faces
    if largest_only:
        keep &= np.cumsum(keep) == 1                          # one piece, the first of the largest
    if not keep.any():
        raise EmptySurfaceError(f"every component has fewer than {min_faces} faces")
    return _compact(verts, faces[keep[of_face]])


def _pieces(faces: np.ndarray, vertex_count: int) -> tuple[int, np.ndarray]:
    """The connected pieces of a mesh (faces joined through shared vertices): their number and each vertex's
    piece, ``(V,) int``."""
    graph = sparse.coo_matrix((np.ones(2 * len(faces), np.int8), (faces[:, [0, 1]].reshape(-1),
                                                                  faces[:, [1, 2]].reshape(-1))),
                              shape=(vertex_count, vertex_count)).tocsr()   # scipy's own conversion is slower
    return connected_components(graph, directed=False)


def _indices(faces: np.ndarray) -> np.ndarray:
    """``faces`` as int32 (a trimesh keeps int64): half the memory for the sparse matrices built from them."""
    return np.asarray(faces).astype(np.int32, copy=False)


def _compact(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``verts`` without the ones no face uses, and ``faces (F, 3) int32`` renumbered to match (both as given
    where every vertex is used)."""
    used = np.zeros(len(verts), bool)
    flat = faces.reshape(-1)
    for start in range(0, len(flat), CHUNK):             # in chunks: an index array is copied to int64
        used[flat[start:start + CHUNK]] = True
    if used.all():
        return verts, faces
    number = np.cumsum(used, dtype=np.int32) - np.int32(1)            # new index of each vertex kept
    return verts[used], number[faces]
