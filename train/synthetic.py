"""Random solids made of primitives — unions and differences of spheres, boxes, cylinders and tori — in four
classes, deterministic by seed: what the synthetic collection (:func:`~occnet.train.collection.synthetic_collection`)
is made of. Each class stresses what a conditional model must get right: one blob, a ring (a hole), a holed
block (holes through a solid), a pair (two parts).

A solid is its signed distance bound ``sdf (N, 3) float64 -> (N,) float64`` (negative inside; a union is the
minimum, a difference the maximum with the negated cutter), normalised as ONet normalises shapes: its box
centred, its longest side 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import trimesh

from occnet.runtime.mesher import mesh_field
from occnet.runtime.settings import MeshSettings

Sdf = Callable[[np.ndarray], np.ndarray]
CLASSES = ("blob", "ring", "holed", "pair")
RESOLUTION = 128
"""Grid the solid is meshed on to measure its box and sample its surface."""
SHARPNESS = 50.0
"""Logits per unit of signed distance handed to the mesher (the level is 0 either way)."""


@dataclass(frozen=True)
class Solid:
    """A normalised solid: ``sdf`` in the unit frame, and its surface ``mesh`` (world = unit frame)."""

    category: str
    sdf: Sdf
    mesh: trimesh.Trimesh

    def occupancy(self, points: np.ndarray) -> np.ndarray:
        """``points (N, 3)`` -> ``(N,) bool``: inside the solid."""
        return self.sdf(points) < 0


def _sphere(centre, radius) -> Sdf:
    return lambda p: np.linalg.norm(p - centre, axis=1) - radius


def _box(centre, half) -> Sdf:
    def sdf(p):
        q = np.abs(p - centre) - half
        return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0)
    return sdf


def _cylinder(centre, axis: int, radius) -> Sdf:
    others = [a for a in range(3) if a != axis]
    return lambda p: np.linalg.norm((p - centre)[:, others], axis=1) - radius


def _torus(centre, major, minor, rotation) -> Sdf:
    def sdf(p):
        q = (p - centre) @ rotation
        return np.hypot(np.hypot(q[:, 0], q[:, 1]) - major, q[:, 2]) - minor
    return sdf


def _union(*parts: Sdf) -> Sdf:
    return lambda p: np.min([part(p) for part in parts], axis=0)


def _minus(solid: Sdf, *cutters: Sdf) -> Sdf:
    return lambda p: np.max([solid(p), *(-cutter(p) for cutter in cutters)], axis=0)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q


def _raw(category: str, rng: np.random.Generator) -> Sdf:
    """A solid of ``category`` in roughly the unit cube, before normalisation."""
    if category == "blob":
        count = rng.integers(2, 4)
        first = rng.uniform(-0.1, 0.1, 3)
        centres = [first] + [first + rng.uniform(-0.25, 0.25, 3) for _ in range(count - 1)]
        return _union(*(_sphere(c, rng.uniform(0.15, 0.3)) for c in centres))
    if category == "ring":
        major = rng.uniform(0.25, 0.35)
        return _torus(np.zeros(3), major, rng.uniform(0.06, 0.12) * major / 0.3, _rotation(rng))
    if category == "holed":
        half = rng.uniform(0.15, 0.35, 3)
        holes = [_cylinder(rng.uniform(-0.5, 0.5, 3) * half, int(axis),
                           rng.uniform(0.05, 0.25) * float(np.min(half)) * 2)
                 for axis in rng.choice(3, rng.integers(1, 3), replace=False)]
        return _minus(_box(np.zeros(3), half), *holes)
    if category == "pair":
        gap = rng.normal(size=3)
        gap *= rng.uniform(0.3, 0.4) / np.linalg.norm(gap)
        return _union(_sphere(gap, rng.uniform(0.1, 0.2)), _box(-gap, rng.uniform(0.08, 0.16, 3)))
    raise ValueError(f"unknown class {category!r}; expected one of {CLASSES}")


def make_solid(category: str, seed: int) -> Solid:
    """The solid of ``category`` drawn by ``seed``, normalised (box centred, longest side 1) with its surface."""
    raw = _raw(category, np.random.default_rng(seed))
    settings = MeshSettings(resolution=RESOLUTION)
    mesh, _ = mesh_field(lambda p: (-SHARPNESS * raw(p)).astype(np.float32), (-1.0,) * 3, (1.0,) * 3, settings)
    lo, hi = mesh.bounds
    centre, scale = (lo + hi) / 2, float((hi - lo).max())

    def sdf(p: np.ndarray) -> np.ndarray:
        return raw(np.asarray(p, np.float64) * scale + centre) / scale

    mesh.vertices = (mesh.vertices - centre) / scale
    return Solid(category, sdf, mesh)
