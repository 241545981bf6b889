"""Mesh quality per training recipe, on the quality suite (occnet.train.suite: 17 generated shapes that look
like users' parts, each with its reason).

Each recipe trains on the shape's mesh (sampled and labelled by occ-train's own code; "training s" counts
from the start of sampling), exports to ONNX, meshes at --resolution with occ-mesh's defaults, and compares
with the shape as ONet evaluates: Chamfer-L1, normal consistency, F-score at 1% and 0.5% (100k samples each
way), distances as a fraction of the shape's longest side, and connected components against the
reference's. "x floor" divides Chamfer-L1 by the sampling floor: the reference against a second sampling of
itself (the "floor" rows). The summary gives each recipe's worst and median.

    python benchmarks/bench_quality.py [--recipes default seed ...] [--shapes tube rod ...] [--resolution 256]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from occnet.export.onnx_export import export_checkpoint
from occnet.runtime import MeshSettings, OccupancyModel, mesh_model
from occnet.runtime.evaluate import compare_meshes
from occnet.train.encodings import Fourier
from occnet.train.sampling import SamplingConfig, load_points
from occnet.train.suite import quality_suite
from occnet.train.trainer import TrainConfig, train

RECIPES = {
    "default": (TrainConfig(), SamplingConfig()),
    "seed": (TrainConfig(epochs=100, lr=1e-3), SamplingConfig(near_fraction=0.0)),
    "uniform": (TrainConfig(), SamplingConfig(near_fraction=0.0)),
    "near-0.8": (TrainConfig(), SamplingConfig(near_fraction=0.8)),
    "near-0.2": (TrainConfig(), SamplingConfig(near_fraction=0.2)),
    "long": (TrainConfig(epochs=300), SamplingConfig(num_points=200_000)),
    "fourier": (TrainConfig(encoding=Fourier(features=32, scale=2.0)), SamplingConfig()),
    "wide": (TrainConfig(hidden_size=128, epochs=100), SamplingConfig(num_points=200_000)),
    "60-epochs": (TrainConfig(epochs=60), SamplingConfig()),
    "150-epochs": (TrainConfig(epochs=150), SamplingConfig()),
    "patience-15": (TrainConfig(patience=15), SamplingConfig()),
    "spread-0.005": (TrainConfig(), SamplingConfig(near_sigma=0.005)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["default"], choices=list(RECIPES))
    parser.add_argument("--shapes", nargs="+", default=None, help="suite shapes (default: all)")
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    suite = quality_suite()
    names = args.shapes or list(suite)
    print("| shape | recipe | training s | Chamfer-L1 | x floor | normal consistency | F@1% | F@0.5% "
          "| components (reference) | faces |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    scores: dict[str, list[tuple[float, float, float]]] = {recipe: [] for recipe in args.recipes}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            reference = suite[name].mesh
            path = Path(tmp) / f"{name.replace(' ', '-')}.ply"
            reference.export(path)
            floor = compare_meshes(reference, reference, seed=1)
            parts = len(reference.split(only_watertight=False))
            for recipe in args.recipes:
                config, sampling = RECIPES[recipe]
                run = Path(tmp) / f"{path.stem}-{recipe}"
                start = time.perf_counter()
                train(load_points(path, sampling, config.seed), config, run, started=start)
                seconds = time.perf_counter() - start
                export_checkpoint(run / "best.pt", run / "model.onnx", verify=False)
                mesh, _ = mesh_model(OccupancyModel(run / "model.onnx", device="cpu"),
                                     MeshSettings(resolution=args.resolution))
                m = compare_meshes(mesh, reference, taus=(0.01, 0.005), iou_samples=1)
                ratio = m.chamfer_l1 / floor.chamfer_l1
                scores[recipe].append((m.chamfer_l1, ratio, m.fscore[0.01]))
                print(f"| {name} | {recipe} | {seconds:.0f} | {m.chamfer_l1:.5f} | {ratio:.2f} | "
                      f"{m.normal_consistency:.4f} | {m.fscore[0.01]:.4f} | {m.fscore[0.005]:.4f} | "
                      f"{len(mesh.split(only_watertight=False))} ({parts}) | {len(mesh.faces):,} |", flush=True)
            print(f"| {name} | floor | - | {floor.chamfer_l1:.5f} | 1.00 | {floor.normal_consistency:.4f} | "
                  f"{floor.fscore[0.01]:.4f} | - | {parts} | {len(reference.faces):,} |", flush=True)
    print("\n| recipe | worst Chamfer-L1 | worst x floor | median x floor | worst F@1% |")
    print("|---|---|---|---|---|")
    for recipe, rows in scores.items():
        chamfer, ratio, fscore = (np.array(column) for column in zip(*rows))
        print(f"| {recipe} | {chamfer.max():.5f} | {ratio.max():.2f} | {np.median(ratio):.2f} | {fscore.min():.4f} |")


if __name__ == "__main__":
    main()
