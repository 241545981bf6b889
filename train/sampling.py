"""Training points from a shape: uniform in the padded box plus points near the surface, labelled exactly.

Uniform points teach the network where empty space is; points near the surface (surface samples moved by
Gaussian noise) put the capacity where the mesh is decided. ``near_fraction`` and ``near_sigma`` set the mix.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import trimesh

from occnet.runtime.errors import InputError, ResourceError
from occnet.runtime.field import dense_field
from occnet.runtime.grid import Grid
from occnet.runtime.inside import MAX_AMBIGUOUS, contains
from occnet.runtime.machine import available_memory
from occnet.runtime.meshio import MESH_FORMATS, read_mesh
from occnet.runtime.points import PointSet, load_npz, make_point_set
from occnet.runtime.surface import extract_mesh
from occnet.train.config import SamplingConfig
from occnet.train.shapes import DEMO_BOUNDS, demo_occupancy, demo_sdf

BYTES_PER_POINT = 200
BASE_BYTES = 1 << 30
"""Peak memory of sampling, labelling and training ``n`` points is about ``BASE_BYTES + BYTES_PER_POINT * n``
(measured: 1.05 GB at 1M points of a mesh, 1.28 GB at 3M; the demo less)."""


def check_memory(config: SamplingConfig) -> None:
    """Refuse, before sampling, a point count whose sampling and training would not fit in memory."""
    need, have = BASE_BYTES + BYTES_PER_POINT * config.num_points, available_memory()
    if have is not None and need > have.nbytes:
        fits = (have.nbytes - BASE_BYTES) // BYTES_PER_POINT
        advice = f"at most {fits:,} points would fit" if fits > 0 else "no point count would fit"
        raise ResourceError(f"--num-points {config.num_points:,} needs about {need / 2**30:.1f} GiB, only {have} "
                            f"is available; {advice}")


def sample_shape(surface: trimesh.Trimesh, label: Callable[[np.ndarray], np.ndarray], bounds, config: SamplingConfig,
                 seed: int, source: str) -> PointSet:
    """Draw uniform points in ``bounds`` and near-surface points around ``surface``; label them with ``label``.

    ``label``: ``(N, 3) float64 -> (N,)`` 0/1. Near-surface points are clipped to the box.
    """
    rng = np.random.default_rng(seed)
    lo, hi = (np.asarray(b, np.float64) for b in bounds)
    n_near = int(round(config.num_points * config.near_fraction))
    uniform = rng.uniform(lo, hi, size=(config.num_points - n_near, 3))
    near = np.zeros((0, 3))
    if n_near:
        on_surface, _ = trimesh.sample.sample_surface(surface, n_near, seed=int(rng.integers(2**31)))
        sigma = config.near_sigma * float((hi - lo).max())
        near = np.clip(on_surface + rng.normal(0.0, sigma, size=on_surface.shape), lo, hi)
    points = np.concatenate([uniform, near])
    return make_point_set(points, label(points), source, bounds=(lo, hi))


def demo_points(config: SamplingConfig, seed: int) -> PointSet:
    """The built-in demo shape, sampled and labelled by its exact analytic occupancy."""
    grid = Grid.from_bounds(*DEMO_BOUNDS, 96)
    field = dense_field(lambda p: (-demo_sdf(p)).astype(np.float32), grid, 1 << 20)
    return sample_shape(extract_mesh(field, 0.0), demo_occupancy, DEMO_BOUNDS, config, seed, "demo")


def load_mesh(path: Path) -> trimesh.Trimesh:
    """Read a triangle mesh (duplicate vertices merged at its own scale, degenerate faces dropped); open,
    overlapping and touching meshes are fine: their inside is what their winding number says."""
    mesh = read_mesh(path)
    mesh.update_faces(mesh.nondegenerate_faces())
    if len(mesh.faces) == 0:
        raise InputError(f"{path}: the mesh has no faces with area")
    return mesh


def mesh_points(path: Path, config: SamplingConfig, seed: int) -> PointSet:
    """Sample points for a mesh and label them by its winding number, in the mesh's own coordinates; a mesh
    whose winding number leaves too many points without a clear side (a soup, a lone sheet) is refused."""
    mesh = load_mesh(path)
    lo, hi = mesh.bounds
    pad = config.padding * float((hi - lo).max())
    bounds = (lo - pad, hi + pad)

    def label(points: np.ndarray) -> np.ndarray:
        result = contains(mesh.vertices, mesh.faces, points)
        if result.ambiguous > MAX_AMBIGUOUS:
            raise InputError(f"{path}: inside and outside are ambiguous for {result.ambiguous:.1%} of the points "
                             "(their winding number is far from a whole number): the mesh does not enclose a "
                             "volume (a triangle soup, a lone sheet, or holes too large); close it first")
        return result.inside.astype(np.uint8)

    return sample_shape(mesh, label, bounds, config, seed, str(path))


def load_points(data: Path | None, config: SamplingConfig, seed: int) -> PointSet:
    """Training data from ``data``: ``.npz`` labelled points, a mesh file, or None for the demo shape."""
    if data is None or Path(data).suffix.lower() != ".npz":
        check_memory(config)
    if data is None:
        return demo_points(config, seed)
    data = Path(data)
    if data.is_dir():
        raise InputError(f"{data} is a folder, not a data file")
    if not data.is_file():
        raise InputError(f"data file not found: {data}")
    suffix = data.suffix.lower()
    if suffix == ".npz":
        return load_npz(data)
    if suffix in MESH_FORMATS:
        return mesh_points(data, config, seed)
    raise InputError(f"{data}: unknown data format {suffix or '(no suffix)'!r}; use .npz or a mesh "
                     f"({' '.join(MESH_FORMATS)})")
