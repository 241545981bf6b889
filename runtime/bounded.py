"""Extraction by sound bounds: only the grid cells whose bound on the network's logit straddles the level
are evaluated, so no surface is missed and little else is computed (issue 26).

Cells are the octree over the padded grid (samples ``p = 0 .. n + 1``, ``p = i + 1`` for grid index ``i``;
the pad is outside). From cells of ``TOP`` samples a side down to ``FORMS`` a side, each cell's logit is
bounded by range analysis (:mod:`.bounds`) over the real part of its box; a cell is kept when the bound
contains the level, or when it touches the pad and the bound reaches the level (the box border caps the
shape there), and its eight children are looked at next. A kept ``FORMS``-sided cell's affine form bounds
each of its grid cells at no further cost (the form holds on every sub-box); the corners of the grid cells
kept are evaluated. A grid cell whose corners change sign holds the level (the network is continuous), so
its bound straddles the level, and so do its ancestors': every cell marching cubes meshes is evaluated, and
the mesh is dense's.
"""

from __future__ import annotations

import numpy as np

from occnet.runtime.bounds import Affine, NetworkBounds
from occnet.runtime.field import BRICK, CORNERS, BrickStorage, Evaluator, Field, LogitFn, Progress
from occnet.runtime.grid import Grid

TOP = 64
"""Side (in samples) of the first cells bounded."""
FORMS = 4
"""Side of the cells whose affine forms bound their grid cells."""
BOXES_AT_ONCE = 8192
"""Boxes bounded in one pass (memory: a few KiB a box for a 64-wide network)."""
CELLS_AT_ONCE = 2**18
"""Grid cells tested in one pass."""


def bounded_field(fn: LogitFn, bounds: NetworkBounds, origin: np.ndarray, grid: Grid, level: float,
                  batch_size: int, progress: Progress | None = None, memory_limit: int | None = None) -> Field:
    """Evaluate the corners of every grid cell whose bound straddles ``level`` (see the module). ``bounds``
    reads coordinates less the model's ``origin``, as its graph does."""
    evaluate = Evaluator(fn, grid, batch_size, progress)
    storage = BrickStorage(grid.shape, level, memory_limit)
    n = np.asarray(grid.shape, np.int64)
    origin = np.asarray(origin, np.float64)
    side = TOP
    count = -(-(n + 2) // side)
    cells = np.stack(np.meshgrid(*(side * np.arange(c) for c in count), indexing="ij"), axis=-1).reshape(-1, 3)
    while True:
        lower, upper, pad, empty = _boxes(cells, side, grid, origin)
        form = _forms(bounds, lower, upper)
        keep = ~empty & _may_hold(form.centre, form.radius, pad, level)
        cells, lower, upper = cells[keep], lower[keep], upper[keep]
        if side == FORMS:
            form = Affine(form.centre[keep], form.terms[keep], form.error[keep])
            break
        side //= 2
        cells = (cells[:, None, :] + side * CORNERS[None]).reshape(-1, 3)
    kept = _grid_cells(cells, form, lower, upper, side, grid, origin, level)
    bricks = _unique_rows(kept // BRICK)                      # a grid cell [c, c + 1] lies in brick c // BRICK
    if len(bricks):
        storage.rows(bricks)
        corners = _unique_rows((kept[:, None, :] + CORNERS[None]).reshape(-1, 3))
        corners = corners[np.all((corners >= 1) & (corners <= n), axis=1)]   # pad samples are filled in
        values = evaluate(corners - 1)
        shape = np.asarray(storage.table.shape)
        on_face = corners % BRICK == 0
        for shift in CORNERS:     # a sample on a brick's face, edge or corner is also the previous bricks' there
            moved = np.all(on_face | (shift == 0), axis=1)
            owner = corners[moved] // BRICK - shift
            ok = np.all((owner >= 0) & (owner < shape), axis=1)
            rows = storage.table[owner[ok, 0], owner[ok, 1], owner[ok, 2]].astype(np.int64)
            there = rows >= 0
            local = corners[moved][ok][there] - owner[ok][there] * BRICK
            storage.values[rows[there], local[:, 0], local[:, 1], local[:, 2]] = values[moved][ok][there]
    return Field(grid, storage, evaluate.points_evaluated, evaluate.lowest, evaluate.highest)


def _unique_rows(rows: np.ndarray) -> np.ndarray:
    """The distinct rows of non-negative ``(M, 3)`` int64 coordinates, sorted (as one int64 key each: numpy's
    ``unique(axis=0)`` sorts them as records, 20x slower)."""
    if not len(rows):
        return rows.reshape(0, 3)
    span = rows.max(axis=0) + 1
    keys = np.unique((rows[:, 0] * span[1] + rows[:, 1]) * span[2] + rows[:, 2])
    return np.stack([keys // (span[1] * span[2]), keys // span[2] % span[1], keys % span[2]], axis=1)


def _may_hold(centre: np.ndarray, radius: np.ndarray, pad: np.ndarray, level: float) -> np.ndarray:
    """Whether a cell whose logit lies in ``centre +- radius`` may hold the surface: the bound contains the
    level, or reaches it in a cell on the pad (outside by definition, so an inside sample there is a cap)."""
    return (centre + radius >= level) & ((centre - radius <= level) | pad)


def _boxes(cells: np.ndarray, side: int, grid: Grid, origin: np.ndarray):
    """The real part of the cells ``[a, a + side]`` (padded sample coordinates) as boxes less ``origin``,
    whether each touches the pad, and whether it has no real part at all."""
    n = np.asarray(grid.shape, np.int64)
    first, last = np.maximum(cells, 1), np.minimum(cells + side, n)
    empty = np.any(first > last, axis=1)
    lower = grid.to_world(first - 1) - origin
    upper = grid.to_world(np.maximum(last, first) - 1) - origin
    return lower, upper, np.any((cells < 1) | (cells + side > n), axis=1), empty


def _forms(bounds: NetworkBounds, lower: np.ndarray, upper: np.ndarray) -> Affine:
    """The logit's affine forms over the boxes, a pass of ``BOXES_AT_ONCE`` at a time."""
    parts = [bounds.form(lower[s:s + BOXES_AT_ONCE], upper[s:s + BOXES_AT_ONCE])
             for s in range(0, len(lower), BOXES_AT_ONCE)]
    if not parts:
        return Affine(np.zeros(0), np.zeros((0, 3)), np.zeros(0))
    return Affine(np.concatenate([p.centre for p in parts]), np.concatenate([p.terms for p in parts]),
                  np.concatenate([p.error for p in parts]))


def _grid_cells(cells: np.ndarray, form: Affine, lower: np.ndarray, upper: np.ndarray, side: int, grid: Grid,
                origin: np.ndarray, level: float) -> np.ndarray:
    """The grid cells (padded coordinates of their first corner) inside the kept ``side``-sided ``cells`` whose
    bound, from their cell's affine ``form`` over the box ``[lower, upper]``, may hold the surface. The bound
    of a sub-box is separable: ``centre + sum_k (t_k mid_k +- |t_k| half_k) +- error`` over the axes ``k``,
    so each axis contributes a ``side``-long vector and the ``side^3`` bounds are their broadcast sums."""
    n = np.asarray(grid.shape, np.int64)
    centre, half = (lower + upper) / 2, (upper - lower) / 2
    scale = np.where(half > 0, half, 1.0)                     # an axis without extent has no terms on it
    steps = np.arange(side)
    out = []
    for start in range(0, len(cells), max(1, CELLS_AT_ONCE // side**3)):
        part = slice(start, start + max(1, CELLS_AT_ONCE // side**3))
        first_corner = cells[part][:, None, :] + steps[None, :, None]          # (C, side, 3) per axis
        first, last = np.maximum(first_corner, 1), np.minimum(first_corner + 1, n)
        empty = first > last
        pad = (first_corner < 1) | (first_corner + 1 > n)
        world_lo = np.asarray(grid.origin) + (first - 1) * grid.spacing - origin
        world_hi = np.asarray(grid.origin) + (np.maximum(last, first) - 1) * grid.spacing - origin
        unit_lo = np.clip((world_lo - centre[part][:, None]) / scale[part][:, None], -1, 1)
        unit_hi = np.clip((world_hi - centre[part][:, None]) / scale[part][:, None], -1, 1)
        terms = form.terms[part][:, None, :]
        mid = terms * (unit_lo + unit_hi) / 2                                  # (C, side, 3)
        spread = np.abs(terms) * (unit_hi - unit_lo) / 2
        total_mid = mid[:, :, None, None, 0] + mid[:, None, :, None, 1] + mid[:, None, None, :, 2]
        total_spread = spread[:, :, None, None, 0] + spread[:, None, :, None, 1] + spread[:, None, None, :, 2]
        centre_all = form.centre[part][:, None, None, None] + total_mid
        radius_all = total_spread + form.error[part][:, None, None, None]
        pad_all = pad[:, :, None, None, 0] | pad[:, None, :, None, 1] | pad[:, None, None, :, 2]
        empty_all = empty[:, :, None, None, 0] | empty[:, None, :, None, 1] | empty[:, None, None, :, 2]
        keep = ~empty_all & _may_hold(centre_all, radius_all, pad_all, level)
        which, i, j, k = np.nonzero(keep)
        out.append(cells[part][which] + np.stack([i, j, k], axis=1))
    return np.concatenate(out) if out else np.empty((0, 3), np.int64)
