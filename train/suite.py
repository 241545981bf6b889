"""The quality suite: closed shapes that look like users' parts, each there for one reason, generated here
(no downloads) so that every published figure can be rerun. CAD-like parts with sharp edges are unions of
voxels (:func:`~occnet.train.shapes.voxel_solid`); smooth ones are marching-cubes meshes of exact signed
distance functions at 1/192 of their longest side. Every shape is turned off the grid axes, so that no
feature lines up with a sampling or meshing grid by luck.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh

from occnet.runtime.field import dense_field
from occnet.runtime.grid import Grid
from occnet.runtime.surface import extract_mesh
from occnet.train.shapes import _box, _sphere, cad_parts, voxel_solid

SDF_RESOLUTION = 192
"""Samples along the longest side when meshing a signed distance function."""


@dataclass(frozen=True)
class SuiteShape:
    """A suite shape: its closed ``mesh`` and why it is in the suite."""

    mesh: trimesh.Trimesh
    reason: str


def quality_suite(seed: int = 0) -> dict[str, SuiteShape]:
    """The suite: name -> :class:`SuiteShape` (17 shapes, about 1 s to build). The last three are the kinds of
    real part that fell short of the fit target before they were added: letters on several faces, 45-degree
    faces, a thin floor."""
    rng = np.random.default_rng(seed)
    parts = cad_parts(seed)
    shapes = {
        "bracket": SuiteShape(parts["bracket"], "a slot through the base and a window in the wall"),
        "stepped": SuiteShape(parts["stepped"], "steps and a corner notch: sharp concave and convex edges"),
        "cross": SuiteShape(parts["cross"], "a cross with a stepped arm end"),
        "embossed": SuiteShape(_turned(voxel_solid(_embossed_letters(), 1.0), rng), "raised letters OCC, "
                               "one voxel (2.4% of the length) high; the O's strokes meet at edges"),
        "engraved": SuiteShape(_turned(voxel_solid(_engraved_grooves(), 1.0), rng), "three grooves cut "
                               "into the top face, 3% wide"),
        "thin plate": SuiteShape(_turned(_sdf_mesh(_thin_plate, (0.52, 0.32, 0.03)), rng), "sheet metal 1% "
                                 "of its length thick, with two round holes"),
        "pocketed plate": SuiteShape(_turned(_sdf_mesh(_pocketed_plate, (0.52, 0.37, 0.05)), rng),
                                     "a 3% plate with an octagonal pocket half its depth"),
        "filleted box": SuiteShape(_turned(_sdf_mesh(_filleted, (0.42, 0.32, 0.22)), rng), "fillets meeting "
                                   "flat faces"),
        "angled block": SuiteShape(_turned(_sdf_mesh(_angled, (0.42, 0.27, 0.22)), rng), "a sloped face "
                                   "meeting others at 45 and 135 degrees"),
        "rod": SuiteShape(_turned(_sdf_mesh(_rod, (0.52, 0.06, 0.06)), rng), "a rod 2.4% of its length across"),
        "tube": SuiteShape(_turned(_sdf_mesh(_tube, (0.33, 0.33, 0.52)), rng), "a tube whose wall is 1.5% "
                           "of its length"),
        "blob": SuiteShape(_turned(_sdf_mesh(_blob, (0.5, 0.5, 0.5)), rng), "organic: no edges, varying "
                           "curvature"),
        "separate bodies": SuiteShape(_turned(_sdf_mesh(_separate, (0.72, 0.32, 0.32)), rng), "three bodies, "
                                      "one small (4% across)"),
        "elongated bar": SuiteShape(_turned(_sdf_mesh(_bar, (0.52, 0.04, 0.06)), rng), "a bar 20 times "
                                    "longer than it is wide"),
        "lettered cube": SuiteShape(_turned(voxel_solid(_lettered_cube(), 1.0), rng), "a cube with a raised "
                                    "letter on each of four faces, one voxel (3.1% of its side) high"),
        "chamfered block": SuiteShape(_turned(_sdf_mesh(_chamfered, (0.42, 0.32, 0.22)), rng), "every edge "
                                      "cut at 45 degrees: faces meeting at 135 degrees, triangular corners"),
        "thin-floored pocket": SuiteShape(_turned(_sdf_mesh(_thin_floored_pocket, (0.52, 0.37, 0.035)), rng),
                                          "a 5% plate with a pocket whose floor is 0.6% thick"),
    }
    return shapes


def _turned(mesh: trimesh.Trimesh, rng: np.random.Generator) -> trimesh.Trimesh:
    mesh.apply_transform(trimesh.transformations.random_rotation_matrix(rng.random(3)))
    return mesh


def _sdf_mesh(sdf, half) -> trimesh.Trimesh:
    """The zero level of ``sdf`` (negative inside) in the box ``[-half, half]``, closed, merged."""
    grid = Grid.from_bounds(-np.asarray(half), np.asarray(half), SDF_RESOLUTION)
    field = dense_field(lambda p: (-sdf(p)).astype(np.float32), grid, 1 << 20)
    return extract_mesh(field, 0.0)


def _embossed_letters() -> np.ndarray:
    o = ["01110", "10001", "10001", "10001", "01110"]
    c = ["01111", "10000", "10000", "10000", "01111"]
    plate = np.zeros((42, 16, 5), bool)
    plate[:, :, :3] = True
    for k, letter in enumerate((o, c, c)):
        bitmap = np.array([[ch == "1" for ch in row] for row in letter])
        big = np.kron(bitmap, np.ones((2, 2), bool))                       # 10 x 10 voxels a letter
        plate[3 + 13 * k:13 + 13 * k, 3:13, 3] = big[::-1].T
    return plate


def _lettered_cube() -> np.ndarray:
    letters = {"E": ["11111", "10000", "11110", "10000", "11111"], "F": ["11111", "10000", "11110", "10000",
               "10000"], "H": ["10001", "10001", "11111", "10001", "10001"], "T": ["11111", "00100", "00100",
               "00100", "00100"]}
    big = {k: np.kron(np.array([[ch == "1" for ch in row] for row in v]), np.ones((2, 2), bool))[::-1].T
           for k, v in letters.items()}                                   # 10 x 10 voxels, [u, v] upright
    cube = np.zeros((32, 32, 32), bool)
    cube[1:31, 1:31, 1:31] = True
    cube[11:21, 11:21, 31] = big["E"]                                       # top
    cube[31, 11:21, 11:21] = big["F"]                                       # +x, read along y then z
    cube[11:21, 0, 11:21] = big["H"]                                        # -y
    cube[0, 11:21, 11:21] = big["T"][::-1]                                  # -x
    return cube


def _engraved_grooves() -> np.ndarray:
    block = np.zeros((34, 20, 8), bool)
    block[:, :, :8] = True
    for x in (8, 16, 24):
        block[x, :, 5:] = False                                          # 1 voxel wide, 3 deep
    return block


def _thin_plate(p: np.ndarray) -> np.ndarray:
    plate = _box(p, (0, 0, 0), (0.5, 0.3, 0.005), 0.0)
    for cx in (-0.25, 0.2):
        plate = np.maximum(plate, -(np.hypot(p[:, 0] - cx, p[:, 1] - 0.05) - 0.08))
    return plate


def _pocketed_plate(p: np.ndarray) -> np.ndarray:
    plate = _box(p, (0, 0, 0), (0.5, 0.35, 0.015), 0.0)
    angles = np.arange(8) * np.pi / 4
    octagon = np.max(p[:, :2] @ np.stack([np.cos(angles), np.sin(angles)]), axis=1) - 0.2
    pocket = np.maximum(octagon, 0.0 - p[:, 2])                          # from mid-depth up
    return np.maximum(plate, -pocket)


def _filleted(p: np.ndarray) -> np.ndarray:
    return _box(p, (0, 0, 0), (0.4, 0.3, 0.2), 0.08)


def _angled(p: np.ndarray) -> np.ndarray:
    block = _box(p, (0, 0, 0), (0.4, 0.25, 0.2), 0.0)
    slope = (p[:, 0] + p[:, 2] - 0.3) / np.sqrt(2)                    # a 45-degree cut off one top edge
    return np.maximum(block, slope)


def _chamfered(p: np.ndarray) -> np.ndarray:
    half, cut = np.array([0.4, 0.3, 0.2]), 0.07
    block = _box(p, (0, 0, 0), half, 0.0)
    q = np.abs(p)
    for i, j in ((0, 1), (0, 2), (1, 2)):                 # a 45-degree plane across each of the 12 edges
        block = np.maximum(block, (q[:, i] + q[:, j] - (half[i] + half[j] - cut)) / np.sqrt(2))
    return block


def _thin_floored_pocket(p: np.ndarray) -> np.ndarray:
    plate = _box(p, (0, 0, 0), (0.5, 0.35, 0.025), 0.0)
    pocket = _box(p, (0.05, 0, 0.028), (0.28, 0.18, 0.047), 0.04)           # from above z = -0.019: floor 0.006
    return np.maximum(plate, -pocket)


def _rod(p: np.ndarray) -> np.ndarray:
    a, b = np.array([-0.48, 0.0, 0.0]), np.array([0.48, 0.03, 0.02])
    t = np.clip((p - a) @ (b - a) / np.dot(b - a, b - a), 0, 1)
    return np.linalg.norm(p - (a + t[:, None] * (b - a)), axis=1) - 0.012


def _tube(p: np.ndarray) -> np.ndarray:
    wall = np.abs(np.hypot(p[:, 0], p[:, 1]) - 0.3) - 0.0075
    return np.maximum(wall, np.abs(p[:, 2]) - 0.5)


def _blob(p: np.ndarray) -> np.ndarray:
    wobble = 0.05 * np.sin(5 * p[:, 0]) * np.sin(4 * p[:, 1] + 1) * np.sin(6 * p[:, 2] + 2)
    return (np.linalg.norm(p * (1.0, 1.2, 0.9), axis=1) - 0.4 - wobble) * 0.7    # a distance bound


def _separate(p: np.ndarray) -> np.ndarray:
    return np.minimum.reduce([_sphere(p, (-0.45, 0, 0), 0.25), _box(p, (0.25, 0, 0), (0.2, 0.2, 0.2), 0.02),
                              _sphere(p, (0.6, 0.2, 0.15), 0.03)])


def _bar(p: np.ndarray) -> np.ndarray:
    return _box(p, (0, 0, 0), (0.5, 0.025, 0.04), 0.0)
