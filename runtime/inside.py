"""Inside/outside of points against a closed triangle mesh: ray parity along +-x, +-y and +-z, majority vote.

trimesh's default ``contains`` casts one ray per point and took 72 s (and over 20 GB unchunked) for 100k
points on a 5,750-face mesh here. This casts axis-aligned rays instead: triangles are bucketed in a 2D
grid across the ray direction, so each point meets only the few triangles above its cell, in plain
vectorised numpy. Edge functions are computed in a canonical vertex order so a ray through a shared
edge counts it exactly once. Rays go both ways along each axis (the same candidate triangles serve both),
so six rays vote; how often they disagree measures how trustworthy the labels are (0 for a closed mesh).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAIRS_PER_CHUNK = 2_000_000


@dataclass(frozen=True)
class Containment:
    """Labels of the query points: ``inside`` ``(N,) bool``; ``disagreement`` is the fraction of points
    on which the six axis rays did not all agree."""

    inside: np.ndarray
    disagreement: float


def contains(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> Containment:
    """Label ``points`` ``(N, 3)`` inside or outside the closed mesh ``vertices (V, 3)``, ``faces (F, 3) int``."""
    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    points = np.asarray(points, np.float64)
    votes = np.zeros(len(points), np.int8)
    for axis in range(3):
        votes += _parity(vertices, faces, points, axis)
    inside = votes >= 4
    disagreement = float(np.mean((votes != 0) & (votes != 6))) if len(points) else 0.0
    return Containment(inside, disagreement)


def _parity(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray, axis: int) -> np.ndarray:
    """Per point, how many of the two rays along ``axis`` (towards + and -) cross the surface an odd
    number of times: 0, 1 or 2."""
    u, v = [a for a in range(3) if a != axis]
    tri2 = vertices[faces][:, :, [u, v]]                      # (F, 3, 2)
    tri_a = vertices[faces][:, :, axis]                        # (F, 3)
    area = _cross2(tri2[:, 1] - tri2[:, 0], tri2[:, 2] - tri2[:, 0])
    keep = area != 0
    faces, tri2, tri_a, area = faces[keep], tri2[keep], tri_a[keep], area[keep]
    out = np.zeros(len(points), np.int8)
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
        local = pair_point - first
        up = np.bincount(local[hits & above], minlength=len(idx)) % 2
        down = np.bincount(local[hits & ~above], minlength=len(idx)) % 2
        out[idx] = (up + down).astype(np.int8)
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
