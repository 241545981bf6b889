"""Collections of shapes in ONet's dataset layout, read as ONet's loaders read them (torch-free: occ-eval scores
a conditional model on one; :mod:`occnet.train.collection` makes them).

ONet's layout: ``ROOT/CLASS/SHAPE/points.npz`` (``points`` float16 in the padded unit cube, ``occupancies``
bit-packed), ``pointcloud.npz`` (``points`` and ``normals`` on the surface), ``model.binvox`` (a 32³ grid), and
the split lists ``ROOT/CLASS/{train,val,test}.lst`` (a shape id a line). Shapes are normalised as ONet
normalises them: their box centred, its longest side 1; query points fill the box padded by 0.1 (±0.55).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from occnet.runtime.errors import InputError
from occnet.runtime.observation import load_observation
from occnet.runtime.points import load_npz

SPLITS = ("train", "val", "test")
PADDING = 0.1
"""ONet's padding of the unit cube: query points and meshes live in ``[-0.55, 0.55]^3``."""
BOX = 0.5 + PADDING / 2
POINTS = 100_000
"""Query points and surface points per shape, as ONet's data has."""
VOXELS = 32
SPLIT_SHARES = (0.8, 0.1, 0.1)
"""How a made collection is split into train, val and test (by a seeded shuffle within each class)."""


@dataclass(frozen=True)
class ShapeEntry:
    """One shape of a collection: its class (``category``), its id and its folder."""

    category: str
    name: str
    folder: Path

    @property
    def label(self) -> str:
        return f"{self.category}/{self.name}"


@dataclass(frozen=True)
class ShapeData:
    """What a shape holds: ``points (N, 3) float32`` and ``occupancies (N,) bool`` in the padded cube,
    ``surface (M, 3) float32`` and ``normals (M, 3) float32`` on the surface."""

    points: np.ndarray
    occupancies: np.ndarray
    surface: np.ndarray
    normals: np.ndarray


def in_onet_layout(root: Path) -> bool:
    """Whether the folder ``root`` holds ONet's split lists (``CLASS/train.lst``, ``val.lst`` or ``test.lst``)."""
    return any((root / c / f"{split}.lst").is_file() for c in _categories(root) for split in SPLITS)


def _categories(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


class Collection:
    """A folder in ONet's layout; :meth:`shapes` lists a split, :meth:`load` and :meth:`voxels` read a shape."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"collection not found: {self.root} is not a folder")
        self.categories = _categories(self.root)
        if not in_onet_layout(self.root):
            raise InputError(f"{self.root} is a folder but not a collection in ONet's layout (no CLASS/train.lst, "
                             "val.lst or test.lst)")

    def shapes(self, split: str) -> list[ShapeEntry]:
        """The shapes ``split`` lists, class by class, in the lists' order; a listed shape without a folder is
        an :class:`InputError` naming it."""
        if split not in SPLITS:
            raise InputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        out = []
        for category in self.categories:
            listing = self.root / category / f"{split}.lst"
            if not listing.is_file():
                continue
            for name in listing.read_text(encoding="utf-8").split():
                folder = self.root / category / name
                if not folder.is_dir():
                    raise InputError(f"{listing} lists {name}, which has no folder {folder}")
                out.append(ShapeEntry(category, name, folder))
        return out

    def load(self, shape: ShapeEntry) -> ShapeData:
        """The shape's labelled points and surface points (ONet's ``points.npz`` and ``pointcloud.npz``)."""
        labelled = load_npz(shape.folder / "points.npz", for_training=False)
        cloud_file = shape.folder / "pointcloud.npz"
        try:
            with np.load(cloud_file, allow_pickle=False) as data:
                surface, normals = data["points"], data["normals"]
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"{cloud_file}: not ONet's pointcloud.npz with points and normals ({exc})") from None
        if surface.ndim != 2 or surface.shape[1] != 3 or normals.shape != surface.shape:
            raise InputError(f"{cloud_file}: points and normals must both be (M, 3), got {surface.shape} and "
                             f"{normals.shape}")
        return ShapeData(labelled.points.astype(np.float32), labelled.labels > 0.5, surface.astype(np.float32),
                         normals.astype(np.float32))

    def voxels(self, shape: ShapeEntry) -> np.ndarray:
        """The shape's ``model.binvox``: ``(32, 32, 32) bool`` indexed ``[x, y, z]``."""
        voxels = load_observation(shape.folder / "model.binvox")
        if voxels.shape != (VOXELS,) * 3:
            raise InputError(f"{shape.folder / 'model.binvox'}: a {VOXELS}^3 grid is needed, got {voxels.shape}")
        return voxels
