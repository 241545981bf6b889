"""Making collections of shapes in ONet's dataset layout (:mod:`occnet.runtime.collection` reads them): from a
folder of meshes (:func:`prepare_meshes`: labelled by winding numbers, prepared once and kept) or from random
unions and differences of primitives (:func:`synthetic_collection`, deterministic by seed: the demo's and the
tests')."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from occnet.runtime.collection import BOX, POINTS, SPLIT_SHARES, SPLITS, VOXELS, Collection
from occnet.runtime.errors import InputError
from occnet.runtime.files import write_bytes_atomic


def write_shape(folder: Path, occupancy: Callable[[np.ndarray], np.ndarray], surface: np.ndarray,
                normals: np.ndarray, seed: int) -> None:
    """Write one shape in ONet's layout: ``POINTS`` uniform query points in the padded cube labelled by
    ``occupancy`` (``(N, 3) float64 -> (N,) bool``), the ``surface (M, 3)`` points with their ``normals`` and
    the 32³ grid of voxel centres labelled the same way."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-BOX, BOX, (POINTS, 3))
    inside = occupancy(points)
    axis = (np.arange(VOXELS) + 0.5) / VOXELS - 0.5
    centres = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(folder / "points.npz", _npz(points=points.astype(np.float16),
                                                   occupancies=np.packbits(inside)))
    write_bytes_atomic(folder / "pointcloud.npz", _npz(points=surface.astype(np.float32),
                                                       normals=normals.astype(np.float32)))
    write_bytes_atomic(folder / "model.binvox", binvox_bytes(occupancy(centres).reshape((VOXELS,) * 3)))


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


def synthetic_collection(root: str | Path, per_class: int, seed: int = 0) -> Collection:
    """Write (once) a collection of ``per_class`` solids of each synthetic class (:mod:`occnet.train.synthetic`)
    drawn by ``seed`` into ``root``, split by :func:`write_splits`; a folder that already holds the same
    collection (its ``collection.json`` says so) is opened as it is."""
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
            write_shape(root / category / names[-1], solid.occupancy, surface, solid.mesh.face_normals[faces],
                        shape_seed)
        write_splits(root, category, names, seed + index)
    write_bytes_atomic(root / "collection.json", json.dumps(recipe, sort_keys=True).encode())
    return Collection(root)


def prepare_meshes(source: str | Path, root: str | Path, seed: int = 0) -> Collection:
    """Prepare a folder of meshes (``source/CLASS/*.{obj,ply,stl,off,glb}``; meshes directly in ``source``
    are class ``meshes``) as a collection in ``root``: each mesh normalised as ONet normalises (box centred,
    longest side 1), its query points labelled by winding numbers (so open and overlapping meshes are fine),
    its surface sampled with normals. Each shape is prepared once: a rerun skips shapes whose mesh bytes have
    not changed (their digests are kept in ``collection.json``) and redoes the others."""
    from occnet.runtime.inside import contains
    from occnet.runtime.meshio import read_mesh
    from occnet.runtime.settings import MESH_FORMATS

    source, root = Path(source), Path(root)
    if not source.is_dir():
        raise InputError(f"mesh folder not found: {source}")
    record_file = root / "collection.json"
    done = json.loads(record_file.read_text()).get("digests", {}) if record_file.is_file() else {}
    meshes = sorted(p for p in source.rglob("*") if p.suffix.lower() in MESH_FORMATS and p.is_file())
    if not meshes:
        raise InputError(f"no meshes in {source} (looked for {' '.join(MESH_FORMATS)})")
    names: dict[str, list[str]] = {}
    digests = {}
    for number, path in enumerate(meshes):
        category = path.parent.name if path.parent != source else "meshes"
        name = path.stem
        label = f"{category}/{name}"
        if name in names.setdefault(category, []):
            raise InputError(f"two meshes would both be shape {label}: rename one")
        names[category].append(name)
        digests[label] = hashlib.sha256(path.read_bytes()).hexdigest()
        folder = root / category / name
        if done.get(label) == digests[label] and (folder / "model.binvox").is_file():
            continue
        mesh = read_mesh(path)
        lo, hi = mesh.bounds
        mesh.vertices = (mesh.vertices - (lo + hi) / 2) / float((hi - lo).max())
        surface, faces = mesh.sample(POINTS, return_index=True, seed=seed + number)
        write_shape(folder, lambda p, m=mesh: contains(m.vertices, m.faces, p).inside, surface,
                    mesh.face_normals[faces], seed + number)
    for index, (category, shapes) in enumerate(sorted(names.items())):
        write_splits(root, category, shapes, seed + index)
    write_bytes_atomic(record_file, json.dumps({"kind": "meshes", "seed": seed, "digests": digests},
                                               sort_keys=True).encode())
    return Collection(root)


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
