"""Grid evaluation of an occupancy field: dense (the reference) and adaptive (coarse-to-fine narrow band).

Both return a :class:`Field` on the same :class:`~occnet.runtime.grid.Grid`, so the same marching cubes
turns either into a mesh. Wherever the coarse level sees the surface, the two meshes are the same.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from occnet.runtime.errors import InputError
from occnet.runtime.grid import Grid

LogitFn = Callable[[np.ndarray], np.ndarray]
"""``(N, 3) float32`` world points -> ``(N,) float32`` logits."""
Progress = Callable[[int], None]
"""Called with the number of points evaluated so far."""

METHODS = ("adaptive", "dense")
_ALL_INSIDE = np.frombuffer(np.ones(8, np.uint8).tobytes(), np.uint64)[0]


@dataclass
class Field:
    """Logits on a grid. ``cells`` marks (by lower corner) the cells marching cubes must visit; None: all."""

    grid: Grid
    values: np.ndarray
    cells: np.ndarray | None
    points_evaluated: int


def dense_field(fn: LogitFn, grid: Grid, batch_size: int, progress: Progress | None = None) -> Field:
    """Evaluate every grid point, ``batch_size`` at a time: memory is the volume plus one batch."""
    _check_batch(batch_size)
    values = np.empty(grid.num_points, np.float32)
    for start in range(0, grid.num_points, batch_size):
        flat = np.arange(start, min(start + batch_size, grid.num_points))
        values[start:start + len(flat)] = fn(grid.points(flat))
        if progress:
            progress(start + len(flat))
    return Field(grid, values.reshape(grid.shape), None, grid.num_points)


def adaptive_field(fn: LogitFn, grid: Grid, level: float, batch_size: int, coarse_resolution: int = 33,
                   guard: int = 0, progress: Progress | None = None) -> Field:
    """Coarse-to-fine narrow-band evaluation (after ONet's MISE) on ``grid``; ``level`` is the logit iso-level.

    A lattice of about ``coarse_resolution`` samples along the longest side is evaluated whole; each finer
    level evaluates the corners of the children of the cells where the sign changed (dilated by ``guard``
    cells), then follows the surface: any cell that touches a newly evaluated point and shows a sign
    change is evaluated too, until no new one appears. Points never evaluated keep the value of their
    coarse cell's corner, which has the right sign wherever the coarse level saw the surface: features
    thinner than a coarse cell (box / (coarse_resolution - 1)) can be missed; raise ``coarse_resolution``
    or ``guard`` to catch them, at the cost of more evaluations.
    """
    _check_batch(batch_size)
    if coarse_resolution < 2:
        raise InputError(f"coarse resolution must be >= 2, got {coarse_resolution}")
    if guard < 0:
        raise InputError(f"guard must be >= 0, got {guard}")
    ratio = (max(grid.shape) - 1) / (coarse_resolution - 1)
    step = 1 << max(0, round(math.log2(ratio))) if ratio > 1 else 1
    band = _Band(fn, level, batch_size, progress)

    lattice = _Lattice(grid, step)
    values = np.empty(lattice.size, np.float32)
    band.evaluate(lattice, values, np.arange(lattice.size))
    evaluated = np.ones(lattice.size, bool)
    active = lattice.sign_change_cells(values, level)
    while lattice.step > 1:
        fine = _Lattice(grid, lattice.step // 2)
        values, evaluated = fine.upsample(lattice, values), fine.embed(lattice, evaluated)
        seeds = fine.children(lattice, lattice.dilate(active, guard), band.scratch(fine.size))
        active = band.follow_surface(fine, values, evaluated, seeds)
        lattice = fine
    cells = np.zeros(lattice.size, bool)
    cells[active] = True
    return Field(grid, values.reshape(grid.shape), cells.reshape(grid.shape), band.points_evaluated)


def _check_batch(batch_size: int) -> None:
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")


class _Lattice:
    """The grid samples at multiples of ``step`` (a power of two), indexed flat in C order.

    A cell is named by the flat index of its lowest corner. Coarse lattices may reach a little past the
    grid's far sides (up to ``step - 1`` samples); the finest (step 1) is the grid itself.
    """

    def __init__(self, grid: Grid, step: int) -> None:
        self.grid, self.step = grid, step
        self.shape = tuple(math.ceil((n - 1) / step) + 1 for n in grid.shape)
        self.size = int(np.prod(self.shape, dtype=np.int64))
        strides = np.array([self.shape[1] * self.shape[2], self.shape[2], 1], np.int64)
        self.offsets = np.array(list(itertools.product((0, 1), repeat=3)), np.int64)
        self.corner_flat = self.offsets @ strides

    def world(self, flat: np.ndarray) -> np.ndarray:
        ijk = np.stack(np.unravel_index(flat, self.shape), axis=1) * self.step
        return self.grid.to_world(ijk)

    def upsample(self, coarse: _Lattice, values: np.ndarray) -> np.ndarray:
        """Values at this (twice as fine) lattice: coarse samples kept, new samples copy their cell's lowest
        corner. Contiguous copies (repeat along z, then whole rows and planes), about twice as fast as
        strided assignment."""
        n0, n1, n2 = self.shape
        src = values.reshape(coarse.shape)[:(n0 + 1) // 2, :(n1 + 1) // 2]
        rows = np.repeat(src, 2, axis=2)[:, :, :n2]
        out = np.empty(self.shape, values.dtype)
        out[0::2, 0::2] = rows
        out[0::2, 1::2] = rows[:, :n1 // 2]
        out[1::2] = out[0:n0 - 1:2]
        return out.reshape(-1)

    def embed(self, coarse: _Lattice, mask: np.ndarray) -> np.ndarray:
        """A coarse per-sample mask on this (twice as fine) lattice: coarse samples keep theirs, new ones
        are False."""
        n0, n1, n2 = self.shape
        out = np.zeros(self.shape, bool)
        out[::2, ::2, ::2] = mask.reshape(coarse.shape)[:(n0 + 1) // 2, :(n1 + 1) // 2, :(n2 + 1) // 2]
        return out.reshape(-1)

    def sign_change_cells(self, values: np.ndarray, level: float, cells: np.ndarray | None = None) -> np.ndarray:
        """Cells (all, or those given) whose 8 corners are not all on one side of ``level``."""
        if cells is None:
            inside = (values > level).reshape(self.shape)
            total = sum(inside[a:a + self.shape[0] - 1, b:b + self.shape[1] - 1, c:c + self.shape[2] - 1]
                        .astype(np.uint8) for a, b, c in self.offsets)
            lows = np.flatnonzero(((total > 0) & (total < 8)).reshape(-1))
            ijk = np.unravel_index(lows, tuple(s - 1 for s in self.shape))
            return np.ravel_multi_index(ijk, self.shape)
        corners = np.ascontiguousarray(values[cells[:, None] + self.corner_flat] > level)
        packed = corners.view(np.uint64).reshape(-1)       # the 8 corner flags of a cell as one word
        return cells[(packed != 0) & (packed != _ALL_INSIDE)]

    def dilate(self, cells: np.ndarray, radius: int) -> np.ndarray:
        """Cells within ``radius`` (Chebyshev) of the given cells, clipped to the lattice; unique, sorted."""
        if radius == 0 or len(cells) == 0:
            return cells
        mark = np.zeros(self.shape, bool)
        ijk = np.unravel_index(cells, self.shape)
        mark[ijk] = True
        for axis in range(3):
            shifted = mark.copy()
            for d in range(1, radius + 1):
                _or_shift(shifted, mark, axis, d)
                _or_shift(shifted, mark, axis, -d)
            mark = shifted
        last = tuple(slice(0, s - 1) for s in self.shape)
        inner = np.zeros(self.shape, bool)
        inner[last] = mark[last]
        return np.flatnonzero(inner.reshape(-1))

    def children(self, coarse: _Lattice, cells: np.ndarray, scratch: np.ndarray) -> np.ndarray:
        """The 8 sub-cells at this lattice of each coarse cell, clipped to valid cells; unique."""
        ijk = [2 * a for a in np.unravel_index(cells, coarse.shape)]
        base = (ijk[0] * self.shape[1] + ijk[1]) * self.shape[2] + ijk[2]
        fits = [[a <= n - 2 - o for a, n in zip(ijk, self.shape)] for o in (0, 1)]
        chunks = [base[fits[a][0] & fits[b][1] & fits[c][2]] + flat
                  for (a, b, c), flat in zip(self.offsets, self.corner_flat)]
        return _unique(scratch, chunks)

    def cells_touching(self, points: np.ndarray) -> list[np.ndarray]:
        """Cells that have one of ``points`` as a corner, as chunks (with repeats across chunks)."""
        ijk = np.unravel_index(points, self.shape)
        ok = ([a <= n - 2 for a, n in zip(ijk, self.shape)],   # the point can be a cell's lower corner
              [a >= 1 for a in ijk])                           # ... or its upper corner, per axis
        return [points[ok[a][0] & ok[b][1] & ok[c][2]] - flat
                for (a, b, c), flat in zip(self.offsets, self.corner_flat)]


class _Band:
    """Evaluation of a narrow band: counts points, reuses one scratch bitmap for de-duplication."""

    def __init__(self, fn: LogitFn, level: float, batch_size: int, progress: Progress | None):
        self.fn, self.level, self.batch_size, self.progress = fn, level, batch_size, progress
        self.points_evaluated = 0
        self._scratch = np.zeros(0, bool)

    def scratch(self, size: int) -> np.ndarray:
        if len(self._scratch) < size:
            self._scratch = np.zeros(size, bool)
        return self._scratch

    def evaluate(self, lattice: _Lattice, values: np.ndarray, flat: np.ndarray) -> None:
        for start in range(0, len(flat), self.batch_size):
            part = flat[start:start + self.batch_size]
            values[part] = self.fn(lattice.world(part))
            self.points_evaluated += len(part)
            if self.progress:
                self.progress(self.points_evaluated)

    def follow_surface(self, lattice: _Lattice, values: np.ndarray, evaluated: np.ndarray,
                       cells: np.ndarray) -> np.ndarray:
        """Evaluate the corners of ``cells``, then of every sign-changing cell next to a new point, until
        none is left; returns all sign-changing cells among those touched."""
        scratch = self.scratch(lattice.size)
        touched = [cells]
        while len(cells):
            corners = (cells[:, None] + lattice.corner_flat).reshape(-1)
            new = _unique(scratch, [corners[~evaluated[corners]]])
            if len(new) == 0:
                break
            self.evaluate(lattice, values, new)
            evaluated[new] = True
            near = _unique(scratch, lattice.cells_touching(new))
            touched.append(near)
            cells = lattice.sign_change_cells(values, self.level, near)
        return lattice.sign_change_cells(values, self.level, _unique(scratch, touched))


def _unique(scratch: np.ndarray, chunks: list[np.ndarray]) -> np.ndarray:
    """Sorted unique values of the chunks, via a zeroed bitmap (far faster than sorting); leaves it zeroed."""
    chunks = [c for c in chunks if len(c)]
    if not chunks:
        return np.zeros(0, np.int64)
    lo = min(int(c.min()) for c in chunks)
    hi = max(int(c.max()) for c in chunks) + 1
    for c in chunks:
        scratch[c] = True
    out = np.flatnonzero(scratch[lo:hi]) + lo
    scratch[out] = False
    return out


def _or_shift(dst: np.ndarray, src: np.ndarray, axis: int, d: int) -> None:
    """``dst |= src`` shifted by ``d`` along ``axis`` (no wrap-around)."""
    n = src.shape[axis]
    if abs(d) >= n:
        return
    to = [slice(None)] * 3
    frm = [slice(None)] * 3
    to[axis], frm[axis] = (slice(d, None), slice(0, n - d)) if d > 0 else (slice(0, n + d), slice(-d, None))
    dst[tuple(to)] |= src[tuple(frm)]
