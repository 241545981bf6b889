"""Inside/outside labelling on the meshes users bring, generated from the CAD-like parts
(occnet.train.shapes.cad_parts): the closed part, the part with five small holes punched in it, the part with
a whole end cut open, two overlapping copies in one file, and the part shifted by 1e6.

First, labelling speed on a 100k-face mesh, closed and open. Then per case: which method labels it (the
exact crossing count on closed meshes, the generalised winding number by cones and libigl on open ones),
labelling speed (points/s, the training sampler's 100k points), the fraction of points without a clear
side, agreement with the closed part's labels away from the holes, and (overlap) the labelled volume against
the union's. With --train, each case but the overlap is also trained with occ-train's defaults, exported,
meshed at 256^3 and scored against its input mesh and against the closed part (Chamfer-L1, F@1%, fractions
of the longest side).

    python benchmarks/bench_inside.py [--parts bracket stepped cross] [--train]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import trimesh

from occnet.runtime.inside import contains
from occnet.train.config import SamplingConfig
from occnet.train.sampling import mesh_points
from occnet.train.shapes import cad_parts

HOLES = 5
HOLE_RADIUS = 0.03
"""Punched holes: faces within this fraction of the longest side of 5 random surface points are removed."""
CUT = 0.9
"""The open end: faces whose centre lies beyond this fraction of the extent along x are removed."""


def variants(part: trimesh.Trimesh, seed: int) -> dict[str, tuple[trimesh.Trimesh, np.ndarray]]:
    """name -> (mesh, (K, 3) centres of what was cut away, to judge labels away from it)."""
    size = float(np.ptp(part.bounds, axis=0).max())
    rng = np.random.default_rng(seed)
    centres, _ = trimesh.sample.sample_surface(part, HOLES, seed=seed)
    near = np.min(np.linalg.norm(part.triangles_center[:, None] - centres[None], axis=2), axis=1)
    punched = trimesh.Trimesh(part.vertices, part.faces[near > HOLE_RADIUS * size], process=False)
    lo, hi = part.bounds
    end = part.triangles_center[:, 0] > lo[0] + CUT * (hi[0] - lo[0])
    opened = trimesh.Trimesh(part.vertices, part.faces[~end], process=False)
    shift = rng.normal(size=3)
    moved = part.copy()
    moved.apply_translation(0.35 * size * shift / np.linalg.norm(shift))
    far = part.copy()
    far.apply_translation((1e6, -2e6, 5e5))
    return {"closed": (part, np.zeros((0, 3))), "5 holes": (punched, centres),
            "open end": (opened, part.triangles_center[end]), "2 overlapping": (trimesh.util.concatenate([part, moved]),
                                                                    np.zeros((0, 3))),
            "shifted 1e6": (far, np.zeros((0, 3)))}


def label_row(name: str, mesh: trimesh.Trimesh, cut: np.ndarray, part: trimesh.Trimesh, points: np.ndarray,
              truth: np.ndarray) -> str:
    """``truth``: the closed part's labels of ``points``, computed once per part."""
    offset = mesh.bounds[0] - part.bounds[0] if name == "shifted 1e6" else np.zeros(3)
    start = time.perf_counter()
    result = contains(mesh.vertices, mesh.faces, points + offset)
    rate = len(points) / (time.perf_counter() - start)
    size = float(np.ptp(part.bounds, axis=0).max())
    if name == "2 overlapping":
        second = mesh.vertices[len(part.vertices):] - part.vertices
        truth = truth | contains(part.vertices, part.faces, points - second[0]).inside
    away = np.ones(len(points), bool)
    if len(cut):
        away = np.min(np.linalg.norm(points[:, None] - cut[None], axis=2), axis=1) > 3 * HOLE_RADIUS * size
    agree = float(np.mean(result.inside[away] == truth[away]))
    volume = result.inside.mean() / truth.mean() - 1 if name == "2 overlapping" else None
    method = "exact count" if result.exact else "cones + libigl"
    vol = f"{volume:+.2%}" if volume is not None else "-"
    return (f"| {name} | {len(mesh.faces):,} | {method} | {rate:,.0f} | {result.ambiguous:.2%} | {agree:.4%} | "
            f"{vol} |")


def train_row(name: str, mesh: trimesh.Trimesh, part: trimesh.Trimesh, work: Path) -> str:
    """``work``: a folder of this part's own."""
    from occnet.export.onnx_export import export_checkpoint
    from occnet.runtime import MeshSettings, OccupancyModel, mesh_model
    from occnet.runtime.evaluate import compare_meshes
    from occnet.train.trainer import TrainConfig, train

    path = work / f"{name.replace(' ', '-')}.ply"
    mesh.export(path)
    start = time.perf_counter()
    data = mesh_points(path, SamplingConfig(), 0)
    train(data, TrainConfig(), work / path.stem)
    seconds = time.perf_counter() - start
    export_checkpoint(work / path.stem / "best.pt", work / f"{path.stem}.onnx")
    out, _ = mesh_model(OccupancyModel(work / f"{path.stem}.onnx", device="cpu"), MeshSettings(resolution=256))
    if name == "shifted 1e6":
        out.apply_translation(part.bounds[0] - mesh.bounds[0])
    given = mesh.copy()
    if name == "shifted 1e6":
        given.apply_translation(part.bounds[0] - mesh.bounds[0])
    to_input, to_part = compare_meshes(out, given, iou_samples=1), compare_meshes(out, part, iou_samples=1)
    return (f"| {name} | {seconds:.0f} | {to_input.chamfer_l1:.5f} | {to_input.fscore[0.01]:.4f} | "
            f"{to_part.chamfer_l1:.5f} | {to_part.fscore[0.01]:.4f} | {len(out.split(only_watertight=False))} | "
            f"{out.is_watertight} |")


def throughput() -> None:
    """Labelling speed on a 100k-face capsule, closed and with 10 faces removed: 200k points, half uniform in
    its box, half near its surface, as the training sampler draws them."""
    capsule = trimesh.creation.capsule(height=1.0, radius=0.4, count=[220, 230])
    rng = np.random.default_rng(0)
    surface, _ = trimesh.sample.sample_surface(capsule, 100_000, seed=1)
    points = np.concatenate([rng.uniform(capsule.bounds[0] - 0.1, capsule.bounds[1] + 0.1, (100_000, 3)),
                             surface + rng.normal(0, 0.01, surface.shape)])
    print("| mesh | faces | labelled by | points/s (best of 3) |")
    print("|---|---|---|---|")
    for name, faces in (("capsule, closed", capsule.faces), ("capsule, 10 faces removed", capsule.faces[10:])):
        seconds = []
        for _ in range(3):
            start = time.perf_counter()
            result = contains(capsule.vertices, faces, points)
            seconds.append(time.perf_counter() - start)
        method = "exact count" if result.exact else "cones + libigl"
        print(f"| {name} | {len(faces):,} | {method} | {len(points) / min(seconds):,.0f} |", flush=True)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["bracket", "stepped", "cross"])
    parser.add_argument("--train", action="store_true", help="also train, mesh and score every case")
    args = parser.parse_args()
    throughput()
    parts = cad_parts()
    print("| part | case | faces | labelled by | points/s | no clear side | agreement away from cuts "
          "| volume vs union |")
    print("|---|---|---|---|---|---|---|---|")
    trained = []
    with tempfile.TemporaryDirectory() as tmp:
        for part_name in args.parts:
            part = parts[part_name]
            lo, hi = part.bounds
            pad = 0.05 * float((hi - lo).max())
            rng = np.random.default_rng(1)
            surface, _ = trimesh.sample.sample_surface(part, 50_000, seed=2)
            points = np.concatenate([rng.uniform(lo - pad, hi + pad, (50_000, 3)),
                                     surface + rng.normal(0, 0.01 * float((hi - lo).max()), surface.shape)])
            truth = contains(part.vertices, part.faces, points).inside
            for name, (mesh, cut) in variants(part, 3).items():
                print(f"| {part_name} {label_row(name, mesh, cut, part, points, truth)}", flush=True)
                if args.train and name not in ("closed", "2 overlapping"):   # scored against the closed part
                    (Path(tmp) / part_name).mkdir(exist_ok=True)
                    trained.append(f"| {part_name} {train_row(name, mesh, part, Path(tmp) / part_name)}")
    if trained:
        print("\n| part | case | seconds (sampling + training) | Chamfer-L1 vs input | F@1% vs input "
              "| Chamfer-L1 vs closed part | F@1% vs closed part | components | watertight |")
        print("|---|---|---|---|---|---|---|---|---|")
        print("\n".join(trained))


if __name__ == "__main__":
    main()
