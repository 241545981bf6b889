"""Inside/outside of points against a triangle mesh, by its winding number.

A closed surface winds once around the points it encloses (+1 facing out, -1 facing in) and not at all around
the others; bodies add up. So overlapping bodies are their union, touching bodies need nothing special, and
a cavity (an inward-facing shell inside another) is outside: a point is inside where |winding number| >= 1/2.

- **Closed meshes** (every body — faces joined across edges two faces share — has each edge on an even number
  of its faces): the winding number is exact and cheap. Each body contributes its ray parity (a ray along +z;
  triangles bucketed in a 2D grid across it; edge functions in canonical vertex order, so a ray through a
  shared edge or vertex counts it once) times the sign of its volume.
- **Open meshes** (holes, sheets, soups): the generalised winding number (Barill et al. 2018, "Fast Winding
  Numbers for Soups and Clouds", libigl's ``fast_winding_number``), which stays near 1 inside a surface with
  small holes. A point whose winding number lies far from a whole number has no clear side; the fraction of
  such points says whether the mesh encloses a volume at all (:data:`MAX_AMBIGUOUS`).
"""

from __future__ import annotations

from dataclasses import dataclass

import igl
import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

PAIRS_PER_CHUNK = 2_000_000
AMBIGUOUS = 0.25
"""A point whose winding number is farther than this from a whole number has no clear side."""
MAX_AMBIGUOUS = 0.05
"""Largest fraction of points without a clear side for which a mesh's labels are used (sampling refuses the
mesh beyond it, evaluation reports no IoU). Measured on training samples of a sphere: one face missing 0.01%,
three holes 0.07%, the cap above z = 0.7 gone 3.4%, above z = 0.5 6.5%, a hemisphere 15%, a soup of 100
triangles 34%, a lone square 90%."""


@dataclass(frozen=True)
class Containment:
    """Labels of the query points: ``inside (N,) bool``; ``ambiguous``, the fraction of points without a clear
    side (0 for a closed mesh); ``exact``: the mesh is closed and the labels exact."""

    inside: np.ndarray
    ambiguous: float
    exact: bool


def contains(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> Containment:
    """Label ``points (N, 3)`` inside or outside the mesh ``vertices (V, 3)``, ``faces (F, 3) int``."""
    winding, exact = winding_numbers(vertices, faces, points)
    far = np.abs(winding - np.round(winding)) > AMBIGUOUS
    return Containment(np.abs(winding) >= 0.5, float(far.mean()) if len(points) else 0.0, exact)


def winding_numbers(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, bool]:
    """The mesh's winding number at ``points (N, 3)`` -> ``(N,) float64``, and whether it is exact (closed mesh;
    else the generalised winding number). Coordinates are taken relative to the mesh's centre in float64."""
    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64).reshape(-1, 3)
    points = np.asarray(points, np.float64).reshape(-1, 3)
    if len(faces) == 0 or len(points) == 0:
        return np.zeros(len(points)), True
    centre = (vertices.min(axis=0) + vertices.max(axis=0)) / 2
    vertices, points = vertices - centre, points - centre
    body, open_ = _bodies(faces)
    if open_.any():
        return igl.fast_winding_number(vertices, np.ascontiguousarray(faces), np.ascontiguousarray(points)), False
    winding = np.zeros(len(points))
    for b in range(len(open_)):
        part = faces[body == b]
        corners = vertices[part]
        sign = np.sign(np.einsum("ij,ij->i", corners[:, 0], np.cross(corners[:, 1], corners[:, 2])).sum())
        lo, hi = corners.min(axis=(0, 1)), corners.max(axis=(0, 1))
        near = np.flatnonzero(np.all((points >= lo) & (points <= hi), axis=1))
        if sign and len(near):
            winding[near] += sign * _parity(vertices, part, points[near])
    return winding, True


def _bodies(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bodies of a mesh: faces joined across edges that exactly two faces share, so bodies that touch at an
    edge or a vertex, or overlap sharing some vertices, stay apart. Returns each face's body ``(F,) int`` and,
    per body, whether it is open (an edge on an odd number of its faces) ``(B,) bool``."""
    ends = np.sort(np.stack([faces, np.roll(faces, -1, axis=1)], axis=2).reshape(-1, 2), axis=1)
    key = ends[:, 0] * (int(faces.max()) + 1) + ends[:, 1]           # one per edge of each face: (3F,)
    order = np.argsort(key, kind="stable")
    sorted_key, face_of = key[order], order // 3
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    counts = np.diff(np.r_[starts, len(key)])
    pairs = starts[counts == 2]
    graph = sparse.coo_matrix((np.ones(len(pairs), np.int8), (face_of[pairs], face_of[pairs + 1])),
                              shape=(len(faces), len(faces)))
    body = connected_components(graph, directed=False)[1]
    # A body is open where one of its edges lies on an odd number of its faces: an edge of one face, or of
    # three or more (then counted per body); an edge of two faces joins them into one body, which has both.
    open_ = np.zeros(body.max() + 1, bool)
    open_[body[face_of[starts[counts == 1]]]] = True
    crowded = np.repeat(counts >= 3, counts)
    pairs, faces_on = np.unique(np.stack([body[face_of[crowded]], sorted_key[crowded]], axis=1), axis=0,
                                return_counts=True)
    open_[pairs[faces_on % 2 == 1, 0]] = True
    return body, open_


def _parity(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Per point, whether a ray from it along +z crosses the surface an odd number of times: ``(N,) int``."""
    axis, u, v = 2, 0, 1
    tri2 = vertices[faces][:, :, [u, v]]                      # (F, 3, 2)
    tri_a = vertices[faces][:, :, axis]                        # (F, 3)
    area = _cross2(tri2[:, 1] - tri2[:, 0], tri2[:, 2] - tri2[:, 0])
    keep = area != 0
    faces, tri2, tri_a, area = faces[keep], tri2[keep], tri_a[keep], area[keep]
    out = np.zeros(len(points), np.int64)
    if len(faces) == 0 or len(points) == 0:
        return out

    lo = np.minimum(tri2.min(axis=(0, 1)), points[:, [u, v]].min(axis=0))
    hi = np.maximum(tri2.max(axis=(0, 1)), points[:, [u, v]].max(axis=0))
    cells = int(np.clip(np.sqrt(len(faces)), 1, 2048))
    size = np.maximum((hi - lo) / cells, 1e-300)

    def cell_of(xy: np.ndarray) -> np.ndarray:
        return np.clip(((xy - lo) / size).astype(np.int64), 0, cells - 1)

    c0, c1 = cell_of(tri2.min(axis=1)), cell_of(tri2.max(axis=1))
    span = c1 - c0 + 1
    counts = span[:, 0] * span[:, 1]
    tri_of_entry = np.repeat(np.arange(len(faces)), counts)
    local = np.arange(len(tri_of_entry)) - np.repeat(np.cumsum(counts) - counts, counts)
    cu = c0[tri_of_entry, 0] + local // span[tri_of_entry, 1]
    cv = c0[tri_of_entry, 1] + local % span[tri_of_entry, 1]
    cell_id = cu * cells + cv
    order = np.argsort(cell_id, kind="stable")
    tri_sorted = tri_of_entry[order]
    start = np.searchsorted(cell_id[order], np.arange(cells * cells + 1))

    p_cell = cell_of(points[:, [u, v]])
    p_id = p_cell[:, 0] * cells + p_cell[:, 1]
    n_cand = start[p_id + 1] - start[p_id]
    bounds = np.searchsorted(np.cumsum(n_cand), np.arange(PAIRS_PER_CHUNK, n_cand.sum() + PAIRS_PER_CHUNK,
                                                          PAIRS_PER_CHUNK), side="right")
    first = 0
    for last in np.unique(np.append(bounds, len(points))):
        if last <= first:
            continue
        idx = np.arange(first, last)
        k = n_cand[idx]
        pair_point = np.repeat(idx, k)
        offset = np.arange(len(pair_point)) - np.repeat(np.cumsum(k) - k, k)
        pair_tri = tri_sorted[start[p_id[pair_point]] + offset]
        hits, above = _crossings(points[pair_point][:, [u, v]], points[pair_point, axis], faces[pair_tri],
                                 tri2[pair_tri], tri_a[pair_tri], np.sign(area[pair_tri]))
        out[idx] = np.bincount(pair_point[hits & above] - first, minlength=len(idx)) % 2
        first = last
    return out


def _crossings(p: np.ndarray, pa: np.ndarray, faces: np.ndarray, tri: np.ndarray, tri_a: np.ndarray,
               orient: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For point/triangle pairs: does the line along the axis through the point pass through the triangle,
    and is the crossing above the point (else below)?"""
    weights = []
    for i, j, opposite in ((1, 2, 0), (2, 0, 1), (0, 1, 2)):
        a_idx, b_idx = faces[:, i], faces[:, j]
        swap = a_idx > b_idx
        a = np.where(swap[:, None], tri[:, j], tri[:, i])
        b = np.where(swap[:, None], tri[:, i], tri[:, j])
        edge = _cross2(b - a, p - a)                      # canonical: same bits from either neighbour
        direction = np.where(swap, -1.0, 1.0) * orient
        w = edge * direction
        tie = (edge == 0) & (direction > 0)
        weights.append((w, (w > 0) | tie, opposite))
    inside = weights[0][1] & weights[1][1] & weights[2][1]
    w = np.stack([np.abs(x[0]) for x in sorted(weights, key=lambda x: x[2])], axis=1)
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        hit_a = (w * tri_a).sum(axis=1) / total
    return inside & (total > 0), hit_a > pa


def _cross2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
