"""Writing meshes: the suffix picks the format; the file appears whole or not at all."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import trimesh

from occnet.runtime.errors import InputError, OutputError, first_line
from occnet.runtime.files import check_output, input_file, write_bytes_atomic
from occnet.runtime.settings import MESH_FORMATS


def mesh_format(path: Path) -> str:
    """The trimesh file type for ``path``'s suffix; raises :class:`InputError` for an unknown one."""
    suffix = Path(path).suffix.lower()
    if suffix not in MESH_FORMATS:
        raise InputError(f"unknown mesh format {suffix or '(no suffix)'!r} for {path}; "
                         f"use one of {' '.join(MESH_FORMATS)}")
    return MESH_FORMATS[suffix]


def check_mesh_output(path: Path, inputs: Iterable[Path] = ()) -> bool:
    """Validate an output path before any work: known suffix, writable, not one of ``inputs``; True when it
    would replace an existing file."""
    mesh_format(path)
    return check_output(Path(path), inputs)


MERGE_RELATIVE = 1e-10
"""Vertices closer than this times the mesh's largest extent are one vertex."""


def read_mesh(path: Path) -> trimesh.Trimesh:
    """Read a triangle mesh (scenes are merged into one, each part with its transform) and join its
    duplicate vertices with a tolerance relative to its size, not trimesh's absolute 1e-8, which tears small
    parts (a 5 mm part in metres) and merges nothing useful far from the origin. Raises :class:`InputError`
    for a missing or unreadable file, one without triangles, or NaN/inf vertices."""
    path = Path(path)
    path = input_file(path, "mesh file")
    if path.suffix.lower() == ".stl":
        _check_binary_stl(path)
    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except ImportError:   # trimesh falls back to optional text-encoding helpers on garbled or truncated files
        raise InputError(f"{path}: cannot read as a mesh (truncated or malformed file)") from None
    except Exception as exc:  # trimesh raises many untyped errors for unreadable files
        raise InputError(f"{path}: cannot read as a mesh ({first_line(exc)})") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise InputError(f"{path}: contains no triangles")
    if not np.all(np.isfinite(mesh.vertices)):
        raise InputError(f"{path}: has NaN or infinite vertex coordinates")
    mesh.merge_vertices(digits_vertex=_decimals(mesh.vertices, MERGE_RELATIVE))
    return mesh


def _check_binary_stl(path: Path) -> None:
    """Refuse a binary STL shorter than its header's triangle count says (80-byte header, uint32 count, 50 bytes
    a triangle). trimesh would read it again as ASCII STL, and what it says then depends on which text-encoding
    helpers happen to be installed."""
    with open(path, "rb") as handle:
        head = handle.read(84)
    if len(head) < 84 or head.lstrip().startswith(b"solid"):
        return
    count = int(np.frombuffer(head[80:84], "<u4")[0])
    size, expected = path.stat().st_size, 84 + 50 * count
    if size < expected:
        raise InputError(f"{path}: cannot read as a mesh (a truncated binary STL: its header promises {count:,} "
                         f"triangles, {expected:,} bytes; the file has {size:,})")


FLOAT32_FORMATS = ("stl", "glb")
"""Formats that store vertex coordinates as float32."""


def write_mesh(mesh: trimesh.Trimesh, path: Path) -> None:
    """Write ``mesh`` to ``path`` atomically in the format its suffix names. PLY, OBJ and OFF keep float64
    vertices (PLY as binary doubles; trimesh's own PLY writer rounds to float32, which moves vertices far from
    the origin by up to 0.06 at 1e6); STL and GLB are float32 by definition, and are refused for a mesh whose
    vertices float32 would merge (:func:`_check_float32_holds`)."""
    file_type = mesh_format(path)
    if file_type in FLOAT32_FORMATS:
        _check_float32_holds(mesh, path, file_type)
    if file_type == "ply":
        data = _ply_float64(mesh)
    elif file_type in ("obj", "off"):                   # decimals enough for 1e-12 of the extent
        data = mesh.export(file_type=file_type, digits=_decimals(mesh.vertices, 1e-12))
    else:
        data = mesh.export(file_type=file_type)
    write_bytes_atomic(Path(path), data.encode() if isinstance(data, str) else data)


def _check_float32_holds(mesh: trimesh.Trimesh, path: Path, file_type: str) -> None:
    """Refuse to write ``mesh`` in a float32 format where float32 would merge distinct vertices: far from the
    origin its steps are coarser than the mesh's cells (about 1.2e-4 at 1,000), and the file would read back
    as another mesh, not watertight, than the one reported (models/ribs.onnx to STL: 419 vertices merged)."""
    vertices = np.asarray(mesh.vertices)
    merged = len(np.unique(vertices, axis=0)) - len(np.unique(vertices.astype(np.float32), axis=0))
    if merged:
        raise OutputError(f"{path}: {file_type.upper()} stores coordinates as float32, which would merge {merged:,} "
                          f"of the mesh's {len(vertices):,} vertices this far from the origin (coordinates up to "
                          f"{np.abs(vertices).max():.6g}); write .ply, .obj or .off, which keep float64")


def _decimals(vertices: np.ndarray, relative: float) -> int:
    """Decimal places that resolve ``relative`` times the largest extent of ``vertices``, at most as many as
    keep every coordinate, scaled to an integer, inside int64 (what trimesh rounds with)."""
    extent = max(float(np.ptp(vertices, axis=0).max()), 1e-300)
    largest = max(float(np.abs(vertices).max()), 1e-300)
    return int(min(-np.floor(np.log10(extent * relative)), 18 - np.ceil(np.log10(largest))))


def _ply_float64(mesh: trimesh.Trimesh) -> bytes:
    """Binary little-endian PLY: ``double`` x, y, z per vertex, a ``uchar``-counted list of ``int`` indices per
    face."""
    vertices = np.ascontiguousarray(mesh.vertices, dtype="<f8")
    faces = np.zeros(len(mesh.faces), dtype=[("count", "u1"), ("index", "<i4", (3,))])
    faces["count"] = 3
    faces["index"] = mesh.faces
    header = (f"ply\nformat binary_little_endian 1.0\ncomment occnet\nelement vertex {len(vertices)}\n"
              "property double x\nproperty double y\nproperty double z\n"
              f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n")
    return header.encode("ascii") + vertices.tobytes() + faces.tobytes()
