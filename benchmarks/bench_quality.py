"""Mesh quality per training recipe, on CAD-like parts the project generates (occnet.train.shapes.cad_parts).

Each recipe trains on the part's mesh (sampled and labelled by occ-train's own code), exports to ONNX,
meshes at --resolution with occ-mesh's defaults, and compares with the part as ONet evaluates: Chamfer-L1,
normal consistency, F-score at 1% and volumetric IoU (100k samples each way), distances as a fraction of
the part's longest side. 'floor' compares the reference with a second sampling of itself.

    python benchmarks/bench_quality.py [--recipes default seed ...] [--resolution 256]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from occnet.export.onnx_export import export_checkpoint
from occnet.runtime import MeshSettings, OccupancyModel, mesh_model
from occnet.runtime.evaluate import compare_meshes
from occnet.train.sampling import SamplingConfig, load_points
from occnet.train.shapes import cad_parts
from occnet.train.trainer import TrainConfig, train

RECIPES = {
    "default": (TrainConfig(), SamplingConfig()),
    "seed": (TrainConfig(epochs=100, lr=1e-3), SamplingConfig(near_fraction=0.0)),
    "uniform": (TrainConfig(), SamplingConfig(near_fraction=0.0)),
    "near-0.8": (TrainConfig(), SamplingConfig(near_fraction=0.8)),
    "near-0.2": (TrainConfig(), SamplingConfig(near_fraction=0.2)),
    "long": (TrainConfig(epochs=150), SamplingConfig(num_points=200_000)),
    "fourier": (TrainConfig(encoding="fourier", fourier_features=32, fourier_scale=2.0), SamplingConfig()),
    "wide": (TrainConfig(hidden_size=128, epochs=100), SamplingConfig(num_points=200_000)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["floor", "seed", "default"], choices=["floor", *RECIPES])
    parser.add_argument("--shapes", nargs="+", default=["bracket", "stepped", "cross"])
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    parts = cad_parts()
    print("| shape | recipe | training s | Chamfer-L1 | normal consistency | F-score@1% | IoU |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes:
            reference = parts[shape]
            path = Path(tmp) / f"{shape}.ply"
            reference.export(path)
            for recipe in args.recipes:
                if recipe == "floor":
                    m, seconds = compare_meshes(reference, reference, seed=1), 0.0
                else:
                    config, sampling = RECIPES[recipe]
                    run = Path(tmp) / f"{shape}-{recipe}"
                    start = time.perf_counter()
                    result = train(load_points(path, sampling, config.seed), config, run)
                    seconds = time.perf_counter() - start
                    export_checkpoint(run / "best.pt", run / "model.onnx", verify=False)
                    mesh, _ = mesh_model(OccupancyModel(run / "model.onnx", device="cpu"),
                                         MeshSettings(resolution=args.resolution))
                    m = compare_meshes(mesh, reference)
                    del result
                iou = f"{m.iou:.4f}" if m.iou is not None else "-"
                print(f"| {shape} | {recipe} | {seconds:.0f} | {m.chamfer_l1:.5f} | {m.normal_consistency:.4f} | "
                      f"{m.fscore[0.01]:.4f} | {iou} |", flush=True)


if __name__ == "__main__":
    main()
