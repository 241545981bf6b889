"""The mesh-from-model pipeline as a plain API: grid -> logits -> marching cubes -> cleaned mesh, with figures."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import trimesh

from occnet.runtime.errors import ResourceError
from occnet.runtime.field import LogitFn, Progress, adaptive_field, dense_field
from occnet.runtime.grid import Grid
from occnet.runtime.machine import available_bytes
from occnet.runtime.session import OccupancyModel
from occnet.runtime.settings import MeshSettings, probability_to_logit
from occnet.runtime.surface import extract_mesh, filter_components

# Peak bytes per grid point, measured (benchmarks/bench_mesh.py reports peak RSS): the float32 volume,
# the border-padded copy marching cubes may need and, for adaptive, the band's masks and the coarser level.
BYTES_PER_POINT = {"dense": 9.0, "adaptive": 12.0}
BASE_BYTES = 300 * 2**20


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
    """Estimated peak memory of extracting on ``grid`` with ``method``."""
    return int(BASE_BYTES + BYTES_PER_POINT[method] * grid.num_points)


def plan_grid(bounds_min, bounds_max, settings: MeshSettings) -> Grid:
    """The grid for ``settings``, refused with :class:`ResourceError` if it would not fit in memory."""
    grid = Grid.from_bounds(bounds_min, bounds_max, settings.resolution)
    need, have = required_bytes(grid, settings.method), available_bytes()
    if have is not None and need > have:
        fits = settings.resolution
        while fits > 2 and required_bytes(Grid.from_bounds(bounds_min, bounds_max, fits), settings.method) > have:
            fits = int(fits * 0.9)
        raise ResourceError(f"resolution {settings.resolution} needs about {need / 2**30:.1f} GiB, "
                            f"only {have / 2**30:.1f} GiB is available; resolution {fits} would fit")
    return grid


def mesh_field(fn: LogitFn, bounds_min, bounds_max, settings: MeshSettings = MeshSettings(),
               provider: str = "python", progress: Progress | None = None) -> tuple[trimesh.Trimesh, MeshStats]:
    """Mesh the ``threshold`` surface of any logit function over the box (world coordinates)."""
    start = time.perf_counter()
    grid = plan_grid(bounds_min, bounds_max, settings)
    level = probability_to_logit(settings.threshold)
    if settings.method == "dense":
        field = dense_field(fn, grid, settings.batch_size, progress)
    else:
        field = adaptive_field(fn, grid, level, settings.batch_size, progress)
    inferred = time.perf_counter()
    mesh = extract_mesh(field, level)
    mesh = filter_components(mesh, settings.largest_only, settings.min_faces)
    done = time.perf_counter()
    stats = MeshStats(settings.method, provider, settings.resolution, grid.shape, field.points_evaluated,
                      round(inferred - start, 4), round(done - inferred, 4), round(done - start, 4),
                      field.nbytes, len(mesh.vertices), len(mesh.faces), bool(mesh.is_watertight))
    return mesh, stats


def mesh_model(model: OccupancyModel, settings: MeshSettings = MeshSettings(),
               progress: Progress | None = None) -> tuple[trimesh.Trimesh, MeshStats]:
    """Mesh an occnet ONNX model over the box its metadata records."""
    return mesh_field(model.logits, model.info.bounds_min, model.info.bounds_max, settings,
                      model.provider, progress)
