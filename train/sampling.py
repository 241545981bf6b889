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
from occnet.runtime.files import input_file
from occnet.runtime.grid import Grid
from occnet.runtime.inside import MAX_AMBIGUOUS, contains
from occnet.runtime.machine import available_memory
from occnet.runtime.meshio import MERGE_RELATIVE, MESH_FORMATS, read_mesh
from occnet.runtime.points import PointSet, check_training_extent, load_npz, make_point_set
from occnet.runtime.surface import extract_mesh
from occnet.train.config import SamplingConfig
from occnet.train.shapes import DEMO_BOUNDS, demo_occupancy, demo_sdf

BYTES_PER_POINT = 200
BASE_BYTES = 1 << 30
"""Peak memory of sampling, labelling and training ``n`` points is about ``BASE_BYTES + BYTES_PER_POINT * n``
(measured: 1.05 GB at 1M points of a mesh, 1.28 GB at 3M; the demo less)."""


MIN_NEAR_INSIDE = 0.05
"""Share of the near-surface points that must fall inside the shape. Where the noise is narrower than the
shape's walls about half do (29-49% on the 17 shapes of the quality suite, the thinnest a plate 1% of its
length thick); a sheet 0.05% of its length thick under the default noise got 1.8%, a rod 0.01% across none,
and the network learned "all outside" (IoU 0) or training was refused with "no surface to learn"."""
PROBE_POINTS = 2000
"""Near-surface points drawn at each narrower noise tried for the advice of a refusal."""


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
    near = _near_surface(surface, n_near, config.near_sigma, lo, hi, rng) if n_near else np.zeros((0, 3))
    points = np.concatenate([uniform, near])
    labels = label(points)
    if n_near:
        _check_near_inside(labels[len(uniform):], surface, label, config.near_sigma, lo, hi, rng, source)
    return make_point_set(points, labels, source, bounds=(lo, hi))


def _near_surface(surface: trimesh.Trimesh, count: int, near_sigma: float, lo: np.ndarray, hi: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """``(count, 3) float64``: surface samples moved by Gaussian noise of ``near_sigma`` times the box's longest
    side, clipped to the box."""
    on_surface, _ = trimesh.sample.sample_surface(surface, count, seed=int(rng.integers(2**31)))
    sigma = near_sigma * float((hi - lo).max())
    return np.clip(on_surface + rng.normal(0.0, sigma, size=on_surface.shape), lo, hi)


def _check_near_inside(labels: np.ndarray, surface: trimesh.Trimesh, label, near_sigma: float, lo: np.ndarray,
                       hi: np.ndarray, rng: np.random.Generator, source: str) -> None:
    """Refuse, before training, near-surface points of which fewer than :data:`MIN_NEAR_INSIDE` fall inside:
    the shape's walls or parts are thinner than the noise, and the network would learn "all outside". The
    advice is a narrower ``--near-sigma`` measured to put a quarter or more of the points inside."""
    share = float(np.mean(labels))
    if share >= MIN_NEAR_INSIDE:
        return
    longest = float((hi - lo).max())
    advice = "no --near-sigma down to 1/4096 of it does; its parts are too thin or too small for their box"
    for narrower in near_sigma / 4.0 ** np.arange(1, 7):
        if np.mean(label(_near_surface(surface, PROBE_POINTS, narrower, lo, hi, rng))) >= 0.25:
            advice = f"--near-sigma {narrower:.2g} puts a quarter or more inside"
            break
    raise InputError(f"{source}: only {share:.1%} of the {len(labels):,} near-surface points fall inside (about "
                     f"half do where the shape is thicker than the noise): its walls or parts are thinner than "
                     f"--near-sigma {near_sigma:g} x the longest side {longest:.3g} = {near_sigma * longest:.3g} "
                     f"units; {advice}; mesh it at a resolution whose cells ({longest:.3g} / resolution) are "
                     "smaller than those parts")


def demo_points(config: SamplingConfig, seed: int) -> PointSet:
    """The built-in demo shape, sampled and labelled by its exact analytic occupancy."""
    grid = Grid.from_bounds(*DEMO_BOUNDS, 96)
    field = dense_field(lambda p: (-demo_sdf(p)).astype(np.float32), grid, 1 << 20)
    return sample_shape(extract_mesh(field, 0.0), demo_occupancy, DEMO_BOUNDS, config, seed, "demo")


def load_mesh(path: Path) -> trimesh.Trimesh:
    """Read a triangle mesh (duplicate vertices merged at its own scale, degenerate faces dropped); open,
    overlapping and touching meshes are fine: their inside is what their winding number says."""
    mesh = read_mesh(path)
    extent = float(np.ptp(mesh.vertices, axis=0).max())
    check_training_extent(str(path), extent)          # before labelling, which a part too small would garble
    mesh.update_faces(_with_area(mesh, extent))
    if len(mesh.faces) == 0:
        raise InputError(f"{path}: the mesh has no faces with area")
    return mesh


def _with_area(mesh: trimesh.Trimesh, extent: float) -> np.ndarray:
    """``(F,) bool``: faces whose height (twice the area over the longest edge) is more than
    :data:`MERGE_RELATIVE` times the mesh's largest extent, ``extent``. trimesh's own test is absolute (1e-8): it called
    every face of a part 1e-9 units across degenerate and refused it as "no faces with area"."""
    corners = mesh.vertices[mesh.faces]
    edges = np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=2).max(axis=1)
    twice_area = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    height = np.divide(twice_area, edges, out=np.zeros_like(edges), where=edges > 0)
    return height > MERGE_RELATIVE * extent


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
    data = input_file(data, "data file")
    suffix = data.suffix.lower()
    if suffix == ".npz":
        return load_npz(data)
    if suffix in MESH_FORMATS:
        return mesh_points(data, config, seed)
    raise InputError(f"{data}: unknown data format {suffix or '(no suffix)'!r}; use .npz or a mesh "
                     f"({' '.join(MESH_FORMATS)})")
