"""Labelled points (torch-free): validation and ``.npz`` loading, for training (occ-train) and evaluation (occ-eval)."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from occnet.runtime.contract import check_extent
from occnet.runtime.errors import InputError, first_line
from occnet.runtime.files import check_archive_sizes, input_file

MIN_POINTS = 100
POINT_KEYS = ("points", "pts", "xyz", "coords", "positions", "p")
LABEL_KEYS = ("occupancies", "occupancy", "occ", "labels", "label", "inside", "values")


@dataclass(frozen=True)
class PointSet:
    """Training data: ``points (N, 3) float64`` in world units (full precision: data far from the origin keeps
    it), ``labels (N,) float32`` in {0, 1}, and the box (world coordinates) the network is defined on and
    later meshed in."""

    points: np.ndarray
    labels: np.ndarray
    bounds_min: tuple[float, float, float]
    bounds_max: tuple[float, float, float]
    source: str

    @property
    def sha256(self) -> str:
        """Digest of points and labels: identifies the data a checkpoint was trained on."""
        digest = hashlib.sha256(np.ascontiguousarray(self.points).tobytes())
        digest.update(np.ascontiguousarray(self.labels).tobytes())
        return digest.hexdigest()


def make_point_set(points, labels, source: str, bounds=None, for_training: bool = True) -> PointSet:
    """Validate and wrap labelled points; the box defaults to the points' bounding box.

    Raises :class:`InputError` for wrong shapes, NaN or inf coordinates and labels other than 0/1; for
    training also for fewer than ``MIN_POINTS`` points or only one class (an evaluation set may hold one
    class: a test set far from the shape is all outside).
    """
    points = np.asarray(points)
    labels = np.asarray(labels)
    if points.ndim != 2 or points.shape[1] != 3:
        raise InputError(f"{source}: points must have shape (N, 3), got {points.shape}")
    if not np.issubdtype(points.dtype, np.number) or np.issubdtype(points.dtype, np.complexfloating):
        raise InputError(f"{source}: points must be real numbers, got dtype {points.dtype}")
    if labels.ndim != 1 or len(labels) != len(points):
        raise InputError(f"{source}: {len(points)} points but labels of shape {labels.shape}")
    needed, task = (MIN_POINTS, "train") if for_training else (1, "evaluate")
    if len(points) < needed:
        raise InputError(f"{source}: {len(points)} points is too few to {task} on (need >= {needed})")
    points = points.astype(np.float64)
    if not np.all(np.isfinite(points)):
        raise InputError(f"{source}: {int((~np.isfinite(points)).any(axis=1).sum())} points have NaN or "
                         "infinite coordinates")
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.number) or not np.all((labels == 0) | (labels == 1)):
        bad = labels[~((labels == 0) | (labels == 1))][:3] if np.issubdtype(labels.dtype, np.number) else []
        raise InputError(f"{source}: labels must be 0 (outside) or 1 (inside), found {list(bad)}")
    labels = labels.astype(np.float32)
    inside = int(labels.sum())
    if for_training and (inside == 0 or inside == len(labels)):
        side = "outside" if inside == 0 else "inside"
        raise InputError(f"{source}: all {len(labels)} points are {side}: there is no surface to learn")
    if bounds is None:
        bounds = (points.min(axis=0), points.max(axis=0))
    lo, hi = (tuple(float(v) for v in b) for b in bounds)
    if for_training and not all(h > low for low, h in zip(lo, hi)):
        raise InputError(f"{source}: the points span no volume (box {lo} .. {hi})")
    if for_training:
        check_training_extent(source, max(h - low for low, h in zip(lo, hi)))
    return PointSet(points, labels, lo, hi, source)


def check_training_extent(source: str, extent: float) -> None:
    """Refuse data whose box is ``extent`` units across where the contract's float32 cannot resolve it
    (:func:`~occnet.runtime.contract.check_extent`), as an :class:`InputError` naming ``source``."""
    try:
        check_extent(extent)
    except ValueError as exc:
        raise InputError(f"{source}: {exc}") from None


def load_npz(path: Path, for_training: bool = True) -> PointSet:
    """Read labelled points from ``.npz``: common key names, and ONet's float16 points with bit-packed
    occupancies (``np.packbits``) too. ``for_training``: see :func:`make_point_set`."""
    path = Path(path)
    path = input_file(path, "points file")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not a readable .npz file (not the zip archive of arrays np.savez writes)")
    check_archive_sizes(path, "arrays")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable .npz file ({first_line(exc)})") from None
    points_key = next((k for k in POINT_KEYS if k in arrays), None)
    labels_key = next((k for k in LABEL_KEYS if k in arrays), None)
    if points_key is None or labels_key is None:
        raise InputError(f"{path}: needs a points array ({'/'.join(POINT_KEYS)}) and an occupancy array "
                         f"({'/'.join(LABEL_KEYS)}); found keys {sorted(arrays)}")
    points, labels = arrays[points_key], arrays[labels_key]
    if points.ndim == 2 and labels.dtype == np.uint8 and len(labels) == -(-len(points) // 8) != len(points):
        labels = np.unpackbits(labels)[:len(points)]
    return make_point_set(points, labels, str(path), for_training=for_training)


def iou(intersection: int, union: int) -> float:
    """Intersection over union of two occupancy labellings from their counts; 1.0 when both are empty (they
    agree everywhere). The one IoU of training, ``occ-eval`` and the volumetric comparison of meshes."""
    return intersection / union if union else 1.0
