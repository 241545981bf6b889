"""Making collections of shapes in ONet's dataset layout (:mod:`occnet.runtime.collection` reads them): from a
folder of meshes (:func:`prepare_meshes`: labelled by winding numbers, prepared once and kept, in this process
or mapped over workers) or from random unions and differences of primitives (:func:`synthetic_collection`,
deterministic by seed: the demo's and the tests')."""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from occnet.runtime.collection import BOX, POINTS, SPLIT_SHARES, SPLITS, VOXELS, Collection
from occnet.runtime.errors import InputError
from occnet.runtime.files import write_bytes_atomic

Mapper = Callable[[Callable, Iterable[tuple]], Iterator]
"""How :func:`prepare_meshes` runs its jobs: ``mapper(function, jobs)`` yields ``function(*job)`` for each job,
in order (Python's ``map`` over unpacked jobs in this process; :func:`occnet.batch.prepare.ray_mapper` on Ray)."""
DEMO_PER_CLASS = 313
"""Solids of each class in the built-in synthetic collection ``occ-train --condition`` trains on without data:
1,004 training shapes, as ``benchmarks/bench_conditional.py`` measures."""


def shape_files(occupancy: Callable[[np.ndarray], np.ndarray], surface: np.ndarray, normals: np.ndarray,
                seed: int) -> dict[str, bytes]:
    """One shape's files in ONet's layout, by name: ``POINTS`` uniform query points in the padded cube labelled
    by ``occupancy`` (``(N, 3) float64 -> (N,) bool``), the ``surface (M, 3)`` points with their ``normals`` and
    the 32³ grid of voxel centres labelled the same way."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-BOX, BOX, (POINTS, 3))
    inside = occupancy(points)
    axis = (np.arange(VOXELS) + 0.5) / VOXELS - 0.5
    centres = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    return {"points.npz": _npz(points=points.astype(np.float16), occupancies=np.packbits(inside)),
            "pointcloud.npz": _npz(points=surface.astype(np.float32), normals=normals.astype(np.float32)),
            "model.binvox": binvox_bytes(occupancy(centres).reshape((VOXELS,) * 3))}


def write_shape(folder: Path, files: dict[str, bytes]) -> None:
    """Write a shape's ``files`` (:func:`shape_files`) into ``folder``, each atomically, ``model.binvox`` last:
    its presence marks a whole shape."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in sorted(files, key=lambda n: n == "model.binvox"):
        write_bytes_atomic(folder / name, files[name])


def write_splits(root: Path, category: str, names: list[str], seed: int) -> None:
    """``CLASS/{train,val,test}.lst``: ``names`` shuffled by ``seed`` and cut by :data:`SPLIT_SHARES` (each
    split gets at least one shape where there are three or more)."""
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    n_val = max(1 if len(names) >= 3 else 0, round(len(names) * SPLIT_SHARES[1]))
    n_test = max(1 if len(names) >= 3 else 0, round(len(names) * SPLIT_SHARES[2]))
    cut = len(names) - n_val - n_test
    for split, part in zip(SPLITS, (order[:cut], order[cut:cut + n_val], order[cut + n_val:])):
        write_bytes_atomic(root / category / f"{split}.lst", "".join(f"{name}\n" for name in sorted(part)).encode())


def binvox_bytes(voxels: np.ndarray) -> bytes:
    """``voxels (R, R, R) bool`` (indexed ``[x, y, z]``) as a ``.binvox`` file: the header, then (value, count)
    runs over the voxels in x, z, y order (y fastest), runs of at most 255."""
    flat = np.asarray(voxels, bool).transpose(0, 2, 1).reshape(-1).astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [len(flat)]]))
    values, counts = [], []
    for start, length in zip(starts, lengths):           # runs longer than 255 are split into several
        full, rest = divmod(int(length), 255)
        values += [flat[start]] * (full + (rest > 0))
        counts += [255] * full + ([rest] if rest else [])
    side = voxels.shape[0]
    header = f"#binvox 1\ndim {side} {side} {side}\ntranslate -0.5 -0.5 -0.5\nscale 1\ndata\n".encode()
    return header + np.stack([np.array(values, np.uint8), np.array(counts, np.uint8)], axis=1).tobytes()


def synthetic_collection(root: str | Path, per_class: int, seed: int = 0,
                         progress: Callable[[int, int], None] | None = None) -> Collection:
    """Write (once) a collection of ``per_class`` solids of each synthetic class (:mod:`occnet.train.synthetic`)
    drawn by ``seed`` into ``root``, split by :func:`write_splits`; a folder that already holds the same
    collection (its ``collection.json`` says so) is opened as it is. ``progress(done, total)`` after each."""
    from occnet.train.synthetic import CLASSES, make_solid

    root = Path(root)
    recipe = {"kind": "synthetic", "per_class": per_class, "seed": seed, "points": POINTS}
    if _made(root, recipe):
        return Collection(root)
    for index, category in enumerate(CLASSES):
        names = []
        for number in range(per_class):
            shape_seed = seed * 1_000_003 + index * 10_007 + number
            solid = make_solid(category, shape_seed)
            surface, faces = solid.mesh.sample(POINTS, return_index=True, seed=shape_seed)
            names.append(f"{category}_{number:04d}")
            write_shape(root / category / names[-1],
                        shape_files(solid.occupancy, surface, solid.mesh.face_normals[faces], shape_seed))
            if progress:
                progress(index * per_class + number + 1, len(CLASSES) * per_class)
        write_splits(root, category, names, seed + index)
    write_bytes_atomic(root / "collection.json", json.dumps(recipe, sort_keys=True).encode())
    return Collection(root)


def prepare_mesh(label: str, suffix: str, data: bytes, seed: int) -> dict[str, bytes]:
    """The files (:func:`shape_files`) of the mesh whose file bytes are ``data`` (a ``suffix`` file, shape
    ``label`` for errors): normalised as ONet normalises (box centred, longest side 1), its query points labelled
    by winding numbers (open and overlapping meshes are fine), its surface sampled with normals. Bytes in, bytes
    out: it runs where the files are not, on a Ray worker."""
    from occnet.runtime.inside import contains
    from occnet.runtime.meshio import read_mesh

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"mesh{suffix}"
        path.write_bytes(data)
        try:
            mesh = read_mesh(path)
        except InputError as exc:
            raise InputError(str(exc).replace(str(path), label)) from None
    lo, hi = mesh.bounds
    mesh.vertices = (mesh.vertices - (lo + hi) / 2) / float((hi - lo).max())
    surface, faces = mesh.sample(POINTS, return_index=True, seed=seed)
    return shape_files(lambda p: contains(mesh.vertices, mesh.faces, p).inside, surface, mesh.face_normals[faces],
                       seed)


def prepare_meshes(source: str | Path, root: str | Path, seed: int = 0, mapper: Mapper | None = None,
                   progress: Callable[[int, int], None] | None = None) -> Collection:
    """Prepare a folder of meshes (``source/CLASS/*.{obj,ply,stl,off,glb}``; meshes directly in ``source``
    are class ``meshes``) as a collection in ``root``, each with :func:`prepare_mesh`, through ``mapper``
    (default: one after another here); ``progress(done, total)`` after each. Each shape is prepared once: its
    mesh's digest is recorded in ``collection.json`` as soon as its files are written, so a rerun (also after an
    interruption or a mesh that fails) skips the shapes whose mesh bytes have not changed."""
    from occnet.runtime.settings import MESH_FORMATS

    source, root = Path(source), Path(root)
    if not source.is_dir():
        raise InputError(f"mesh folder not found: {source}")
    record_file = root / "collection.json"
    try:
        kept = json.loads(record_file.read_text()).get("digests", {}) if record_file.is_file() else {}
    except (OSError, ValueError, AttributeError):
        kept = {}
    meshes = sorted(p for p in source.rglob("*") if p.suffix.lower() in MESH_FORMATS and p.is_file())
    if not meshes:
        raise InputError(f"{source} holds no meshes ({' '.join(MESH_FORMATS)}) and is no collection in ONet's "
                         "layout (CLASS/train.lst, val.lst, test.lst)")
    names: dict[str, list[str]] = {}
    digests, todo = {}, []
    for number, path in enumerate(meshes):
        category = path.parent.name if path.parent != source else "meshes"
        label = f"{category}/{path.stem}"
        if path.stem in names.setdefault(category, []):
            raise InputError(f"two meshes would both be shape {label}: rename one")
        names[category].append(path.stem)
        digests[label] = hashlib.sha256(path.read_bytes()).hexdigest()
        if kept.get(label) != digests[label] or not (root / label / "model.binvox").is_file():
            todo.append((label, path, seed + number))
    redo = {label for label, _, _ in todo}
    done = {label: digest for label, digest in digests.items() if label not in redo}
    jobs = ((label, path.suffix.lower(), path.read_bytes(), shape_seed) for label, path, shape_seed in todo)
    results = (mapper or _in_turn)(prepare_mesh, jobs)
    for count, ((label, _, _), files) in enumerate(zip(todo, results, strict=True), 1):
        write_shape(root / label, files)
        done[label] = digests[label]
        _record(record_file, seed, done)
        if progress:
            progress(count, len(todo))
    for index, (category, shapes) in enumerate(sorted(names.items())):
        write_splits(root, category, shapes, seed + index)
    _record(record_file, seed, digests)
    return Collection(root)


def _in_turn(function: Callable, jobs: Iterable[tuple]) -> Iterator:
    """The default :data:`Mapper`: each job in this process, in turn."""
    for job in jobs:
        yield function(*job)


def _record(path: Path, seed: int, digests: dict[str, str]) -> None:
    """``collection.json`` of a prepared folder: the meshes' digests of the shapes written so far."""
    write_bytes_atomic(path, json.dumps({"kind": "meshes", "seed": seed, "digests": digests}, sort_keys=True).encode())


def _made(root: Path, recipe: dict) -> bool:
    """Whether ``root`` already holds the collection ``recipe`` describes."""
    try:
        return json.loads((root / "collection.json").read_text()) == recipe
    except (OSError, ValueError):
        return False


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
