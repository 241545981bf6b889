"""A conditional model scored on a collection: every shape of a split reconstructed from an observation made
from its own data, scored as ONet scores, beside the convex hull of the same observation.

The observation is what the model reads: ``condition.points`` of the shape's surface points with Gaussian noise
(ONet's 0.005), or its 32³ grid; the same for the hull (a cloud's hull; a grid's occupied voxel centres').
IoU is occupancy on the shape's labelled points (the model's at its threshold, as ONet's evaluation computes
it; the hull's by containment); Chamfer-L1, normal consistency and F@1% compare the mesh's surface samples
with the shape's surface points and normals (ONet's ``pointcloud.npz``), in the shape's normalised frame. A
reconstruction with no surface scores IoU 0 and no surface figures, and is counted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import trimesh
from scipy.spatial import ConvexHull, Delaunay, QhullError

from occnet.runtime.collection import Collection, ShapeEntry
from occnet.runtime.errors import EmptySurfaceError, InputError
from occnet.runtime.evaluate import surface_distances, surface_samples
from occnet.runtime.field import batched
from occnet.runtime.mesher import mesh_model
from occnet.runtime.points import iou
from occnet.runtime.session import OccupancyModel
from occnet.runtime.settings import MeshSettings, probability_to_logit

METHODS = ("model", "hull")
NOISE = 0.005
"""Noise of an input cloud, as ONet's point-cloud completion models see (``data.pointcloud_noise``)."""
FIGURES = ("iou", "chamfer_l1", "normal_consistency", "f_score")


@dataclass(frozen=True)
class ShapeScore:
    """One method's figures on one shape (surface figures None where it reconstructed no surface)."""

    shape: str
    category: str
    method: str
    iou: float
    chamfer_l1: float | None
    normal_consistency: float | None
    f_score: float | None


@dataclass(frozen=True)
class CollectionScores:
    """Every shape's scores; :meth:`summary` gives each method's means, overall and per class."""

    rows: list[ShapeScore]

    def summary(self) -> dict:
        """``{method: {"all": {figure: mean}, "classes": {class: {figure: mean}}, "empty": count}}``; a mean over
        the shapes with that figure (IoU counts every shape)."""
        out = {}
        for method in METHODS:
            rows = [row for row in self.rows if row.method == method]
            if not rows:
                continue
            out[method] = {"all": _means(rows), "empty": sum(row.chamfer_l1 is None for row in rows),
                           "classes": {c: _means([r for r in rows if r.category == c])
                                       for c in sorted({r.category for r in rows})}}
        return out

    def to_dict(self) -> dict:
        return {"summary": self.summary(), "shapes": [asdict(row) for row in self.rows]}


def _means(rows: list[ShapeScore]) -> dict:
    out = {}
    for figure in FIGURES:
        values = [getattr(row, figure) for row in rows if getattr(row, figure) is not None]
        out[figure] = float(np.mean(values)) if values else None
    return out


def score_collection(model: OccupancyModel, collection: Collection, split: str = "test",
                     settings: MeshSettings = MeshSettings(resolution=128), samples: int = 100_000,
                     seed: int = 0, progress=None) -> CollectionScores:
    """Reconstruct every shape of ``split`` with the conditional ``model`` (meshed with ``settings``) and with
    the convex hull of the same observation, and score both (see the module); ``progress(done, total)``."""
    condition = model.info.condition
    if condition is None:
        raise InputError(f"{model.path} is not a conditional model: a collection is scored with a model that "
                         "reconstructs shapes from observations")
    shapes = collection.shapes(split)
    if not shapes:
        raise InputError(f"{collection.root}: its {split} lists hold no shapes")
    rng = np.random.default_rng(seed)
    level = probability_to_logit(settings.threshold or condition.threshold)
    rows = []
    for done, entry in enumerate(shapes, 1):
        data = collection.load(entry)
        observation, seen_points = _observation(collection, entry, data.surface, condition, rng)
        shaped = model.given(observation)
        inside = batched(shaped.logits, data.points, 262_144) > level
        try:
            mesh, _ = mesh_model(shaped, settings)
        except EmptySurfaceError:
            mesh = None
        rows.append(_score(entry, "model", inside, mesh, data, samples, rng))
        hull = _hull(seen_points)
        hull_inside = Delaunay(hull.vertices).find_simplex(data.points) >= 0 if hull is not None else \
            np.zeros(len(data.points), bool)
        rows.append(_score(entry, "hull", hull_inside, hull, data, samples, rng))
        if progress:
            progress(done, len(shapes))
    return CollectionScores(rows)


def _observation(collection: Collection, entry: ShapeEntry, surface: np.ndarray, condition, rng):
    """The model's observation of a shape and the points its hull is taken of."""
    if condition.observation == "voxels":
        grid = collection.voxels(entry)
        centres = (np.argwhere(grid) + 0.5) / grid.shape[0] - 0.5
        return grid, centres
    cloud = surface[rng.choice(len(surface), condition.points, replace=len(surface) < condition.points)]
    cloud = cloud + rng.normal(scale=NOISE, size=cloud.shape)
    return cloud, cloud


def _hull(points: np.ndarray) -> trimesh.Trimesh | None:
    """The convex hull of ``points`` as a closed mesh; None for points that span no volume."""
    try:
        hull = ConvexHull(points)
    except QhullError:
        return None
    mesh = trimesh.Trimesh(points[hull.vertices], np.searchsorted(hull.vertices, hull.simplices), process=False)
    trimesh.repair.fix_normals(mesh)
    return mesh


def _score(entry: ShapeEntry, method: str, inside: np.ndarray, mesh, data, samples: int,
           rng: np.random.Generator) -> ShapeScore:
    truth = data.occupancies
    score = iou(int(np.count_nonzero(inside & truth)), int(np.count_nonzero(inside | truth)))
    if mesh is None or len(mesh.faces) == 0:
        return ShapeScore(entry.label, entry.category, method, score, None, None, None)
    pred, pred_n = surface_samples(mesh, samples, rng)
    true_n = data.normals / np.maximum(np.linalg.norm(data.normals, axis=1, keepdims=True), 1e-12)
    to, back, normals, fscore = surface_distances(pred, pred_n, data.surface.astype(np.float64), true_n, 1.0,
                                                  (0.01,))
    chamfer = 0.5 * (to + back)
    return ShapeScore(entry.label, entry.category, method, score, chamfer if math.isfinite(chamfer) else None,
                      normals, fscore[0.01])
