"""Evaluation of an occupancy network on a grid: the field, where its samples are stored, and the two ways to
fill it — dense (every sample, the reference) and adaptive (coarse to fine, only where a surface can be).

Indices are grid sample indices ``(i, j, k)`` along (x, y, z), as in :class:`~occnet.runtime.grid.Grid`.
The volume border counts as outside: one layer of samples around the grid reads ``level - PAD_DEPTH`` (the
*pad*), so a surface cut by the box is closed there. Samples never evaluated read as NaN.

A storage holds the samples and hands them to marching cubes (:mod:`occnet.runtime.surface`) as
:class:`Block` s: :class:`DenseStorage` is one volume (the reference, memory proportional to the volume);
:class:`BrickStorage` holds ``BRICK``^3-cell bricks only where the surface can be (memory proportional to the
surface). Marching cubes reads nothing else, so a change of storage touches this module only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from occnet.runtime.errors import InputError, ResourceError
from occnet.runtime.grid import Grid
from occnet.runtime.machine import available_bytes

LogitFn = Callable[[np.ndarray], np.ndarray]
"""``(N, 3) float64`` world points -> ``(N,) float32`` logits."""
Progress = Callable[[int], None]
"""Called with the number of points evaluated so far."""

BRICK = 16
"""Cells per side of a brick (a power of two); a brick stores its ``BRICK + 1``^3 corner samples, so
neighbouring bricks share the samples of their common face."""
SAFETY = 1.5
"""How many times steeper than the typical slope at the surface the field may get near a hidden feature
(see :func:`adaptive_field`)."""
CORNERS = np.array(list(itertools.product((0, 1), repeat=3)))
"""Corner offsets of a cell in the order of :func:`cell_corners`: corner ``4 * dx + 2 * dy + dz``."""
SLOPE_QUANTILE = 0.5
"""Which quantile of the slopes measured across the surface stands for the typical slope."""
PAD_DEPTH = 1e6
"""How far below ``level`` the pad lies: far enough that no cell counts as near the surface for touching it
(a cap's vertices, between the pad and the last sample, are moved onto the box face anyway)."""


def batched(fn: Callable[[np.ndarray], np.ndarray], items: np.ndarray, batch_size: int,
            on_batch: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
    """``fn`` over ``items`` at most ``batch_size`` rows at a time -> ``(len(items),) float32``: the one batching
    loop of every network call (meshing, evaluation, export checks). Working memory is one batch, whatever the
    total; ``on_batch`` sees each batch's results."""
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    out = np.empty(len(items), np.float32)
    for start in range(0, len(items), batch_size):
        values = out[start:start + batch_size] = fn(items[start:start + batch_size])
        if on_batch:
            on_batch(values)
    return out


class Evaluator:
    """The network on grid samples, through :func:`batched`: counts the points evaluated, keeps the lowest
    and highest logit, reports progress."""

    def __init__(self, fn: LogitFn, grid: Grid, batch_size: int, progress: Progress | None = None) -> None:
        if batch_size < 1:                          # before any work (dense_field slices by it too)
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        self.fn, self.grid, self.batch_size, self.progress = fn, grid, batch_size, progress
        self.points_evaluated = 0
        self.lowest, self.highest = math.inf, -math.inf

    def __call__(self, ijk: np.ndarray) -> np.ndarray:
        """Logits at grid samples ``ijk (K, 3) int64`` -> ``(K,) float32``."""
        return batched(lambda part: self.fn(self.grid.to_world(part)), ijk, self.batch_size, self._seen)

    def _seen(self, values: np.ndarray) -> None:
        self.lowest, self.highest = min(self.lowest, float(values.min())), max(self.highest, float(values.max()))
        self.points_evaluated += len(values)
        if self.progress:
            self.progress(self.points_evaluated)


@dataclass(frozen=True)
class Block:
    """A box of samples for marching cubes: ``values (a, b, c) float32`` whose sample ``[0, 0, 0]`` is grid
    index ``origin`` (-1 where it starts with the pad). ``complete``: every sample is known and every cell is
    to be meshed; otherwise only cells with 8 known corners are (NaN: never evaluated)."""

    origin: tuple[int, int, int]
    values: np.ndarray
    complete: bool


class DenseStorage:
    """Every sample of the grid in one float32 volume: the reference, memory proportional to the volume."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.values = np.empty(shape, np.float32)

    @property
    def nbytes(self) -> int:
        return self.values.nbytes

    def blocks(self, level: float) -> Iterator[Block]:
        """One block: the whole volume, padded when a border sample is inside (a cap closes the surface)."""
        v = self.values
        border = (v[0], v[-1], v[:, 0], v[:, -1], v[:, :, 0], v[:, :, -1])
        if any(bool((face > level).any()) for face in border):
            yield Block((-1, -1, -1), np.pad(v, 1, constant_values=level - PAD_DEPTH), True)
        else:
            yield Block((0, 0, 0), v, True)


class BrickStorage:
    """Bricks of ``(BRICK + 1)^3`` float32 samples over the padded grid (index ``p = i + 1``; the pad is
    ``p = 0`` and ``p >= n + 1``), allocated where the surface can be. Brick ``b`` holds padded samples
    ``BRICK * b .. BRICK * b + BRICK`` along each axis; ``table`` (one int32 per brick of the whole grid,
    1/1024 of the grid's float32 volume) gives its row in ``values``. Pad samples are filled in on allocation."""

    def __init__(self, grid_shape: tuple[int, int, int], level: float, memory_limit: int | None = None) -> None:
        self.n = np.array(grid_shape, np.int64)
        self.level = level
        self.table = np.full(tuple(-(-(self.n + 1) // BRICK)), -1, np.int32)
        self.values = np.empty((0,) + (BRICK + 1,) * 3, np.float32)
        self.bricks = np.empty((0, 3), np.int64)
        self.count = 0
        self.memory_limit = memory_limit
        local = np.arange(BRICK + 1)
        self._pad = [(local[None, :] + BRICK * np.arange(self.table.shape[a])[:, None] == 0)
                     | (local[None, :] + BRICK * np.arange(self.table.shape[a])[:, None] >= self.n[a] + 1)
                     for a in range(3)]                  # per axis and brick: which local samples are pad

    @property
    def nbytes(self) -> int:
        return self.table.nbytes + self.values.nbytes + self.bricks.nbytes

    def rows(self, bricks: np.ndarray) -> np.ndarray:
        """Rows of ``bricks (M, 3)``, allocating the missing ones (their samples NaN, their pad filled in)."""
        rows = self.table[bricks[:, 0], bricks[:, 1], bricks[:, 2]]
        missing = np.unique(bricks[rows < 0], axis=0)
        if len(missing):
            self._allocate(missing)
            rows = self.table[bricks[:, 0], bricks[:, 1], bricks[:, 2]]
        return rows.astype(np.int64)

    def _allocate(self, bricks: np.ndarray) -> None:
        need = self.count + len(bricks)
        if need > len(self.values):
            capacity = max(need, 2 * len(self.values), 64)
            grow = (capacity - len(self.values)) * (BRICK + 1) ** 3 * 4
            have = available_bytes() if self.memory_limit is None else self.memory_limit - self.nbytes
            if have is not None and grow > have:
                raise ResourceError(f"the surface needs more memory than is available ({self.nbytes / 2**30:.1f} "
                                    "GiB in use); use a lower resolution")
            values = np.empty((capacity,) + (BRICK + 1,) * 3, np.float32)
            values[:self.count] = self.values[:self.count]
            bricks_of = np.empty((capacity, 3), np.int64)
            bricks_of[:self.count] = self.bricks[:self.count]
            self.values, self.bricks = values, bricks_of
        rows = np.arange(self.count, need)
        self.table[bricks[:, 0], bricks[:, 1], bricks[:, 2]] = rows
        self.bricks[rows] = bricks
        self.values[self.count:need] = np.nan
        edge = np.flatnonzero(np.any([self._pad[a][bricks[:, a]].any(axis=1) for a in range(3)], axis=0))
        for row, brick in zip(rows[edge], bricks[edge]):     # bricks on the border: fill in their pad
            pad = self._pad[0][brick[0]][:, None, None] | self._pad[1][brick[1]][None, :, None] \
                | self._pad[2][brick[2]][None, None, :]
            self.values[row][pad] = self.level - PAD_DEPTH
        self.count = need

    def grid_index(self, rows: np.ndarray, local: np.ndarray) -> np.ndarray:
        """Grid indices ``(M, 3)`` of samples at ``local (M, 3)`` in bricks ``rows (M,)``."""
        return self.bricks[rows] * BRICK + local - 1

    def blocks(self, level: float) -> Iterator[Block]:
        """One block per brick; a brick owns all of its cells (neighbours share samples, not cells)."""
        for row in range(self.count):
            yield Block(tuple(int(v) for v in self.bricks[row] * BRICK - 1), self.values[row], False)


@dataclass
class Field:
    """Logits on a grid, in a storage; ``points_evaluated`` counts network evaluations, ``lowest`` and
    ``highest`` are the extreme values among them."""

    grid: Grid
    storage: DenseStorage | BrickStorage
    points_evaluated: int
    lowest: float
    highest: float

    @property
    def nbytes(self) -> int:
        """Bytes the field's storage holds (its peak: storage only grows)."""
        return self.storage.nbytes


def dense_field(fn: LogitFn, grid: Grid, batch_size: int, progress: Progress | None = None) -> Field:
    """Evaluate every grid point, ``batch_size`` at a time: memory is the volume plus one batch."""
    evaluate = Evaluator(fn, grid, batch_size, progress)
    storage = DenseStorage(grid.shape)
    flat = storage.values.reshape(-1)
    for start in range(0, grid.num_points, batch_size):
        index = np.arange(start, min(start + batch_size, grid.num_points))
        flat[index] = evaluate(np.stack(np.unravel_index(index, grid.shape), axis=1))
    return Field(grid, storage, evaluate.points_evaluated, evaluate.lowest, evaluate.highest)


def adaptive_field(fn: LogitFn, grid: Grid, level: float, batch_size: int, progress: Progress | None = None,
                   memory_limit: int | None = None) -> Field:
    """Coarse-to-fine evaluation of the band where the ``level`` surface can be; gives the dense mesh.

    The corners of all bricks (a lattice every ``BRICK`` samples) are evaluated first. A cell — a brick,
    then its halves, quarters, ... down to grid cells — is split (its children's corners evaluated) when its
    corners change sign (the pad included, so caps on the box border count), or when the network's own values
    say the surface could pass through it: a corner's ``|logit - level|`` is within ``SAFETY * slope * cell
    diagonal / 2``, where ``slope`` is the typical logit change per unit length across the surface (the
    ``SLOPE_QUANTILE`` of the slopes measured on sign-changing edges of the level above). Every point of a
    cell lies within half its diagonal of a corner, so the surface is missed only where the field is more
    than ``SAFETY`` times steeper than typical: thin walls, rods and small parts between coarse samples are
    found because logits shrink towards any surface. Finally the surface is followed: every grid cell with a
    sign change among its known corners gets its other corners evaluated, across brick faces too, until
    nothing new appears, so each connected piece of the surface, once touched, is found whole.

    Nothing the size of the grid is allocated: ``memory_limit`` (default: what the machine has free) bounds
    the bricks, or :class:`ResourceError` is raised.
    """
    evaluate = Evaluator(fn, grid, batch_size, progress)
    storage = BrickStorage(grid.shape, level, memory_limit)
    n = storage.n
    spacing = grid.spacing
    # the lattice of brick corners, in padded indices; pad samples are not evaluated
    lattice_shape = tuple(s + 1 for s in storage.table.shape)
    padded = np.stack(np.meshgrid(*(BRICK * np.arange(m) for m in lattice_shape), indexing="ij"), axis=-1)
    lattice = np.full(lattice_shape, level - PAD_DEPTH, np.float32)
    real = np.all((padded >= 1) & (padded <= n), axis=-1)
    lattice[real] = evaluate(padded[real] - 1)
    corners = [c[0] for c in cell_corners(lattice[None])]             # 8 x (bricks)
    slopes = _typical_slopes(lattice[None], BRICK * spacing, level)
    keep = _may_hold_surface(corners, level, _reach(slopes, BRICK, spacing))
    rows = storage.rows(np.argwhere(keep))
    storage.values[rows, ::BRICK, ::BRICK, ::BRICK] = _brick_corners(lattice, storage.bricks[rows])
    step = BRICK
    while step > 2:
        coarse = storage.values[:storage.count, ::step, ::step, ::step]
        reach = _reach(_typical_slopes(coarse, step * spacing, level), step, spacing)
        step //= 2
        _evaluate_children(storage, evaluate, cell_corners(coarse), reach, step)
    _evaluate_grid_samples(storage, evaluate, _typical_slopes(storage.values[:storage.count, ::2, ::2, ::2],
                                                               2 * spacing, level), spacing)
    _follow_surface(storage, evaluate)
    return Field(grid, storage, evaluate.points_evaluated, evaluate.lowest, evaluate.highest)


def _reach(slopes: tuple[float, float], step: int, spacing: float) -> tuple[float, float]:
    """How far (in logits) from ``level`` an inside and an outside corner of a ``step``-sided cell may be with
    the surface passing through the cell."""
    half_diagonal = step * spacing * math.sqrt(3) / 2
    return SAFETY * slopes[0] * half_diagonal, SAFETY * slopes[1] * half_diagonal


def cell_corners(v: np.ndarray) -> list[np.ndarray]:
    """Corner values of the cells of lattices ``v (K, a, b, c)``: 8 views ``(K, a-1, b-1, c-1)``, corner
    ``4 * dx + 2 * dy + dz`` (no copy: the callers reduce over them one at a time)."""
    a, b, c = (s - 1 for s in v.shape[1:])
    return [v[:, dx:dx + a, dy:dy + b, dz:dz + c] for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)]


def any_of(views: list[np.ndarray]) -> np.ndarray:
    """Element-wise OR of boolean arrays."""
    out = views[0].copy()
    for view in views[1:]:
        out |= view
    return out


def all_of(views: list[np.ndarray]) -> np.ndarray:
    """Element-wise AND of boolean arrays."""
    out = views[0].copy()
    for view in views[1:]:
        out &= view
    return out


def sign_change(corners: list[np.ndarray], level: float) -> tuple[np.ndarray, np.ndarray]:
    """Cells (corner values: 8 views, NaN unknown) whose 8 corners are known and not all on one side of
    ``level``, and cells whose 8 corners are known: two boolean arrays."""
    inside = [c > level for c in corners]
    known = all_of([c == c for c in corners])
    return any_of(inside) & ~all_of(inside) & known, known


def _near(corner: np.ndarray, level: float, reach: tuple[float, float]) -> np.ndarray:
    """Corner values within ``reach[0]`` above or ``reach[1]`` below ``level`` (NaN: False)."""
    with np.errstate(invalid="ignore"):
        return (corner > level - reach[1]) & (corner < level + reach[0])


def _may_hold_surface(corners: list[np.ndarray], level: float, reach: tuple[float, float]) -> np.ndarray:
    """Cells (corner values: 8 views) that change sign or have an inside corner within ``reach[0]`` or an
    outside one within ``reach[1]`` of ``level``; a cell with an unknown corner (its parent was not split) is
    not split either."""
    change, known = sign_change(corners, level)
    return change | (any_of([_near(c, level, reach) for c in corners]) & known)


def _mark_corners(need: np.ndarray, cells: np.ndarray, stride: int, origin=(0, 0, 0)) -> None:
    """``need (K, ...) |=`` the 8 corners of the unit cells ``cells (K, m, m, m)`` marks, the cell ``(i, j, k)``
    having its lowest corner at ``origin + stride * (i, j, k)`` on ``need``'s lattice."""
    m = cells.shape[1]
    for offset in CORNERS:
        x, y, z = np.add(origin, offset)
        need[:, x:x + stride * m:stride, y:y + stride * m:stride, z:z + stride * m:stride] |= cells


def _typical_slopes(v: np.ndarray, length: float, level: float) -> tuple[float, float]:
    """The typical logit change per unit length just inside and just outside the surface: the
    ``SLOPE_QUANTILE`` of |difference| / ``length`` over lattice edges of ``v (K, a, b, c)`` that end at a sample
    next to the surface (its other neighbour on that line lies across ``level``) and stay on its side. A side
    with no such edge takes the other's; where the lattice shows no surface at all, the network has said
    nothing yet and every cell is split (infinite slope)."""
    found: tuple[list, list] = ([], [])
    for axis in range(1, 4):
        a, b, c = (_along(v, axis, k, v.shape[axis] - 2 + k) for k in range(3))
        ia, ib, ic = a > level, b > level, c > level
        for far, side_far, other, side_other in ((a, ia, c, ic), (c, ic, a, ia)):
            edge = np.abs(far - b)
            known = (edge < PAD_DEPTH / 2) & (np.abs(other - level) < PAD_DEPTH / 2)   # NaN compares False
            for side, wanted in ((0, True), (1, False)):
                found[side].append(edge[known & (ib == wanted) & (side_far == wanted) & (side_other != wanted)])
    slopes = [float(np.quantile(e, SLOPE_QUANTILE)) / length if len(e) else None
              for e in (np.concatenate(found[0]), np.concatenate(found[1]))]
    inside, outside = slopes
    inside, outside = (inside if inside is not None else outside), (outside if outside is not None else inside)
    return (math.inf if inside is None else inside), (math.inf if outside is None else outside)


def _along(v: np.ndarray, axis: int, start: int, stop: int) -> np.ndarray:
    """``v`` sliced ``start:stop`` along ``axis`` (a view)."""
    index = [slice(None)] * v.ndim
    index[axis] = slice(start, stop)
    return v[tuple(index)]


def _brick_corners(lattice: np.ndarray, bricks: np.ndarray) -> np.ndarray:
    """The lattice values at the 8 corners of each brick: ``(M, 2, 2, 2)``."""
    out = np.empty((len(bricks), 2, 2, 2), np.float32)
    for dx, dy, dz in CORNERS:
        out[:, dx, dy, dz] = lattice[bricks[:, 0] + dx, bricks[:, 1] + dy, bricks[:, 2] + dz]
    return out


def _evaluate_children(storage: BrickStorage, evaluate: Evaluator, corners: list[np.ndarray],
                       reach: tuple[float, float], step: int) -> None:
    """Split cells (corner values: 8 views ``(K, m, m, m)``) into children of side ``step``: all eight where the
    corners change sign; elsewhere the child at corner ``c`` where ``c``'s logit is within ``reach`` of the
    level (every point of that child lies within half the parent's diagonal of ``c``; the other children
    are farther from ``c`` than its logit allows, and nearer their own corners, which allow nothing)."""
    level, count, m = storage.level, storage.count, corners[0].shape[1]
    change, known = sign_change(corners, level)
    need = np.zeros((count,) + (2 * m + 1,) * 3, bool)
    for octant, corner in zip(CORNERS, corners):
        _mark_corners(need, change | (_near(corner, level, reach) & known), 2, octant)
    values = storage.values[:count, ::step, ::step, ::step]
    _evaluate_where(storage, evaluate, np.arange(count), need & np.isnan(values), step)


def _evaluate_grid_samples(storage: BrickStorage, evaluate: Evaluator, slopes: tuple[float, float],
                           spacing: float) -> None:
    """The last split, of cells of side 2 into grid cells, whose new corners are grid samples themselves: all
    of them in cells that change sign; elsewhere only those the corner logits allow across the level, i.e.
    the samples ``x`` with ``|v_i - level| <= SAFETY * slope * |x - c_i|`` at every corner ``c_i`` (the surface
    reaches a sample only through ground the slope can cover from every corner)."""
    level, count = storage.level, storage.count
    corners = cell_corners(storage.values[:count, ::2, ::2, ::2])
    change, _ = sign_change(corners, level)
    need = np.zeros((count,) + (BRICK + 1,) * 3, bool)
    for octant in CORNERS:                                          # every child of a cell that changes sign
        _mark_corners(need, change, 2, octant)
    near = _may_hold_surface(corners, level, _reach(slopes, 2, spacing)) & ~change
    rows, i, j, k = np.nonzero(near)
    if len(rows):
        values = np.stack([c[rows, i, j, k] for c in corners], axis=1)                  # (M, 8)
        allowance = np.where(values > level, SAFETY * slopes[0], SAFETY * slopes[1]) * spacing
        reach = (np.abs(values - level) / allowance).astype(np.float32)  # how far (in samples) each corner says
        lower = 2 * np.stack([i, j, k], axis=1)
        for offset in itertools.product(range(3), repeat=3):
            if all(o != 1 for o in offset):
                continue                                                  # a corner: known already
            distance = np.linalg.norm(np.array(offset) - 2 * CORNERS, axis=1).astype(np.float32)
            feasible = np.flatnonzero(np.all(reach <= distance, axis=1))
            local = lower[feasible] + offset
            need[rows[feasible], local[:, 0], local[:, 1], local[:, 2]] = True
    _evaluate_where(storage, evaluate, np.arange(count), need & np.isnan(storage.values[:count]), 1)


def _evaluate_where(storage: BrickStorage, evaluate: Evaluator, rows: np.ndarray, mask: np.ndarray,
                    step: int) -> None:
    """Evaluate the samples ``mask (K, a, b, c)`` marks on the step-``step`` lattice of bricks ``rows (K,)``."""
    which, *local = np.nonzero(mask)
    if len(which) == 0:
        return
    rows = rows[which]
    local = np.stack(local, axis=1) * step
    storage.values[rows, local[:, 0], local[:, 1], local[:, 2]] = evaluate(storage.grid_index(rows, local))


def _follow_surface(storage: BrickStorage, evaluate: Evaluator) -> None:
    """Evaluate the unknown corners of every grid cell whose known corners change sign, in every brick, then
    carry known samples of brick faces crossed by the surface into the neighbouring bricks, until nothing
    new appears."""
    level = storage.level
    work = np.arange(storage.count)
    while len(work):
        while len(work):
            # all rows (the first pass): a view, not a copy of every brick
            v = storage.values[:storage.count] if len(work) == storage.count else storage.values[work]
            known = ~np.isnan(v)
            inside = v > level
            grow = (any_of(cell_corners(inside)) & any_of(cell_corners(~inside & known))
                    & ~all_of(cell_corners(known)))
            need = np.zeros_like(known)
            _mark_corners(need, grow, 1)
            need &= ~known
            changed = need.any(axis=(1, 2, 3))
            _evaluate_where(storage, evaluate, work[changed], need[changed], 1)
            work = work[changed]
        work = _cross_faces(storage)


def _cross_faces(storage: BrickStorage) -> np.ndarray:
    """Copy the known samples of every brick face that the surface crosses (two neighbouring known samples on
    both sides of ``level``) into the neighbouring brick, allocating it; returns the rows that gained samples."""
    level = storage.level
    gained = []
    for axis in range(3):
        for side, other in ((BRICK, 0), (0, BRICK)):
            face = np.take(storage.values[:storage.count], side, axis=axis + 1)       # (K, 17, 17)
            known = ~np.isnan(face)
            inside = face > level
            crossed = ((inside[:, 1:] != inside[:, :-1]) & known[:, 1:] & known[:, :-1]).any(axis=(1, 2)) \
                | ((inside[:, :, 1:] != inside[:, :, :-1]) & known[:, :, 1:] & known[:, :, :-1]).any(axis=(1, 2))
            rows = np.flatnonzero(crossed)
            step = np.zeros(3, np.int64)
            step[axis] = 1 if side == BRICK else -1
            target = storage.bricks[rows] + step
            ok = np.all((target >= 0) & (target < np.array(storage.table.shape)), axis=1)
            rows, target = rows[ok], target[ok]
            if not len(rows):
                continue
            faces = face[rows]
            neighbours = storage.rows(target)
            index = [neighbours, slice(None), slice(None), slice(None)]
            index[axis + 1] = other                                   # the neighbours' facing sides only
            theirs = storage.values[tuple(index)]
            fill = np.isnan(theirs) & ~np.isnan(faces)
            if not fill.any():
                continue
            theirs[fill] = faces[fill]
            storage.values[tuple(index)] = theirs
            gained.append(neighbours[fill.any(axis=(1, 2))])
    return np.unique(np.concatenate(gained)) if gained else np.zeros(0, np.int64)
