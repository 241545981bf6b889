"""A conditional model scored on a collection: every shape of a split reconstructed from an observation made
from its own data, scored as ONet scores, beside baselines given the same observation (:mod:`.baselines`).

The observation is what the model reads: ``condition.points`` of the shape's surface points with Gaussian noise
(ONet's 0.005), or its 32³ grid; the same for the baselines (the hull of a cloud or of a grid's occupied voxel
centres; screened Poisson of a cloud).
IoU is occupancy on the shape's labelled points (the model's at its threshold, as ONet's evaluation computes
it; a baseline's by its mesh's winding number); Chamfer-L1, normal consistency and F@1% compare the mesh's
surface samples with the shape's surface points and normals (ONet's ``pointcloud.npz``), in the shape's
normalised frame. A reconstruction with no surface scores IoU 0 and no surface figures, and is counted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from occnet.runtime.baselines import convex_hull, poisson_available, screened_poisson
from occnet.runtime.collection import Collection, ShapeEntry
from occnet.runtime.errors import EmptySurfaceError, InputError
from occnet.runtime.evaluate import surface_distances, surface_samples
from occnet.runtime.field import batched
from occnet.runtime.inside import contains
from occnet.runtime.mesher import mesh_model
from occnet.runtime.points import iou
from occnet.runtime.session import OccupancyModel
from occnet.runtime.settings import MeshSettings, probability_to_logit

BASELINES = ("hull", "poisson")
METHODS = ("model", *BASELINES)
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


def default_baselines(observation: str) -> tuple[str, ...]:
    """The baselines that apply to an ``observation`` kind ("pointcloud" or "voxels") with what is installed:
    the hull always, screened Poisson of clouds where ``pymeshlab`` is."""
    return ("hull", "poisson") if observation == "pointcloud" and poisson_available() else ("hull",)


def score_collection(model: OccupancyModel, collection: Collection, split: str = "test",
                     settings: MeshSettings = MeshSettings(resolution=128), samples: int = 100_000,
                     seed: int = 0, baselines: tuple[str, ...] = ("hull",), progress=None) -> CollectionScores:
    """Reconstruct every shape of ``split`` with the conditional ``model`` (meshed with ``settings``) and with
    each of ``baselines`` (:data:`BASELINES`) from the same observation, and score them (see the module);
    ``progress(done, total)``. Poisson needs a point-cloud model and ``pymeshlab``, checked before any work."""
    condition = model.info.condition
    if condition is None:
        raise InputError(f"{model.path} is not a conditional model: a collection is scored with a model that "
                         "reconstructs shapes from observations")
    for name in baselines:
        if name not in BASELINES:
            raise InputError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    if "poisson" in baselines and condition.observation != "pointcloud":
        raise InputError("screened Poisson reconstructs point clouds; this model reads voxel grids")
    if "poisson" in baselines and not poisson_available():
        raise InputError("screened Poisson needs pymeshlab: pip install 'occnet[bench]'")
    shapes = collection.shapes(split)
    if not shapes:
        raise InputError(f"{collection.root}: its {split} lists hold no shapes")
    level = probability_to_logit(settings.threshold or condition.threshold)
    rows = []
    for done, entry in enumerate(shapes, 1):
        data = collection.load(entry)
        observation, seen_points = _observation(collection, entry, data.surface, condition,
                                                _rng(seed, done, "observation"))
        shaped = model.given(observation)
        inside = batched(shaped.logits, data.points, 262_144) > level
        try:
            mesh, _ = mesh_model(shaped, settings)
        except EmptySurfaceError:
            mesh = None
        rows.append(_score(entry, "model", inside, mesh, data, samples, _rng(seed, done, "model")))
        for name in baselines:
            built = (convex_hull if name == "hull" else screened_poisson)(seen_points)
            built_inside = np.zeros(len(data.points), bool) if built is None else \
                contains(built.vertices, built.faces, data.points).inside
            rows.append(_score(entry, name, built_inside, built, data, samples, _rng(seed, done, name)))
        if progress:
            progress(done, len(shapes))
    return CollectionScores(rows)


def _rng(seed: int, shape: int, use: str) -> np.random.Generator:
    """The generator of one shape's observation or of one method's surface samples: a method's figures do not
    depend on which others ran."""
    return np.random.default_rng([seed, shape, ("observation", *METHODS).index(use)])


def _observation(collection: Collection, entry: ShapeEntry, surface: np.ndarray, condition, rng):
    """The model's observation of a shape and the points the baselines are given."""
    if condition.observation == "voxels":
        grid = collection.voxels(entry)
        centres = (np.argwhere(grid) + 0.5) / grid.shape[0] - 0.5
        return grid, centres
    cloud = surface[rng.choice(len(surface), condition.points, replace=len(surface) < condition.points)]
    cloud = cloud + rng.normal(scale=NOISE, size=cloud.shape)
    return cloud, cloud


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
