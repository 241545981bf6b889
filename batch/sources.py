"""Which shapes a batch holds: files, folders searched recursively, or globs, each shape named by its path."""

from __future__ import annotations

import glob
import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from occnet.runtime.errors import InputError
from occnet.runtime.points import LABEL_KEYS
from occnet.runtime.settings import MESH_FORMATS

SHAPE_SUFFIXES = (".npz", *MESH_FORMATS)
"""What a shape's source may be: labelled points or a mesh."""


@dataclass(frozen=True)
class Kind:
    """What a batch's sources are: ``what`` they are called, the ``suffixes`` taken, the file ``stems`` that
    name no source but their folder's (ONet's ``category/shape_id/points.npz``), and for an ``.npz`` the
    arrays that make it one (``needs``, any of) and that make it something else (``refuses``)."""

    what: str
    suffixes: tuple[str, ...]
    stems: tuple[str, ...]
    needs: tuple[str, ...]
    refuses: tuple[str, ...] = ()


SHAPES = Kind("shapes", SHAPE_SUFFIXES, ("points",), tuple(LABEL_KEYS))
"""Shapes to learn: meshes, and labelled points (ONet's ``pointcloud.npz`` has no occupancies: passed over)."""
POINT_CLOUDS = Kind("point clouds", (".ply", ".obj", ".xyz", ".npz"), ("pointcloud",), ("points",), tuple(LABEL_KEYS))
"""Observations of a point-cloud model: ONet's ``pointcloud.npz`` (not its labelled ``points.npz``) and files."""
VOXEL_GRIDS = Kind("voxel grids", (".binvox", ".npz", ".npy"), ("model",), ("voxels",))
"""Observations of a voxel model: ONet's ``model.binvox`` and ``.npz``/``.npy`` grids."""


@dataclass(frozen=True)
class Shape:
    """One shape of a batch: its name (a relative path, ``/``-separated, the name of its output folder) and its
    source file."""

    name: str
    source: Path

    def read(self) -> bytes:
        """The source file's bytes: what travels to the worker (no shared file system needed)."""
        try:
            return self.source.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {self.source}: {exc.strerror}") from None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def find_shapes(sources: list[str | Path], exclude: Path | None = None, kind: Kind = SHAPES) -> list[Shape]:
    """The shapes in ``sources``, sorted by name: a file is one shape (named by its stem); a folder is searched
    recursively for meshes and labelled ``.npz`` points (ONet's ``pointcloud.npz``, which has no occupancies,
    is passed over), each named by its path relative to the folder; a glob is expanded and named relative to
    its fixed leading folders. A path that exists is taken as it is, wildcard characters and all
    (``scans[2024]/``). A ``points.npz`` takes its folder's name. Nothing under ``exclude`` (the output
    folder) counts, and a source that lies in it is refused. Raises :class:`InputError` for a source that does
    not exist or lies in ``exclude``, names that clash, or no shapes. ``kind``: what the sources are (shapes
    to learn, or the observations a conditional model reconstructs).
    """
    found: dict[str, Path] = {}
    skip = Path(exclude).resolve() if exclude is not None else None
    for source in map(str, sources):
        if skip is not None and Path(source).exists() and _within(Path(source).resolve(), skip):
            raise InputError(f"{source} lies in the output folder {exclude}, where occ-batch writes its results "
                             "(and whose files it never takes as shapes); move the shapes out or choose another "
                             "--out-dir")
        for name, path in _expand(source, kind):
            if skip is not None and _within(path.resolve(), skip):
                continue
            if name in found and found[name].resolve() != path.resolve():
                raise InputError(f"two sources would both be shape {name!r}: {found[name]} and {path}; pass "
                                 "their common folder instead so that names keep their folders")
            found[name] = path
    if not found:
        looked = (f".npz points and {' '.join(MESH_FORMATS)} meshes" if kind == SHAPES else
                  f"{kind.what}: {' '.join(kind.suffixes)}")
        raise InputError(f"no {kind.what} found in {' '.join(map(str, sources))} (looked for {looked})")
    return [Shape(name, found[name]) for name in sorted(found)]


def _within(path: Path, folder: Path) -> bool:
    """Whether resolved ``path`` is resolved ``folder`` or lies under it."""
    return path == folder or folder in path.parents


def _expand(source: str, kind: Kind) -> list[tuple[str, Path]]:
    """(name, file) pairs of one source."""
    path = Path(source)
    if glob.has_magic(source) and not path.exists():
        return _glob(source, kind)
    if path.is_dir():
        return _folder(path, kind)
    if not path.is_file():
        raise InputError(f"{source} does not exist")
    if path.suffix.lower() not in kind.suffixes:
        wanted = f".npz or a mesh ({' '.join(MESH_FORMATS)})" if kind == SHAPES else " ".join(kind.suffixes)
        raise InputError(f"{source}: unknown data format {path.suffix or '(no suffix)'!r}; use {wanted}")
    relative = Path(path.resolve().parent.name, path.name) if path.stem in kind.stems else Path(path.name)
    return [(_name(relative, kind), path)]


def _glob(source: str, kind: Kind) -> list[tuple[str, Path]]:
    """(name, file) pairs of a glob. Its longest leading folder that exists is taken literally (escaped), so a
    wildcard character in a folder's own name (``scans[2024]/*.stl``) is that character, not a pattern; names
    are relative to the folders before the first wildcard after it."""
    parts = Path(source).parts
    literal = max(k for k in range(len(parts)) if Path(*parts[:k]).is_dir())
    fixed = Path(*parts[:literal], *_leading(parts[literal:]))
    pattern = os.path.join(*(glob.escape(part) for part in parts[:literal]), *parts[literal:])
    matches = [Path(m) for m in sorted(glob.glob(pattern, recursive=True))]
    if not matches:
        raise InputError(f"no file matches {source}")
    pairs = []
    for match in matches:
        pairs += _folder(match, kind) if match.is_dir() else [(_name(match.relative_to(fixed), kind), match)]
    return [(n, p) for n, p in pairs if _is_source(p, kind)]


def _leading(parts: tuple[str, ...]) -> list[str]:
    """The parts of a glob before its first wildcard (its last part, the file pattern, never counts)."""
    out = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        out.append(part)
    return out


def _folder(folder: Path, kind: Kind) -> list[tuple[str, Path]]:
    """(name, file) pairs of the sources under ``folder``, symbolic links to folders followed (collections are
    often assembled from links; ``rglob`` passed them over and said "no shapes found"), each real folder once
    so that a link back up cannot loop."""
    pairs, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = Path(root).resolve()
        if real in seen:
            dirs.clear()                                      # a loop, or a folder reached twice: once is enough
            continue
        seen.add(real)
        dirs.sort()
        for name in sorted(files):
            path = Path(root, name)
            if path.is_file() and _is_source(path, kind):
                pairs.append((_name(path.relative_to(folder), kind), path))
    return sorted(pairs)


def _is_source(path: Path, kind: Kind) -> bool:
    """A file of ``kind``'s suffixes; an ``.npz`` only with one of the arrays it ``needs`` and none it
    ``refuses`` (read from the archive's directory, not its data)."""
    suffix = path.suffix.lower()
    if suffix not in kind.suffixes:
        return False
    if suffix != ".npz":
        return True
    try:
        with zipfile.ZipFile(path) as archive:
            arrays = {name.removesuffix(".npy") for name in archive.namelist()}
    except (OSError, zipfile.BadZipFile):
        return True                  # a broken file is a source that fails with its own message, not a skip
    return bool(arrays & set(kind.needs)) and not arrays & set(kind.refuses)


def _name(relative: Path, kind: Kind) -> str:
    """The name of a source path relative to its folder: the path without suffix, or the folder's path for one
    of ``kind``'s stems (``points.npz``)."""
    if relative.stem in kind.stems and len(relative.parts) > 1:
        return relative.parent.as_posix()
    return relative.with_suffix("").as_posix()
