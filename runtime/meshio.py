"""Writing meshes: the suffix picks the format; the file appears whole or not at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from occnet.runtime.errors import InputError, first_line
from occnet.runtime.files import atomic_path, check_writable

MESH_FORMATS = {".ply": "ply", ".obj": "obj", ".stl": "stl", ".glb": "glb", ".off": "off"}


def mesh_format(path: Path) -> str:
    """The trimesh file type for ``path``'s suffix; raises :class:`InputError` for an unknown one."""
    suffix = Path(path).suffix.lower()
    if suffix not in MESH_FORMATS:
        raise InputError(f"unknown mesh format {suffix or '(no suffix)'!r} for {path}; "
                         f"use one of {' '.join(MESH_FORMATS)}")
    return MESH_FORMATS[suffix]


def check_mesh_output(path: Path) -> Path:
    """Validate an output path before any work: known suffix, writable folder."""
    mesh_format(path)
    return check_writable(Path(path))


def read_mesh(path: Path) -> trimesh.Trimesh:
    """Read a triangle mesh (scenes are merged into one); raises :class:`InputError` for a missing or
    unreadable file, one without triangles, or NaN/inf vertices."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"mesh file not found: {path}")
    try:
        mesh = trimesh.load(str(path), force="mesh")
    except Exception as exc:  # trimesh raises many untyped errors for unreadable files
        raise InputError(f"{path}: cannot read as a mesh ({first_line(exc)})") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise InputError(f"{path}: contains no triangles")
    if not np.all(np.isfinite(mesh.vertices)):
        raise InputError(f"{path}: has NaN or infinite vertex coordinates")
    return mesh


def write_mesh(mesh: trimesh.Trimesh, path: Path) -> None:
    """Write ``mesh`` to ``path`` atomically in the format its suffix names."""
    file_type = mesh_format(path)
    with atomic_path(Path(path)) as tmp:
        mesh.export(str(tmp), file_type=file_type)
