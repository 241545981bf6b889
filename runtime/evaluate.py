"""Mesh and model quality, as ONet evaluates it: Chamfer-L1, normal consistency, F-score, volumetric IoU.

Distances are divided by the reference's longest bounding-box side, so figures compare across shapes and
units. Surface samples carry their face normals; nearest neighbours come from a KD-tree. Volumetric IoU
labels uniform samples by winding number (:mod:`occnet.runtime.inside`): exact ray parity on closed meshes,
the generalised winding number on open ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from occnet.runtime import signals
from occnet.runtime.errors import InputError, ResourceError
from occnet.runtime.field import batched
from occnet.runtime.inside import MAX_AMBIGUOUS, contains
from occnet.runtime.machine import available_memory
from occnet.runtime.points import PointSet, iou
from occnet.runtime.session import OccupancyModel
from occnet.runtime.settings import probability_to_logit

BYTES_PER_SAMPLE = 400
"""Peak memory of :func:`compare_meshes` per surface sample each way: 225 bytes of numpy arrays measured
(tracemalloc, 0.5M and 1M samples), and the KD-trees' own memory on top."""

@dataclass(frozen=True)
class MeshMetrics:
    """``mesh`` against ``reference``; distances in units of the reference's longest side. ``notes`` say why
    the figures may compare things that do not belong together (see :func:`placement_notes`).

    ``distance_to_reference`` is ONet's "accuracy" (mean distance from the mesh's samples to the reference),
    ``distance_from_reference`` its "completeness"; ``fscore`` maps each threshold tau to F-score at tau;
    ``iou`` is None where either mesh leaves more than ``MAX_AMBIGUOUS`` of the samples without a clear side.
    """

    chamfer_l1: float
    distance_to_reference: float
    distance_from_reference: float
    normal_consistency: float
    fscore: dict[float, float]
    iou: float | None
    samples: int
    scale: float
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        out = asdict(self)
        out["fscore"] = {f"{tau:g}": value for tau, value in self.fscore.items()}
        return out


@dataclass(frozen=True)
class PointMetrics:
    """A model's predictions against labelled points it did not train on; ``accuracy`` is the fraction of
    points labelled right; ``notes`` say where points lie far outside the model's box."""

    iou: float
    accuracy: float
    points: int
    threshold: float
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


def check_samples_memory(samples: int, option: str = "samples") -> None:
    """Refuse, before any work, a surface sample count whose comparison would not fit in memory (``option``:
    the name the user gave it, for the message)."""
    need, have = BYTES_PER_SAMPLE * samples, available_memory()
    if have is not None and need > have.nbytes:
        raise ResourceError(f"{option} {samples:,} needs about {need / 2**30:.1f} GiB, only {have} is available; "
                            f"at most {have.nbytes // BYTES_PER_SAMPLE:,} samples would fit")


def compare_meshes(mesh: trimesh.Trimesh, reference: trimesh.Trimesh, samples: int = 100_000,
                   taus: tuple[float, ...] = (0.01,), iou_samples: int = 100_000, seed: int = 0) -> MeshMetrics:
    """ONet's mesh metrics of ``mesh`` against ``reference`` with ``samples`` surface points each way."""
    if samples < 1 or iou_samples < 1:
        raise InputError("sample counts must be >= 1")
    check_samples_memory(samples)
    if any(not tau > 0 for tau in taus):
        raise InputError(f"tau must be > 0, got {taus}")
    for name, m in (("mesh", mesh), ("reference", reference)):
        if len(m.faces) == 0 or m.area <= 0:
            raise InputError(f"the {name} has no surface to sample")
    rng = np.random.default_rng(seed)
    scale = float(np.ptp(reference.bounds, axis=0).max())
    pred, pred_n = surface_samples(mesh, samples, rng)
    true, true_n = surface_samples(reference, samples, rng)
    to_reference, from_reference, normals, fscore = surface_distances(pred, pred_n, true, true_n, scale, taus)
    volume = volume_iou(mesh, reference, iou_samples, rng)
    return MeshMetrics(0.5 * (to_reference + from_reference), to_reference, from_reference, normals,
                       fscore, volume, samples, scale, placement_notes(mesh.bounds, reference.bounds))


def surface_distances(pred: np.ndarray, pred_n: np.ndarray, true: np.ndarray, true_n: np.ndarray, scale: float,
                      taus: tuple[float, ...]) -> tuple[float, float, float, dict[float, float]]:
    """ONet's surface figures of samples ``pred (P, 3)`` with unit normals ``pred_n`` against ``true (T, 3)``
    with ``true_n``, distances divided by ``scale``: (mean distance to the reference, from it, normal
    consistency, F-score at each tau)."""
    with signals.uninterrupted():            # the query's threads must finish before its arrays can be freed
        to_true, idx_true = cKDTree(true).query(pred, workers=-1)
        to_pred, idx_pred = cKDTree(pred).query(true, workers=-1)
    to_true, to_pred = to_true / scale, to_pred / scale
    normals = 0.5 * (np.abs(np.einsum("ij,ij->i", pred_n, true_n[idx_true])).mean()
                     + np.abs(np.einsum("ij,ij->i", true_n, pred_n[idx_pred])).mean())
    fscore = {}
    for tau in sorted(set(taus)):
        precision, recall = float((to_true < tau).mean()), float((to_pred < tau).mean())
        fscore[tau] = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return float(to_true.mean()), float(to_pred.mean()), float(normals), fscore


SIZE_RATIO = 2.0
"""A mesh whose longest side differs from the reference's by more than this factor is noted: other units?"""
OUTSIDE_MARGIN = 0.1
"""Points farther than this times the box's longest side outside a model's box are noted: it never saw them."""


def placement_notes(bounds: np.ndarray, reference_bounds: np.ndarray) -> tuple[str, ...]:
    """What makes a comparison of two meshes meaningless whatever its figures: sizes that differ by more than
    ``SIZE_RATIO`` (other units: millimetres against metres) and boxes that do not overlap (another place or
    frame). ``bounds``: ``(2, 3)`` min and max corners of the mesh, ``reference_bounds`` the reference's."""
    bounds, reference_bounds = np.asarray(bounds, np.float64), np.asarray(reference_bounds, np.float64)
    notes = []
    ratio = float(np.ptp(bounds, axis=0).max() / np.ptp(reference_bounds, axis=0).max())
    if not 1 / SIZE_RATIO <= ratio <= SIZE_RATIO:
        notes.append(f"the mesh is {ratio:.3g} times the reference's size (longest sides): other units?")
    if np.any(bounds[0] > reference_bounds[1]) or np.any(reference_bounds[0] > bounds[1]):
        notes.append("the mesh's box and the reference's do not overlap: another place or frame?")
    return tuple(notes)


def volume_iou(a: trimesh.Trimesh, b: trimesh.Trimesh, samples: int, rng: np.random.Generator) -> float | None:
    """IoU of two meshes' insides from ``samples`` uniform points in the box around both; None where either
    leaves more than ``MAX_AMBIGUOUS`` of them without a clear side."""
    lo = np.minimum(a.bounds[0], b.bounds[0])
    hi = np.maximum(a.bounds[1], b.bounds[1])
    points = rng.uniform(lo, hi, size=(samples, 3))
    in_a, in_b = (contains(m.vertices, m.faces, points) for m in (a, b))
    if max(in_a.ambiguous, in_b.ambiguous) > MAX_AMBIGUOUS:
        return None
    return iou(np.count_nonzero(in_a.inside & in_b.inside), np.count_nonzero(in_a.inside | in_b.inside))


def evaluate_model(model: OccupancyModel, points: PointSet, threshold: float = 0.5,
                   batch_size: int = 262_144) -> PointMetrics:
    """IoU and accuracy of the model's occupancy (probability > ``threshold``) on labelled points."""
    level = probability_to_logit(threshold)
    predicted = batched(model.logits, points.points, batch_size) > level
    actual = points.labels > 0.5
    score = iou(np.count_nonzero(predicted & actual), np.count_nonzero(predicted | actual))
    lo, hi = np.asarray(model.info.bounds_min), np.asarray(model.info.bounds_max)
    margin = OUTSIDE_MARGIN * float(np.max(hi - lo))
    outside = int(np.count_nonzero(np.any((points.points < lo - margin) | (points.points > hi + margin), axis=1)))
    notes = (f"{outside:,} of {len(actual):,} points ({outside / len(actual):.1%}) lie outside the model's box "
             f"by more than {OUTSIDE_MARGIN:.0%} of its size: the model never saw that space (other units or "
             "another frame?)",) if outside else ()
    return PointMetrics(score, float(np.mean(predicted == actual)), len(actual), threshold, notes)


def surface_samples(mesh: trimesh.Trimesh, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` area-uniform surface points and their faces' unit normals: two ``(count, 3)`` arrays."""
    points, faces = trimesh.sample.sample_surface(mesh, count, seed=int(rng.integers(2**31)))
    return points, _unit_normals(mesh.vertices, mesh.faces[faces])


def _unit_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``(F, 3)`` unit normals of ``faces (F, 3)``, computed at the mesh's own scale: trimesh's face normals
    drop triangles whose cross product is under an absolute 1e-12 (every face of a part 1e-6 units across),
    which scored such a mesh's normal consistency 0."""
    corners = vertices[faces] / max(float(np.ptp(vertices, axis=0).max()), np.finfo(np.float64).tiny)
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)
