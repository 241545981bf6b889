"""Evaluation of an occupancy network on a grid: the field, where its samples are stored, and the two ways to
fill it — dense (every sample, the reference) and adaptive (coarse to fine, only where a surface can be).

Indices are grid sample indices ``(i, j, k)`` along (x, y, z), as in :class:`~occnet.runtime.grid.Grid`.
The volume border counts as outside: one layer of samples around the grid reads ``level - PAD_DEPTH`` (the
*pad*), so a surface cut by the box is closed there. Samples never evaluated read as NaN.

A storage holds the samples and hands them to marching cubes (:mod:`occnet.runtime.surface`) as
:class:`Block` s of ``BRICK``^3-cell bricks (:func:`stacked_blocks`): :class:`DenseStorage` is one volume (the
reference, memory proportional to the volume) cut into bricks as it is marched; :class:`BrickStorage` holds
bricks only where the surface can be (memory proportional to the surface). Marching cubes reads nothing
else, so a change of storage touches this module only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from occnet.runtime.errors import InputError, ResourceError
from occnet.runtime.grid import Grid
from occnet.runtime.machine import Memory, available_memory

LogitFn = Callable[[np.ndarray], np.ndarray]
"""``(N, 3) float64`` world points -> ``(N,) float32`` logits."""
Progress = Callable[[int], None]
"""Called with the number of points evaluated so far."""

BRICK = 16
"""Cells per side of a brick (a power of two); a brick stores its ``BRICK + 1``^3 corner samples, so
neighbouring bricks share the samples of their common face."""
STACK = 16
"""Bricks handed to marching cubes at once, stacked along x (one call for up to ``STACK`` bricks)."""
SAFETY = 2.0
"""How many times steeper than the typical slope at the surface the field may get near a hidden feature
(see :func:`adaptive_field`)."""
CORNERS = np.array(list(itertools.product((0, 1), repeat=3)))
"""Corner offsets ``(dx, dy, dz)`` of a cell."""
EDGES = [(a, b) for a, b in itertools.combinations(range(8), 2) if np.abs(CORNERS[a] - CORNERS[b]).sum() == 1]
"""The 12 edges of a cell, as pairs of indices into ``CORNERS``."""
OFFSETS = np.array([o for o in itertools.product(range(3), repeat=3) if 1 in o])
"""The 19 grid samples of a cell of side 2 that are not its corners, as offsets from its lowest corner."""
OFFSET_DISTANCES = np.linalg.norm(OFFSETS[:, None, :] - 2 * CORNERS[None], axis=2).astype(np.float32)
"""``(19, 8)``: distance in samples from each of ``OFFSETS`` to each corner."""
SIZE = BRICK + 1
"""Samples per side of a brick."""
OFFSETS_FLAT = OFFSETS @ np.array([SIZE * SIZE, SIZE, 1])
"""``OFFSETS`` as flat offsets within a brick's ``(SIZE, SIZE, SIZE)`` samples."""
CORNERS_FLAT = CORNERS @ np.array([SIZE * SIZE, SIZE, 1])
"""The corners of a cell of side 1 as flat offsets from its lowest corner within a brick."""
FARTHEST = float(OFFSET_DISTANCES.max())
"""The farthest any of ``OFFSETS`` lies from a corner: a corner whose logit allows less reach than this allows
none of them."""
CELLS_AT_ONCE = 65536
"""Cells weighed at once by the split rules (bounds their working arrays to a few MiB)."""
SLOPE_EDGES = 1024
"""The most crossing lattice edges the slope at the surface is measured on (see :func:`_surface_slopes`)."""
SAMPLE_EDGES = 1024
"""The fewest crossing edges a sample of bricks must hold for the slopes across a lattice (see
:func:`_brick_slopes`)."""
SLOPE_BRICKS = 512
"""The bricks the slopes across a level's lattice are first measured on, doubled until they hold
``SAMPLE_EDGES`` crossing edges (see :func:`_brick_slopes`)."""
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
    """Bricks of samples for marching cubes, stacked along x: ``values (STACK * (BRICK + 1), BRICK + 1, BRICK + 1)
    float32`` holds ``STACK`` bricks (NaN: unknown, or no brick in that place), brick ``t``'s sample ``[0, 0, 0]``
    being grid index ``origins[t]`` (``(STACK, 3) int64``; -1 where it starts with the pad). ``mask`` is
    scikit-image's: the cells to mesh (8 known corners that change sign), each named by its upper corner, so a
    cell straddling two bricks is never named."""

    values: np.ndarray
    origins: np.ndarray
    mask: np.ndarray


def stacked_blocks(bricks: np.ndarray, fetch: Callable[[np.ndarray], np.ndarray], level: float) -> Iterator[Block]:
    """The bricks ``(M, 3)`` (brick coordinates over the padded grid) as :class:`Block` s, their samples read by
    ``fetch(indices into bricks) -> (K, BRICK + 1, BRICK + 1, BRICK + 1) float32``. A brick's place in its stack
    is fixed by its x coordinate (``x % STACK``), so the two bricks that share a face across y or z stand at
    the same height along x and compute their shared vertices with the same float32 rounding: the seams join
    exactly, and dense and adaptive fields give the same vertices."""
    place = bricks[:, 0] % STACK
    by_place = np.argsort(place, kind="stable")
    counts = np.bincount(place, minlength=STACK)
    rank = np.empty(len(bricks), np.int64)                  # how many bricks of the same place come before
    rank[by_place] = np.arange(len(bricks)) - np.repeat(np.cumsum(counts) - counts, counts)
    order = np.argsort(rank, kind="stable")
    for members in np.split(order, np.cumsum(np.bincount(rank))[:-1]):
        values = np.full((STACK, SIZE, SIZE, SIZE), np.nan, np.float32)
        values[place[members]] = fetch(members)
        cells = crossing_cells(values, level)[0]
        if not cells.any():
            continue
        mask = np.zeros(values.shape, bool)
        mask[:, 1:, 1:, 1:] = cells
        origins = np.zeros((STACK, 3), np.int64)
        origins[place[members]] = bricks[members] * BRICK - 1
        yield Block(values.reshape(-1, SIZE, SIZE), origins, mask.reshape(-1, SIZE, SIZE))


def brick_grid_shape(grid_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Bricks per axis that cover the padded grid (samples ``p = 0 .. n + 1``, the cells between them)."""
    return tuple(-(-(n + 1) // BRICK) for n in grid_shape)


class DenseStorage:
    """Every sample of the grid in one float32 volume: the reference, memory proportional to the volume."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.values = np.empty(shape, np.float32)

    @property
    def nbytes(self) -> int:
        return self.values.nbytes

    def blocks(self, level: float) -> Iterator[Block]:
        """Every brick of the padded volume, marched as the bricks of :class:`BrickStorage` are."""
        counts = brick_grid_shape(self.values.shape)
        bricks = np.stack(np.meshgrid(*(np.arange(c) for c in counts), indexing="ij"), axis=-1).reshape(-1, 3)
        yield from stacked_blocks(bricks, lambda rows: self._brick_values(bricks[rows], level), level)

    def _brick_values(self, bricks: np.ndarray, level: float) -> np.ndarray:
        """The ``(BRICK + 1)^3`` samples of each brick, the pad (and beyond) at ``level - PAD_DEPTH``."""
        out = np.full((len(bricks), SIZE, SIZE, SIZE), level - PAD_DEPTH, np.float32)
        n = np.array(self.values.shape)
        for brick, start in zip(out, bricks * BRICK - 1):           # grid index of the brick's first sample
            lo, hi = np.maximum(start, 0), np.minimum(start + SIZE, n)
            if np.all(hi > lo):
                brick[tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))] = \
                    self.values[tuple(slice(a, b) for a, b in zip(lo, hi))]
        return out


class BrickStorage:
    """Bricks of ``(BRICK + 1)^3`` float32 samples over the padded grid (index ``p = i + 1``; the pad is
    ``p = 0`` and ``p >= n + 1``), allocated where the surface can be. Brick ``b`` holds padded samples
    ``BRICK * b .. BRICK * b + BRICK`` along each axis; ``table`` (one int32 per brick of the whole grid,
    1/1024 of the grid's float32 volume) gives its row in ``values``. Pad samples are filled in on allocation."""

    def __init__(self, grid_shape: tuple[int, int, int], level: float, memory_limit: int | None = None) -> None:
        self.n = np.array(grid_shape, np.int64)
        self.level = level
        self.table = np.full(brick_grid_shape(grid_shape), -1, np.int32)
        self.values = np.empty((0,) + (SIZE,) * 3, np.float32)
        self.bricks = np.empty((0, 3), np.int64)
        self.count = 0
        self.memory_limit = memory_limit
        local = np.arange(SIZE)
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
            grow = (capacity - len(self.values)) * SIZE**3 * 4
            have = (available_memory() if self.memory_limit is None else
                    Memory(self.memory_limit - self.nbytes, "the limit this extraction was given"))
            if have is not None and grow > have.nbytes:
                raise ResourceError(f"the surface needs more memory than is available ({self.nbytes / 2**30:.1f} "
                                    f"GiB in use, {have} left); use a lower resolution")
            values = np.empty((capacity,) + (SIZE,) * 3, np.float32)
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

    def keep(self, rows: np.ndarray) -> None:
        """Drop every brick but ``rows (K,)`` (sorted, unique), moving those to the front: the others hold no grid
        cell with all its corners, nothing to mesh. The capacity stays (``nbytes`` is the peak)."""
        self.table[tuple(self.bricks[:self.count].T)] = -1
        for start in range(0, len(rows), STACK):        # a few bricks at a time: row r >= its new place
            part = rows[start:start + STACK]
            self.values[start:start + len(part)] = self.values[part]
        self.bricks[:len(rows)] = self.bricks[rows]
        self.count = len(rows)
        self.table[tuple(self.bricks[:self.count].T)] = np.arange(self.count)

    def grid_index(self, rows: np.ndarray, local: np.ndarray) -> np.ndarray:
        """Grid indices ``(M, 3)`` of samples at ``local (M, 3)`` in bricks ``rows (M,)``."""
        # padded index BRICK * brick + local, less the pad's 1 (np.take: faster than [rows] on rows)
        return np.take(self.bricks, rows, axis=0) * BRICK + local - 1

    def blocks(self, level: float) -> Iterator[Block]:
        """The allocated bricks; a brick owns all of its cells (neighbours share samples, not cells)."""
        yield from stacked_blocks(self.bricks[:self.count], lambda rows: self.values[rows], level)


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
    diagonal / 2``, where ``slope`` is the typical logit change per unit length next to the surface, inside and
    outside: the larger of :func:`_surface_slopes` (at the grid's own scale, measured once) and
    :func:`_lattice_slopes` (across the level's lattice, on a sample of bricks), or the cell's own steepest
    edge where that is steeper (:func:`_corner_reach`); a corner on the pad bounds nothing
    (:func:`_near_corners`). Every point of a cell lies within half its diagonal of a corner, so the surface
    is missed only where the field is more than ``SAFETY`` times steeper than both: thin walls, rods and small
    parts between coarse samples are found because logits shrink towards any surface. Finally the
    surface is followed: every grid cell with a sign change among its known corners gets its other corners
    evaluated, across brick faces too, until nothing new appears, so each connected piece of the surface,
    once touched, is found whole.

    Each level looks only at the bricks where the level above split a cell (elsewhere no finer cell has all
    its corners), and the bricks that end with no grid cell to mesh are dropped before marching cubes: at
    513^3 two in three bricks or more hold no surface (coarse corners near the level, nothing finer there).

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
    lattice[real] = evaluate(padded[real] - 1)                 # padded index p is grid index p - 1
    edges = _crossing_edges(lattice[None], level)
    surface = _surface_slopes(lattice[None], np.full((1, 3), -1), BRICK, edges, evaluate, level)
    slopes = _steeper(surface, _lattice_slopes(lattice[None], edges, BRICK * spacing, level))
    keep = _may_hold_surface(lattice, level, _reach(slopes, BRICK, spacing))
    rows = storage.rows(np.argwhere(keep))
    storage.values[rows, ::BRICK, ::BRICK, ::BRICK] = _brick_corners(lattice, storage.bricks[rows])
    step = BRICK
    while step > 2:
        slopes, surface = _brick_slopes(storage, step, evaluate, surface)
        reach = _reach(slopes, step, spacing)
        step //= 2
        rows = _evaluate_children(storage, rows, evaluate, reach, step)
    slopes, surface = _brick_slopes(storage, 2, evaluate, surface)
    rows = _evaluate_grid_samples(storage, rows, evaluate, slopes, spacing)
    storage.keep(_follow_surface(storage, rows, evaluate))
    return Field(grid, storage, evaluate.points_evaluated, evaluate.lowest, evaluate.highest)


def _reach(slopes: tuple[float, float], step: int, spacing: float) -> tuple[float, float]:
    """How far (in logits) from ``level`` an inside and an outside corner of a ``step``-sided cell may be with
    the surface passing through the cell."""
    half_diagonal = step * spacing * math.sqrt(3) / 2
    return SAFETY * slopes[0] * half_diagonal, SAFETY * slopes[1] * half_diagonal


def corner_count(marks: np.ndarray) -> np.ndarray:
    """Per cell, the sum over its 8 corners of ``marks (K, a, b, c) bool or uint8`` (below 32 each): ``(K, a-1, b-1,
    c-1) uint8``, by one pairwise sum per axis (three passes instead of eight strided views)."""
    s = marks.view(np.uint8)
    s = s[:, 1:] + s[:, :-1]
    s = s[:, :, 1:] + s[:, :, :-1]
    return s[:, :, :, 1:] + s[:, :, :, :-1]


def crossing_cells(v: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """For lattices ``v (K, a, b, c)`` (NaN: unknown): the cells whose 8 corners are known and not all on one side
    of ``level``, and the cells whose 8 corners are known: two ``(K, a-1, b-1, c-1) bool``."""
    inside, known = _inside_and_known(v, level)
    complete = known == 8
    return complete & (inside > 0) & (inside < 8), complete


def _inside_and_known(v: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Per cell of lattices ``v (K, a, b, c)``: how many corners are inside and how many are known (inside ones
    are), two ``(K, a-1, b-1, c-1) uint8`` from one :func:`corner_count` of both packed in one byte."""
    packed = corner_count((v > level).view(np.uint8) * np.uint8(16) + (v == v).view(np.uint8))
    return packed >> 4, packed & 15


def _corners_of(cells: np.ndarray) -> np.ndarray:
    """The samples that are a corner of a cell ``cells (K, a, b, c) bool`` marks: ``(K, a+1, b+1, c+1) bool``,
    spread one axis at a time."""
    for axis in (1, 2, 3):
        shape = list(cells.shape)
        shape[axis] += 1
        out = np.zeros(shape, bool)
        _along(out, axis, 0, shape[axis] - 1)[...] = cells
        _along(out, axis, 1, shape[axis])[...] |= cells
        cells = out
    return cells


def _may_hold_surface(lattice: np.ndarray, level: float, reach: tuple[float, float]) -> np.ndarray:
    """The cells of ``lattice (a, b, c)`` (the bricks) that change sign or have a corner :func:`_near_corners`
    the level by ``reach`` (inside, outside: the slopes at the surface only; a brick's edges span ``BRICK``
    samples and say little of the field between them, and with :func:`_corner_reach` the thin-walled tube at
    513^3 allocated 17 % more bricks and found nothing more): ``(a-1, b-1, c-1) bool``."""
    change, complete = crossing_cells(lattice[None], level)
    cells = np.flatnonzero(complete & ~change)
    corners = _brick_corners(lattice, np.stack(np.unravel_index(cells, change.shape[1:]), axis=1)).reshape(-1, 8).T
    near = _near_corners(corners, level, np.where(corners > level, np.float32(reach[0]), np.float32(reach[1])))
    keep = change[0]
    keep.reshape(-1)[cells[near.any(axis=0)]] = True
    return keep


def _corner_reach(corners: np.ndarray, level: float, reach: tuple[float, float]) -> np.ndarray:
    """How far (in logits) from ``level`` each corner of M cells, ``corners (8, M) float32``, may be with the surface
    passing within half the cell's diagonal of it: ``(8, M) float32``, ``reach`` (from the slopes at the surface,
    inside and outside) or more where the cell's own corners show the field steeper there: ``SAFETY`` times
    its steepest edge (the pad's left out), over half its diagonal. A thin wall's flanks can be several times
    steeper than the surface's typical slope, and they show in the corners around it. A pad corner has no
    network value and bounds nothing: infinite reach."""
    off_pad = np.abs(corners - level) < PAD_DEPTH / 2
    real = np.where(off_pad, corners, np.float32(np.nan))
    steepest = np.zeros(corners.shape[1], np.float32)
    for a, b in EDGES:
        np.fmax(steepest, np.abs(real[a] - real[b]), out=steepest)          # fmax: NaN (the pad) loses
    local = steepest * np.float32(SAFETY * math.sqrt(3) / 2)
    inside, outside = np.maximum(local, np.float32(reach[0])), np.maximum(local, np.float32(reach[1]))
    return np.where(off_pad, np.where(corners > level, inside, outside), np.float32(np.inf))


def _near_corners(corners: np.ndarray, level: float, reach: np.ndarray) -> np.ndarray:
    """Which corners of M cells, ``corners (8, M) float32``, say the surface may pass within half the cell's
    diagonal of them: ``(8, M) bool``. A known corner where it is within its ``reach (8, M)`` of ``level``; a
    pad corner (no network value: the border) where every known corner of the cell is within twice its reach,
    the whole diagonal, since from the pad's side nothing bounds where the surface may be."""
    distance = np.abs(corners - level)
    pad = distance >= PAD_DEPTH / 2
    anywhere = np.all(pad | (distance <= 2 * reach), axis=0)
    return np.where(pad, anywhere, distance <= reach)


def _cells_in_chunks(cells: np.ndarray) -> Iterator[tuple[np.ndarray, ...]]:
    """The cells ``cells (K, a, b, c) bool`` marks as ``(row, i, j, k)``, four ``(M,) int64``, a run of bricks at a
    time (at most ``CELLS_AT_ONCE`` cells between them): working arrays bounded whatever the grid."""
    per = max(1, CELLS_AT_ONCE // cells[0].size)
    for first in range(0, len(cells), per):
        part = cells[first:first + per]
        row, i, j, k = np.unravel_index(np.flatnonzero(part), part.shape)
        yield row + first, i, j, k


def _cell_corners(storage: BrickStorage, index: tuple[np.ndarray, ...], side: int) -> tuple[np.ndarray, np.ndarray]:
    """Of the cells of side ``side`` at ``index`` (brick row and cell position ``(row, i, j, k)``, four ``(M,)``
    arrays): the flat index of each one's lowest corner in the storage, ``(M,) int64``, and its 8 corner values,
    ``(8, M) float32`` (long rows for numpy's loops)."""
    row, i, j, k = index
    base = row * SIZE**3 + side * ((i * SIZE + j) * SIZE + k)     # sample (side*i, side*j, side*k), C order
    return base, storage.values.reshape(-1)[side * CORNERS_FLAT[:, None] + base]


def _brick_slopes(storage: BrickStorage, step: int, evaluate: Evaluator,
                  surface: tuple[float, float] | None) -> tuple[tuple[float, float], tuple[float, float] | None]:
    """The slopes that bound the split of step-``step`` cells — :func:`_steeper` of the slopes at the surface
    and those across the lattices of a sample of bricks: ``SLOPE_BRICKS`` drawn at random (a fixed seed; a
    stride through the allocation aliases with the brick grid: every 8th of 8^3 bricks is one plane), doubled
    until they hold ``SAMPLE_EDGES`` crossing edges or are all the bricks (many hold no surface) — and the
    slopes at the surface: ``surface``, or measured now on all bricks if no coarser lattice crossed the level
    (the one crossing may be in any brick)."""
    count, level = storage.count, storage.level
    if surface is None:
        v = storage.values[:count, ::step, ::step, ::step]
        surface = _surface_slopes(v, storage.bricks[:count] * BRICK - 1, step, _crossing_edges(v, level), evaluate,
                                  level)
    order, size = np.random.default_rng(0).permutation(count), SLOPE_BRICKS
    while True:
        v = storage.values[:count, ::step, ::step, ::step][np.sort(order[:size])]
        edges = _crossing_edges(v, level)
        if size >= count or len(edges) >= SAMPLE_EDGES:
            break
        size *= 2
    lattice = _lattice_slopes(v, edges, step * evaluate.grid.spacing, level)
    return _steeper(surface, lattice), surface


def _steeper(surface: tuple[float, float] | None, lattice: tuple[float, float] | None) -> tuple[float, float]:
    """Per side, the larger of the slope at the surface and the slope across the lattice's edges; infinite (the
    network has said nothing yet: split everything) while no lattice edge has crossed the level."""
    if surface is None:
        return math.inf, math.inf
    if lattice is None:
        return surface
    return max(surface[0], lattice[0]), max(surface[1], lattice[1])


def _crossing_edges(v: np.ndarray, level: float) -> np.ndarray:
    """The edges of lattices ``v (K, a, b, c)`` whose ends are known, not the pad, and on both sides of
    ``level``: ``(E, 5) int64`` rows ``(lattice, i, j, k, axis)``, ``(i, j, k)`` being the lower end."""
    real = np.abs(v - level) < PAD_DEPTH / 2                       # known and not the pad (NaN compares False)
    inside = v > level
    found = []
    for axis in range(3):
        n = v.shape[axis + 1]
        crossing = (_along(inside, axis + 1, 0, n - 1) != _along(inside, axis + 1, 1, n)) \
            & _along(real, axis + 1, 0, n - 1) & _along(real, axis + 1, 1, n)
        where = np.nonzero(crossing)
        found.append(np.stack(where + (np.full(len(where[0]), axis),), axis=1))
    return np.concatenate(found)


def _lattice_slopes(v: np.ndarray, edges: np.ndarray, length: float, level: float) -> tuple[float, float] | None:
    """The slopes across lattices ``v (K, a, b, c)`` just inside and just outside the surface: :func:`_side_slopes`
    of the edges that continue each crossing edge of ``edges`` beyond either end. On the finer lattices these
    see how steeply thin walls rise; on coarse ones a field that flattens away from the surface reads low,
    which :func:`_surface_slopes` makes up for. None without crossing edges."""
    direction = np.eye(3, dtype=np.int64)[edges[:, 4]]
    lower, shape = edges[:, 1:4], np.array(v.shape[1:])
    near, far = [], []
    for end, beyond in ((lower, lower - direction), (lower + direction, lower + 2 * direction)):
        ok = np.all((beyond >= 0) & (beyond < shape), axis=1)
        near.append(v[(edges[ok, 0],) + tuple(end[ok].T)])
        far.append(v[(edges[ok, 0],) + tuple(beyond[ok].T)])
    return _side_slopes(np.concatenate(near), np.concatenate(far), length, level)


def _surface_slopes(v: np.ndarray, origins: np.ndarray, step: int, edges: np.ndarray, evaluate: Evaluator,
                    level: float) -> tuple[float, float] | None:
    """The slopes just inside and just outside the surface at the grid's own scale; None without crossing edges.

    At most ``SLOPE_EDGES`` of the crossing ``edges`` (:func:`_crossing_edges`) of the step-``step`` lattices ``v
    (K, a, b, c)`` (sample ``[0, 0, 0]`` of lattice ``k`` being grid index ``origins[k]``), spread through them,
    are bisected down to two neighbouring grid samples on either side of the level, and the sample one further
    out on each side is evaluated: :func:`_side_slopes` of those grid edges (or, where none stays on its
    side, of the crossing grid edges). A few thousand network evaluations.
    """
    if not len(edges):
        return None
    edges = edges[::-(-len(edges) // SLOPE_EDGES)]
    direction = np.eye(3, dtype=np.int64)[edges[:, 4]]
    lo = origins[edges[:, 0]] + edges[:, 1:4] * step                  # grid index of each edge's lower end
    hi = lo + step * direction
    v_lo = v[(edges[:, 0],) + tuple(edges[:, 1:4].T)]
    v_hi = v[(edges[:, 0],) + tuple((edges[:, 1:4] + direction).T)]
    length = step
    while length > 1:                                               # halve each bracket (step: a power of two)
        length //= 2
        middle = lo + length * direction
        value = evaluate(middle)
        low_side = (value > level) == (v_lo > level)
        lo, v_lo = np.where(low_side[:, None], middle, lo), np.where(low_side, value, v_lo)
        hi, v_hi = np.where(low_side[:, None], hi, middle), np.where(low_side, v_hi, value)
    near, far = [], []
    for value, beyond in ((v_lo, lo - direction), (v_hi, hi + direction)):
        ok = np.all((beyond >= 0) & (beyond < evaluate.grid.shape), axis=1)
        near.append(value[ok])
        far.append(evaluate(beyond[ok]))
    spacing = evaluate.grid.spacing
    slopes = _side_slopes(np.concatenate(near), np.concatenate(far), spacing, level)
    across = float(np.quantile(np.abs(v_hi - v_lo), SLOPE_QUANTILE)) / spacing
    return slopes if slopes is not None else (across, across)


def _side_slopes(near: np.ndarray, far: np.ndarray, length: float, level: float) -> tuple[float, float] | None:
    """The typical logit change per unit length just inside and just outside the surface: the ``SLOPE_QUANTILE``
    of |far - near| / ``length`` over the pairs of samples ``near, far (E,)`` (``length`` apart) where ``far``
    is known, not the pad, and on ``near``'s side, split by that side. A side with none takes the other's;
    None if neither has any."""
    with np.errstate(invalid="ignore"):
        keep = (np.abs(far - level) < PAD_DEPTH / 2) & ((far > level) == (near > level))
    edge, side = np.abs(far - near)[keep] / length, near[keep] > level
    inside, outside = (float(np.quantile(e, SLOPE_QUANTILE)) if len(e) else None for e in (edge[side], edge[~side]))
    if inside is None and outside is None:
        return None
    return (outside if inside is None else inside), (inside if outside is None else outside)


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


def _evaluate_children(storage: BrickStorage, rows: np.ndarray, evaluate: Evaluator, reach: tuple[float, float],
                       step: int) -> np.ndarray:
    """Split the cells of side ``2 * step`` of bricks ``rows (K,)`` into children of side ``step``: all eight where
    the corners change sign; elsewhere the child at corner ``c`` where ``c``'s logit is within the cell's reach of
    the level (``reach``, or more where the cell is steeper: :func:`_corner_reach`; :func:`_near_corners` for a
    pad corner; every point of that child lies within half the parent's diagonal of ``c``; the other children
    are farther from ``c`` than its logit allows, and nearer their own corners, which allow nothing). Returns
    the rows with a split cell: in the others no cell of side ``step`` has all its corners, so nothing finer
    is ever looked at there."""
    level = storage.level
    coarse = storage.values[rows, ::2 * step, ::2 * step, ::2 * step]
    change, complete = crossing_cells(coarse, level)
    m = change.shape[1]
    # child (dx, dy, dz) of cell (i, j, k) is fine cell (2i + dx, 2j + dy, 2k + dz): this layout reshapes to it
    children = np.empty((len(rows), m, 2, m, 2, m, 2), bool)
    for dx, dy, dz in CORNERS:
        children[:, :, dx, :, dy, :, dz] = change
    for n, i, j, k in _cells_in_chunks(complete & ~change):
        corners = _cell_corners(storage, (rows[n], i, j, k), 2 * step)[1]
        near = _near_corners(corners, level, _corner_reach(corners, level, reach))
        for c, (dx, dy, dz) in enumerate(CORNERS):
            children[n[near[c]], i[near[c]], dx, j[near[c]], dy, k[near[c]], dz] = True
    return _evaluate_once(storage, evaluate, rows, _corners_of(children.reshape(len(rows), 2 * m, 2 * m, 2 * m)),
                          step)


def _evaluate_grid_samples(storage: BrickStorage, rows: np.ndarray, evaluate: Evaluator,
                           slopes: tuple[float, float], spacing: float) -> np.ndarray:
    """The last split, of the cells of side 2 of bricks ``rows (K,)`` into grid cells, whose new corners are grid
    samples themselves: all of them in cells that change sign; elsewhere only those the corner logits allow
    across the level, i.e. the samples ``x`` with ``|v_i - level| <= allowance * |x - c_i|`` at every corner
    ``c_i`` (the surface reaches a sample only through ground the slope can cover from every corner), the
    allowance per sample being the corner's reach (:func:`_corner_reach`) over half the cell's diagonal.
    Returns the rows with a sample asked for: the others hold no grid cell with all its corners."""
    level = storage.level
    change, complete = crossing_cells(storage.values[rows, ::2, ::2, ::2], level)
    whole = change.copy()                                        # cells all of whose samples are asked for
    some = np.zeros((len(rows),) + (SIZE,) * 3, bool)            # single samples asked for, elsewhere
    surface_reach = _reach(slopes, 2, spacing)
    for n, i, j, k in _cells_in_chunks(complete & ~change):
        base, corner = _cell_corners(storage, (rows[n], i, j, k), 2)
        # how far (in samples) the surface is at least from each corner: its reach covers half the cell's
        # diagonal, sqrt(3) samples (the pad's reach is infinite: no limit)
        distance = np.abs(corner - level) * np.float32(math.sqrt(3)) / _corner_reach(corner, level, surface_reach)
        farthest = distance.max(axis=0)
        every = farthest <= 1                                    # no sample is nearer a corner than 1
        whole[n[every], i[every], j[every], k[every]] = True
        # a sample lies at most sqrt(10) samples from each of two opposite corners together (squares summed):
        # where two opposite corners ask for more between them, no sample is allowed
        squared = distance * distance
        opposite = np.max(squared[:4] + squared[7:3:-1], axis=0)
        part = (farthest > 1) & (opposite <= 10)
        at = (base + (n - rows[n]) * SIZE**3)[part]              # their lowest corners in some (brick n of rows)
        distance = distance[:, part]
        allowed = np.ones((len(OFFSETS), len(at)), bool)         # (19, M): every corner's say, one at a time
        for c in range(8):
            allowed &= distance[c] <= OFFSET_DISTANCES[:, c, None]
        offset, cell = np.nonzero(allowed)
        some.reshape(-1)[at[cell] + OFFSETS_FLAT[offset]] = True
    return _evaluate_once(storage, evaluate, rows, _samples_of(whole) | some, 1)


def _samples_of(cells: np.ndarray) -> np.ndarray:
    """The grid samples in cells of side 2 that ``cells (K, a, b, c) bool`` marks, on their boundary included:
    ``(K, 2a+1, 2b+1, 2c+1) bool``, spread one axis at a time (sample ``2i + 1`` lies in cell ``i`` only, sample
    ``2i`` in cells ``i - 1`` and ``i``); the innermost axis first, while the array is smallest."""
    for axis in (3, 2, 1):
        shape = list(cells.shape)
        m = shape[axis]
        shape[axis] = 2 * m + 1
        out = np.zeros(shape, bool)
        _along(out, axis, 1, 2 * m)[(slice(None),) * axis + (slice(None, None, 2),)] = cells
        _along(out, axis, 0, 2 * m - 1)[(slice(None),) * axis + (slice(None, None, 2),)] |= cells
        _along(out, axis, 2, 2 * m + 1)[(slice(None),) * axis + (slice(None, None, 2),)] |= cells
        cells = out
    return cells


def _evaluate_once(storage: BrickStorage, evaluate: Evaluator, rows: np.ndarray, need: np.ndarray,
                   step: int) -> np.ndarray:
    """Evaluate the samples ``need (K, a, b, c)`` marks on the step-``step`` lattices of bricks ``rows (K,)`` that
    are not known yet, each grid sample once although neighbouring bricks both hold the samples of their common
    face: a marked sample on a face shared with the brick just below, if that asks too, is handed to it (along
    x, then y, then z, so that a sample shared by up to eight bricks ends in one), evaluated there, and its
    value carried back the same way. Returns the rows that ask for any sample, known or not: the others have
    no cell at this step with all its corners."""
    asked = need.reshape(len(rows), -1).any(axis=1)
    rows = rows[asked]
    mask = need[asked] & np.isnan(storage.values[rows, ::step, ::step, ::step])      # a fresh array, C order
    below = _bricks_below(storage, rows)
    m = mask.shape[1]
    flat_mask, flat_values = mask.reshape(-1), storage.values.reshape(-1)          # views: writes reach them
    in_mask, in_brick = np.array([m * m, m, 1]), np.array([SIZE * SIZE, SIZE, 1]) * step
    handed = []
    for axis in range(3):
        upper = np.flatnonzero(below[axis] >= 0)
        u, a, b = np.nonzero(mask[(upper,) + _face(axis, 0)])        # asked on a face shared with a brick below
        upper, lower = upper[u], below[axis, upper[u]]
        across = [o for o in range(3) if o != axis]                   # the face's two axes, in order
        place = a * in_mask[across[0]] + b * in_mask[across[1]]       # in the lattice, at 0 along axis
        offset = a * in_brick[across[0]] + b * in_brick[across[1]]    # in the brick's samples, at 0 along axis
        theirs = rows[lower] * SIZE**3 + offset + BRICK * SIZE**(2 - axis)   # the lower brick's copy, on its top
        flat_mask[upper * m**3 + place] = False
        unknown = np.isnan(flat_values[theirs])
        flat_mask[lower[unknown] * m**3 + place[unknown] + (m - 1) * in_mask[axis]] = True
        handed.append((rows[upper] * SIZE**3 + offset, theirs))
    _evaluate_where(storage, evaluate, rows, mask, step)
    for ours, theirs in handed[::-1]:                              # back along the way the samples were handed
        flat_values[ours] = flat_values[theirs]
    return rows


def _bricks_below(storage: BrickStorage, rows: np.ndarray) -> np.ndarray:
    """``(3, K) int64``: per axis, the position in ``rows (K,)`` of the brick just below each of them, -1 where that
    brick is not among ``rows``."""
    position = np.full(storage.count, -1, np.int64)
    position[rows] = np.arange(len(rows))
    bricks = storage.bricks[rows]
    below = np.full((3, len(rows)), -1, np.int64)
    for axis in range(3):
        has = np.flatnonzero(bricks[:, axis] > 0)
        neighbour = bricks[has] - np.eye(3, dtype=np.int64)[axis]
        row = storage.table[neighbour[:, 0], neighbour[:, 1], neighbour[:, 2]]
        below[axis, has] = np.where(row >= 0, position[row], -1)
    return below


def _face(axis: int, index: int) -> tuple:
    """The index of one face of bricks' samples, ``index`` along ``axis``, all along the other two axes."""
    return tuple(index if a == axis else slice(None) for a in range(3))


def _evaluate_where(storage: BrickStorage, evaluate: Evaluator, rows: np.ndarray, mask: np.ndarray,
                    step: int) -> None:
    """Evaluate the samples ``mask (K, a, b, c)`` marks on the step-``step`` lattice of bricks ``rows (K,)``, one
    batch at a time (no index arrays for all of them at once)."""
    marked = np.flatnonzero(mask)
    # a marked position is (brick in rows, place in its lattice): the place's offset in a brick and its index
    places = math.prod(mask.shape[1:])
    local = np.stack(np.unravel_index(np.arange(places), mask.shape[1:]), axis=1) * step
    local_flat = (local[:, 0] * SIZE + local[:, 1]) * SIZE + local[:, 2]
    flat_values = storage.values.reshape(-1)
    for start in range(0, len(marked), evaluate.batch_size):
        which, place = np.divmod(marked[start:start + evaluate.batch_size], places)
        brick = rows[which]
        ijk = storage.grid_index(brick, np.take(local, place, axis=0))
        flat_values[brick * SIZE**3 + local_flat[place]] = evaluate(ijk)


def _follow_surface(storage: BrickStorage, rows: np.ndarray, evaluate: Evaluator) -> np.ndarray:
    """Evaluate the unknown corners of every grid cell whose known corners change sign, in bricks ``rows`` (those
    the last split asked samples of), then carry known samples of brick faces crossed by the surface into the
    neighbouring bricks, until nothing new appears. Only bricks whose samples changed are looked at again.
    Returns ``rows`` and the rows samples were carried into: every brick that holds a grid sample since."""
    level = storage.level
    gained = [rows]
    work = rows[_unsettled_cells(storage.values[rows], level).any(axis=(1, 2, 3))]
    while len(rows):
        changed = [rows]
        while len(work):
            v = storage.values[work]
            need = _corners_of(_unsettled_cells(v, level)) & np.isnan(v)
            some = need.any(axis=(1, 2, 3))
            work = work[some]
            _evaluate_where(storage, evaluate, work, need[some], 1)
            changed.append(work)
        work = rows = _cross_faces(storage, np.unique(np.concatenate(changed)))
        gained.append(rows)
    return np.unique(np.concatenate(gained))


def _unsettled_cells(v: np.ndarray, level: float) -> np.ndarray:
    """Grid cells of bricks ``v (K, a, b, c)`` whose known corners change sign while others are unknown:
    ``(K, a-1, b-1, c-1) bool``."""
    inside, seen = _inside_and_known(v, level)
    return (inside > 0) & (seen > inside) & (seen < 8)


def _cross_faces(storage: BrickStorage, rows: np.ndarray) -> np.ndarray:
    """Copy the known samples of every face of bricks ``rows`` that the surface crosses (two neighbouring known
    samples on both sides of ``level``) into the neighbouring brick, allocating it; returns the rows that
    gained samples."""
    level = storage.level
    gained = []
    for axis in range(3):
        for side, other in ((BRICK, 0), (0, BRICK)):
            faces_all = storage.values[(slice(None),) + _face(axis, side)]        # a view: no copy of all
            face = faces_all[rows]                                                 # (K, SIZE, SIZE)
            known = ~np.isnan(face)
            inside = face > level
            crossed = ((inside[:, 1:] != inside[:, :-1]) & known[:, 1:] & known[:, :-1]).any(axis=(1, 2)) \
                | ((inside[:, :, 1:] != inside[:, :, :-1]) & known[:, :, 1:] & known[:, :, :-1]).any(axis=(1, 2))
            step = np.zeros(3, np.int64)
            step[axis] = 1 if side == BRICK else -1
            target = storage.bricks[rows[crossed]] + step
            ok = np.all((target >= 0) & (target < np.array(storage.table.shape)), axis=1)
            if not ok.any():
                continue
            faces = face[crossed][ok]
            neighbours = storage.rows(target[ok])
            index = (neighbours,) + _face(axis, other)               # the neighbours' facing sides only
            theirs = storage.values[index]
            fill = np.isnan(theirs) & ~np.isnan(faces)
            if not fill.any():
                continue
            theirs[fill] = faces[fill]
            storage.values[index] = theirs
            gained.append(neighbours[fill.any(axis=(1, 2))])
    return np.unique(np.concatenate(gained)) if gained else np.zeros(0, np.int64)
