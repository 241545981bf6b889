"""Observations a conditional model reconstructs a shape from: point clouds and voxel grids, read from files.

Point clouds: ``.ply``, ``.obj`` (their vertices), ``.xyz`` (text, x y z per line, further columns ignored) or
``.npz`` with ``points`` (as ONet's ``pointcloud.npz``). Voxel grids: ONet's ``.binvox``, or ``.npz``/``.npy``
with ``voxels``, cubic, 0/1 or boolean, indexed ``[x, y, z]``.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from occnet.runtime.errors import InputError, first_line
from occnet.runtime.files import check_archive_sizes, input_file

CLOUD_SUFFIXES = (".ply", ".obj", ".xyz", ".npz")
VOXEL_SUFFIXES = (".binvox", ".npz", ".npy")
MAX_VOXELS = 256
"""Largest voxel grid read, per side."""


@dataclass(frozen=True)
class Frame:
    """A similarity map into a model's frame: ``(x - centre) / scale``; :meth:`back` maps mesh vertices out."""

    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0

    def into(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, np.float64) - np.asarray(self.centre)) / self.scale

    def back(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, np.float64) * self.scale + np.asarray(self.centre)


def normalizing_frame(cloud: np.ndarray) -> Frame:
    """The frame ONet normalises shapes into, measured on a cloud ``(T, 3)``: its box centred, its longest
    side 1."""
    lo, hi = cloud.min(axis=0), cloud.max(axis=0)
    extent = float((hi - lo).max())
    if not extent > 0:
        raise InputError("the point cloud has no extent (all its points coincide): nothing to normalise")
    return Frame(tuple(float(v) for v in (lo + hi) / 2), extent)


def load_observation(path: Path) -> np.ndarray:
    """The observation in ``path``: a cloud ``(T, 3) float64`` or a voxel grid ``(R, R, R) bool``;
    :class:`InputError` naming what is wrong."""
    path = Path(path)
    path = input_file(path, "observation file")
    suffix = path.suffix.lower()
    if suffix == ".binvox":
        return _binvox(path)
    if suffix in (".npz", ".npy"):
        return _numpy(path)
    if suffix == ".xyz":
        return _cloud(_xyz(path), path)
    if suffix in (".ply", ".obj"):
        return _cloud(_vertices(path), path)
    raise InputError(f"{path}: unknown observation format {suffix or '(no suffix)'!r}; point clouds are "
                     f"{' '.join(CLOUD_SUFFIXES)}, voxel grids {' '.join(VOXEL_SUFFIXES)}")


def _cloud(points: np.ndarray, path: Path) -> np.ndarray:
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise InputError(f"{path}: a point cloud must be points (T, 3) with T >= 1, got shape {points.shape}")
    if points.dtype.kind not in "iuf":
        raise InputError(f"{path}: point coordinates must be numbers, got dtype {points.dtype}")
    if not np.all(np.isfinite(points)):
        raise InputError(f"{path}: the point cloud holds NaN or infinite coordinates")
    return points.astype(np.float64)


def _grid(voxels: np.ndarray, path: Path) -> np.ndarray:
    voxels = np.asarray(voxels)
    if voxels.ndim != 3 or len(set(voxels.shape)) != 1 or not 1 <= voxels.shape[0] <= MAX_VOXELS:
        raise InputError(f"{path}: a voxel grid must be cubic, (R, R, R) with R <= {MAX_VOXELS}, got shape "
                         f"{voxels.shape}")
    if voxels.dtype != bool and not (voxels.dtype.kind in "iuf" and np.all((voxels == 0) | (voxels == 1))):
        raise InputError(f"{path}: a voxel grid must hold 0 and 1 (or booleans)")
    return voxels.astype(bool)


def _numpy(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        try:
            return _grid(np.load(path, allow_pickle=False), path)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"{path}: not a readable .npy array ({first_line(exc)})") from None
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not an .npz archive")
    check_archive_sizes(path, "arrays")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "points" in data.files:
                return _cloud(data["points"], path)
            if "voxels" in data.files:
                return _grid(data["voxels"], path)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable .npz archive ({first_line(exc)})") from None
    raise InputError(f"{path}: holds neither 'points' (a point cloud) nor 'voxels' (a voxel grid)")


def _xyz(path: Path) -> np.ndarray:
    try:
        rows = np.loadtxt(path, dtype=np.float64, comments="#", ndmin=2)
    except ValueError as exc:
        raise InputError(f"{path}: not an .xyz point list ({first_line(exc)})") from None
    if rows.ndim != 2 or rows.shape[1] < 3:
        raise InputError(f"{path}: an .xyz file holds x y z on each line, got {rows.shape[1:]} columns")
    return rows[:, :3]


def _vertices(path: Path) -> np.ndarray:
    import trimesh

    try:
        loaded = trimesh.load(str(path), process=False)
    except Exception as exc:  # trimesh raises many untyped errors for unreadable files
        raise InputError(f"{path}: cannot read as a point cloud ({first_line(exc)})") from None
    if isinstance(loaded, trimesh.Scene):
        loaded = loaded.to_geometry() if loaded.geometry else None
    vertices = getattr(loaded, "vertices", None)
    if vertices is None or len(vertices) == 0:
        raise InputError(f"{path}: holds no points")
    return np.asarray(vertices)


def _binvox(path: Path) -> np.ndarray:
    """A ``.binvox`` grid: a text header (``#binvox 1``, ``dim``, ``translate``, ``scale``, ``data``), then
    run-length pairs (value, count) over the voxels in x, z, y order (y fastest), as ONet reads them."""
    raw = path.read_bytes()
    header_end = raw.find(b"data\n")
    if not raw.startswith(b"#binvox") or header_end < 0:
        raise InputError(f"{path}: not a binvox file (no '#binvox' header ending in 'data')")
    dims = None
    for line in raw[:header_end].decode("ascii", "replace").splitlines():
        if line.startswith("dim "):
            try:
                dims = tuple(int(v) for v in line.split()[1:])
            except ValueError:
                dims = None
    if dims is None or len(dims) != 3 or len(set(dims)) != 1 or not 1 <= dims[0] <= MAX_VOXELS:
        raise InputError(f"{path}: binvox dimensions must be cubic, at most {MAX_VOXELS} a side, got {dims}")
    pairs = np.frombuffer(raw[header_end + 5:], np.uint8)
    if len(pairs) % 2:
        raise InputError(f"{path}: binvox data is truncated (an odd number of run-length bytes)")
    values, counts = pairs[0::2], pairs[1::2].astype(np.int64)
    if int(counts.sum()) != dims[0] ** 3:
        raise InputError(f"{path}: binvox runs cover {int(counts.sum()):,} voxels, not the {dims[0] ** 3:,} of "
                         f"its {dims[0]}^3 grid")
    flat = np.repeat(values.astype(bool), counts)
    return flat.reshape(dims).transpose(0, 2, 1)              # stored [x, z, y]; ONet indexes [x, y, z]
