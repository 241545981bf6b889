"""Extraction by sound bounds: the network is evaluated only where a sound bound of its logit cannot say on
which side of the level a sample lies, and at the corners of the cells the surface crosses, so no surface is
missed and little else is computed (issue 26).

Cells are the octree over the padded grid (samples ``p = 0 .. n + 1``, ``p = i + 1`` for grid index ``i``;
the pad is outside). From cells of ``TOP`` samples a side down to ``FORMS`` a side, each cell's logit is
bounded by range analysis (:mod:`.bounds`) over the real part of its box. A cell is kept when the bound
contains the level, or when it touches the pad and the bound reaches the level (the box border caps the
shape there), and its eight children are looked at next; a cell ruled out gives the side of every sample
in its closed box. Children are first bounded by their parent's affine form (it holds on every sub-box, at
no cost) and get forms of their own only where that does not rule them out. A kept ``FORMS``-sided cell's
form bounds each of its grid cells and each of its samples the same way.

The samples that matter are the corners of the grid cells kept: a cell marching cubes meshes has corners on
both sides of the level, so its bound straddles the level, and so do its ancestors'. Of those corners, the
ones no bound places are evaluated first; the cells whose corners then lie on both sides are the surface's,
and their corners not yet evaluated are evaluated next. Marching cubes reads only cells whose eight values
are known, so the mesh is dense's: the cells left out have all their corners on one side.
"""

from __future__ import annotations

import numpy as np

from occnet.runtime.bounds import Affine, NetworkBounds
from occnet.runtime.field import BRICK, CORNERS, BrickStorage, Evaluator, Field, LogitFn, Progress
from occnet.runtime.grid import Grid

TOP = 64
"""Side (in samples) of the first cells bounded."""
FORMS = 4
"""Side of the cells whose affine forms bound their grid cells and samples."""
BOXES_AT_ONCE = 8192
"""Boxes bounded in one pass (memory: a few KiB a box for a 64-wide network)."""
CELLS_AT_ONCE = 2**18
"""Grid cells (or samples) tested in one pass."""


def bounded_field(fn: LogitFn, bounds: NetworkBounds, origin: np.ndarray, grid: Grid, level: float,
                  batch_size: int, progress: Progress | None = None, memory_limit: int | None = None) -> Field:
    """Evaluate the samples of the cells that may hold ``level`` whose side no bound gives, then the corners of
    the cells the surface crosses (see the module). ``bounds`` reads coordinates less the model's ``origin``,
    as its graph does."""
    evaluate = Evaluator(fn, grid, batch_size, progress)
    storage = BrickStorage(grid.shape, level, memory_limit)
    origin = np.asarray(origin, np.float64)
    cells, form, ruled_out = _kept_cells(bounds, origin, grid, level)
    kept = _grid_cells(cells, form, grid, origin, level)
    samples = _unique_rows((kept[:, None, :] + CORNERS[None]).reshape(-1, 3))
    n = np.asarray(grid.shape, np.int64)
    real = np.all((samples >= 1) & (samples <= n), axis=1)
    side = np.where(real, _sides(samples, cells, form, ruled_out, grid, origin, level), -1)   # the pad: outside
    values = np.full(len(samples), np.nan, np.float32)
    first = side == 0
    if first.any():
        values[first] = evaluate(samples[first] - 1)
        side[first] = np.where(values[first] > level, 1, -1)
    keys = _keys(samples, grid)
    crossed = _crossed(kept, keys, side, grid)
    need = np.zeros(len(samples), bool)
    need[np.searchsorted(keys, _keys((crossed[:, None, :] + CORNERS[None]).reshape(-1, 3), grid))] = True
    need &= real
    missing = need & np.isnan(values)
    if missing.any():
        values[missing] = evaluate(samples[missing] - 1)
    _store(storage, crossed, samples[need], values[need])
    return Field(grid, storage, evaluate.points_evaluated, evaluate.lowest, evaluate.highest)


def _kept_cells(bounds: NetworkBounds, origin: np.ndarray, grid: Grid, level: float):
    """The octree down to ``FORMS``: the kept ``FORMS``-sided cells ``(C, 3)`` (padded coordinates of their
    first sample), their forms, and per side the cells ruled out: ``{side: (cells (R, 3), inside (R,) bool)}``."""
    n = np.asarray(grid.shape, np.int64)
    side = TOP
    count = -(-(n + 2) // side)
    cells = np.stack(np.meshgrid(*(side * np.arange(c) for c in count), indexing="ij"), axis=-1).reshape(-1, 3)
    parent = None
    ruled_out = {}
    while True:
        lower, upper, pad, empty = _boxes(cells, side, grid, origin)
        if parent is None:
            form = _forms(bounds, lower, upper)
        else:                         # the parent's form first: children it rules out need no form of their own
            inherited = _restricted(*parent, lower, upper)
            open_ = _may_hold(inherited.centre, inherited.radius, pad, level)
            form = inherited
            if open_.any():
                own = _forms(bounds, lower[open_], upper[open_])
                form = Affine(inherited.centre.copy(), inherited.terms.copy(), inherited.error.copy())
                form.centre[open_], form.terms[open_], form.error[open_] = own.centre, own.terms, own.error
        keep = ~empty & _may_hold(form.centre, form.radius, pad, level)
        out = ~empty & ~keep
        ruled_out[side] = (cells[out], form.centre[out] - form.radius[out] > level)
        cells, lower, upper = cells[keep], lower[keep], upper[keep]
        form = Affine(form.centre[keep], form.terms[keep], form.error[keep])
        if side == FORMS:
            return (cells, lower, upper), form, ruled_out
        parent = (np.repeat(form.centre, 8), np.repeat(form.terms, 8, axis=0), np.repeat(form.error, 8),
                  np.repeat(lower, 8, axis=0), np.repeat(upper, 8, axis=0))
        side //= 2
        cells = (cells[:, None, :] + side * CORNERS[None]).reshape(-1, 3)


def _restricted(centre, terms, error, lower, upper, sub_lower, sub_upper) -> Affine:
    """Forms over boxes ``[lower, upper]`` (``centre (B,)``, ``terms (B, 3)``, ``error (B,)``) restricted to
    sub-boxes ``[sub_lower, sub_upper]``: the same bound, its unit variables rescaled to the sub-box."""
    middle, half = (lower + upper) / 2, (upper - lower) / 2
    scale = np.where(half > 0, half, 1.0)                     # an axis without extent has no terms on it
    unit_lo = np.clip((sub_lower - middle) / scale, -1, 1)
    unit_hi = np.clip((sub_upper - middle) / scale, -1, 1)
    return Affine(centre + (terms * (unit_lo + unit_hi) / 2).sum(axis=1), terms * (unit_hi - unit_lo) / 2,
                  error)


def _keys(rows: np.ndarray, grid: Grid) -> np.ndarray:
    """One int64 per padded sample or cell ``rows (M, 3)``, ordered as the rows sort."""
    span = np.asarray(grid.shape, np.int64) + 2
    return (rows[:, 0] * span[1] + rows[:, 1]) * span[2] + rows[:, 2]


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


def _lattice_bounds(cells, form: Affine, grid: Grid, origin: np.ndarray, steps: np.ndarray, width: int):
    """Bounds of the logit, from each kept cell's ``form``, over the boxes ``[a + s, a + s + width]`` (padded
    samples, clipped to the real grid) for ``s`` in ``steps`` along each axis, a pass at a time. The bound of a
    sub-box is separable: ``centre + sum_k (t_k mid_k +- |t_k| half_k) +- error`` over the axes ``k``, so
    each axis contributes a vector and the boxes' bounds are their broadcast sums. Yields ``(part, centre,
    radius, pad, empty)``: the cells' slice and ``(C, m, m, m)`` arrays for ``m = len(steps)``."""
    first_cells, lower, upper = cells
    n = np.asarray(grid.shape, np.int64)
    middle, half = (lower + upper) / 2, (upper - lower) / 2
    scale = np.where(half > 0, half, 1.0)
    at_once = max(1, CELLS_AT_ONCE // len(steps) ** 3)
    for start in range(0, len(first_cells), at_once):
        part = slice(start, start + at_once)
        box_first = first_cells[part][:, None, :] + steps[None, :, None]          # (C, m, 3) per axis
        first, last = np.maximum(box_first, 1), np.minimum(box_first + width, n)
        empty = first > last
        pad = (box_first < 1) | (box_first + width > n)
        world_lo = np.asarray(grid.origin) + (first - 1) * grid.spacing - origin
        world_hi = np.asarray(grid.origin) + (np.maximum(last, first) - 1) * grid.spacing - origin
        unit_lo = np.clip((world_lo - middle[part][:, None]) / scale[part][:, None], -1, 1)
        unit_hi = np.clip((world_hi - middle[part][:, None]) / scale[part][:, None], -1, 1)
        terms = form.terms[part][:, None, :]
        mid = terms * (unit_lo + unit_hi) / 2
        spread = np.abs(terms) * (unit_hi - unit_lo) / 2
        centre = form.centre[part][:, None, None, None] + _outer_sum(mid)
        radius = _outer_sum(spread) + form.error[part][:, None, None, None]
        yield part, centre, radius, _outer_any(pad), _outer_any(empty)


def _outer_sum(v: np.ndarray) -> np.ndarray:
    """``(C, m, 3) -> (C, m, m, m)``: ``v[:, i, 0] + v[:, j, 1] + v[:, k, 2]``."""
    return v[:, :, None, None, 0] + v[:, None, :, None, 1] + v[:, None, None, :, 2]


def _outer_any(v: np.ndarray) -> np.ndarray:
    """``(C, m, 3) bool -> (C, m, m, m)``: ``v[:, i, 0] | v[:, j, 1] | v[:, k, 2]``."""
    return v[:, :, None, None, 0] | v[:, None, :, None, 1] | v[:, None, None, :, 2]


def _grid_cells(cells, form: Affine, grid: Grid, origin: np.ndarray, level: float) -> np.ndarray:
    """The grid cells (padded coordinates of their first corner) inside the kept ``FORMS``-sided ``cells`` whose
    bound, from their cell's form, may hold the surface."""
    out = []
    for part, centre, radius, pad, empty in _lattice_bounds(cells, form, grid, origin, np.arange(FORMS), 1):
        which, i, j, k = np.nonzero(~empty & _may_hold(centre, radius, pad, level))
        out.append(cells[0][part][which] + np.stack([i, j, k], axis=1))
    return np.concatenate(out) if out else np.empty((0, 3), np.int64)


def _sides(samples: np.ndarray, cells, form: Affine, ruled_out: dict, grid: Grid, origin: np.ndarray,
           level: float) -> np.ndarray:
    """The side of the level each real sample ``(M, 3)`` (padded, sorted) lies on by some bound: 1 above, -1
    below, 0 where none says. A sample's bounds are those of the kept ``FORMS``-sided cells' forms at the
    sample itself, and those of the cells ruled out whose closed box holds it (it lies on their face)."""
    keys = _keys(samples, grid)
    side = np.zeros(len(samples), np.int8)
    for part, centre, radius, _, empty in _lattice_bounds(cells, form, grid, origin, np.arange(FORMS + 1), 0):
        which, i, j, k = np.nonzero(~empty & ((centre - radius > level) | (centre + radius < level)))
        at, found = _find(keys, _keys(cells[0][part][which] + np.stack([i, j, k], axis=1), grid))
        side[at[found]] = np.where(centre[which, i, j, k][found] > level, 1, -1)
    for width, (out, inside) in ruled_out.items():
        order = np.argsort(_keys(out, grid))
        out_keys, out_inside = _keys(out, grid)[order], inside[order]
        on_face = samples % width == 0
        for shift in CORNERS:          # the boxes before the sample along each axis it lies on a face of, if any
            ask = np.flatnonzero((side == 0) & np.all(on_face | (shift == 0), axis=1))
            at, found = _find(out_keys, _keys((samples[ask] - shift) // width * width, grid))
            side[ask[found]] = np.where(out_inside[at[found]], 1, -1)
    return side


def _find(keys: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of ``query`` is in the sorted ``keys``, and whether it is there at all."""
    at = np.minimum(np.searchsorted(keys, query), max(len(keys) - 1, 0))
    return at, keys[at] == query if len(keys) else np.zeros(len(query), bool)


def _crossed(kept: np.ndarray, keys: np.ndarray, side: np.ndarray, grid: Grid) -> np.ndarray:
    """The kept grid cells whose corners lie on both sides: ``side`` of the samples with sorted ``keys``, which
    hold every corner of ``kept``. These are the cells marching cubes meshes."""
    above = np.zeros(len(kept), np.int8)
    for corner in CORNERS:
        above += side[np.searchsorted(keys, _keys(kept + corner, grid))] > 0
    return kept[(above > 0) & (above < 8)]


def _store(storage: BrickStorage, cells: np.ndarray, samples: np.ndarray, values: np.ndarray) -> None:
    """Write the values of ``samples (M, 3)`` (padded) into the bricks that hold ``cells``: a grid cell
    ``[c, c + 1]`` lies in brick ``c // BRICK``, and a sample on a brick's face, edge or corner belongs to the
    bricks before it there too."""
    bricks = _unique_rows(cells // BRICK)
    if not len(bricks):
        return
    storage.rows(bricks)
    shape = np.asarray(storage.table.shape)
    on_face = samples % BRICK == 0
    for shift in CORNERS:
        moved = np.all(on_face | (shift == 0), axis=1)
        owner = samples[moved] // BRICK - shift
        ok = np.all((owner >= 0) & (owner < shape), axis=1)
        rows = storage.table[owner[ok, 0], owner[ok, 1], owner[ok, 2]].astype(np.int64)
        there = rows >= 0
        local = samples[moved][ok][there] - owner[ok][there] * BRICK
        storage.values[rows[there], local[:, 0], local[:, 1], local[:, 2]] = values[moved][ok][there]
