"""The mesh-from-model pipeline as a plain API: grid -> logits -> marching cubes -> cleaned mesh, with figures."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import trimesh

from occnet.runtime.errors import InputError, ResourceError
from occnet.runtime.field import LogitFn, Progress, adaptive_field, dense_field
from occnet.runtime.grid import Grid
from occnet.runtime.machine import available_memory
from occnet.runtime.session import ConditionedModel, OccupancyModel
from occnet.runtime.settings import DEFAULT_THRESHOLD, MIN_RESOLUTION, MeshSettings, probability_to_logit
from occnet.runtime.surface import drop_specks, filter_components, is_closed, surface_arrays

SPECK_CELLS = 2
"""Pieces of the mesh no wider than this many grid cells are dropped as specks (see ``drop_specks``)."""
BASE_BYTES = 300 * 2**20
"""Libraries and onnxruntime's session, before any field (peak RSS of a tiny extraction)."""
DENSE_BYTES_PER_POINT = 9.0
"""Dense: the float32 volume and the border-padded copy marching cubes may need (measured peak RSS)."""
ADAPTIVE_BYTES_PER_AREA = 1500.0
"""Adaptive: bytes per squared sample of the longest side, for the bricks along the surface, their
working copies and the mesh: above the measured peaks of the demo and the thin-walled tube (1.5 GB at
1024^3, 4.3 GB for the demo at 2048^3; the estimate says 1.9 and 6.6 GB), so that busier surfaces still
fit; the bricks' allocator stops the run with a ResourceError where they would not."""


@dataclass(frozen=True)
class MeshStats:
    """Figures of one extraction; ``to_dict`` is what ``occ-mesh --json`` prints."""

    method: str
    provider: str
    resolution: int
    grid_shape: tuple[int, int, int]
    points_evaluated: int
    seconds_inference: float
    seconds_marching_cubes: float
    seconds_total: float
    field_bytes: int
    vertices: int
    faces: int
    watertight: bool

    def to_dict(self) -> dict:
        return asdict(self)


def required_bytes(grid: Grid, method: str) -> int:
    """Estimated peak memory of extracting on ``grid`` with ``method``: the volume for dense; for adaptive the
    brick table (1/1024 of the volume's float32 size) and the surface's bricks."""
    if method == "dense":
        return int(BASE_BYTES + DENSE_BYTES_PER_POINT * grid.num_points)
    return int(BASE_BYTES + grid.num_points / 1024 * 4 + ADAPTIVE_BYTES_PER_AREA * max(grid.shape) ** 2)


def plan_grid(bounds_min, bounds_max, settings: MeshSettings) -> Grid:
    """The grid for ``settings``, refused with :class:`ResourceError` if it would not fit in memory."""
    grid = Grid.from_bounds(bounds_min, bounds_max, settings.resolution)
    need, have = required_bytes(grid, settings.method), available_memory()
    if have is not None and need > have.nbytes:
        def fits(resolution: int) -> bool:
            return required_bytes(Grid.from_bounds(bounds_min, bounds_max, resolution), settings.method) <= have.nbytes

        largest = _largest(fits, MIN_RESOLUTION, settings.resolution - 1)
        advice = f"resolution {largest} is the largest that would fit" if largest else "no resolution would fit"
        raise ResourceError(f"resolution {settings.resolution} needs about {need / 2**30:.1f} GiB, only {have} "
                            f"is available; {advice}")
    return grid


def _largest(fits, low: int, high: int) -> int | None:
    """The largest integer in ``low..high`` for which ``fits`` (true up to some point, false after) holds, by
    bisection; None where none does."""
    if high < low or not fits(low):
        return None
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def mesh_field(fn: LogitFn, bounds_min, bounds_max, settings: MeshSettings = MeshSettings(),
               provider: str = "python", progress: Progress | None = None,
               network_bounds=None) -> tuple[trimesh.Trimesh, MeshStats]:
    """Mesh the ``threshold`` surface of any logit function over the box (world coordinates). The ``bounded``
    method needs ``network_bounds = (bounds, origin)``: sound bounds of ``fn`` over boxes
    (:class:`~occnet.runtime.bounds.NetworkBounds`) in coordinates less ``origin``."""
    start = time.perf_counter()
    grid = plan_grid(bounds_min, bounds_max, settings)
    level = probability_to_logit(DEFAULT_THRESHOLD if settings.threshold is None else settings.threshold)
    if settings.method == "dense":
        field = dense_field(fn, grid, settings.batch_size, progress)
    elif settings.method == "bounded":
        from occnet.runtime.bounded import bounded_field

        if network_bounds is None:
            raise InputError("--method bounded needs sound bounds of the function; a model gives them")
        field = bounded_field(fn, *network_bounds, grid, level, settings.batch_size, progress)
    else:
        field = adaptive_field(fn, grid, level, settings.batch_size, progress)
    inferred = time.perf_counter()
    verts, faces = surface_arrays(field, level)
    points_evaluated, field_bytes = field.points_evaluated, field.nbytes
    del field                                  # the samples are meshed: free them before the mesh's own work
    verts, faces = drop_specks(verts, faces, SPECK_CELLS * grid.spacing)
    verts, faces = filter_components(verts, faces, settings.largest_only, settings.min_faces)
    watertight = is_closed(faces)
    mesh = trimesh.Trimesh(verts, faces, process=False)
    done = time.perf_counter()
    stats = MeshStats(settings.method, provider, settings.resolution, grid.shape, points_evaluated,
                      round(inferred - start, 4), round(done - inferred, 4), round(done - start, 4),
                      field_bytes, len(mesh.vertices), len(mesh.faces), watertight)
    return mesh, stats


def mesh_model(model: OccupancyModel | ConditionedModel, settings: MeshSettings = MeshSettings(),
               progress: Progress | None = None) -> tuple[trimesh.Trimesh, MeshStats]:
    """Mesh an occnet ONNX model over the box its metadata records, at its threshold unless ``settings`` give
    one; a conditional model with its observation given (:meth:`OccupancyModel.given`)."""
    if settings.threshold is None and model.info.condition is not None:
        settings = replace(settings, threshold=model.info.condition.threshold)
    network_bounds = None
    if settings.method == "bounded":
        bounds = model.bounds()
        if bounds is None:
            raise InputError(f"--method bounded: {model.path}'s graph holds operators the range analysis does not "
                             "take (it takes Gemm, MatMul, Relu, Sin, Cos and linear and shape operators); use "
                             "--method adaptive")
        network_bounds = (bounds, model.info.origin)
    return mesh_field(model.logits, model.info.bounds_min, model.info.bounds_max, settings,
                      model.provider, progress, network_bounds)
