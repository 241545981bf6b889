"""What adaptive extraction misses against dense, and what it evaluates, across resolutions and thresholds on
models/tube.onnx (a thin-walled tube, wall 0.5% of its longest side: from a fifth of a grid step at 37 to
about one step at 200 and more at 256), models/demo.onnx, and four parts no test was tuned on (see
models/rebuild.sh): sheet (tilted, 0.6% thick, two slots), sheet_fourier (the same trained with Fourier
features, whose field ripples), rods (a frame of thin rods and two small balls) and ribs (five thin fins, far
from the origin). For each case: dense's face count, the faces of dense's mesh adaptive lacks and the faces
it has that dense lacks (vertices matched within 1e-5, as the tests compare), and the points each evaluated.

    python benchmarks/bench_misses.py [--models tube demo sheet ... PATH.onnx] [--resolutions 37 100 129 200 256]
        [--thresholds 0.05 0.5 0.8 0.97]

A model is a name in models/ or the path of any occnet .onnx file.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import mesh_difference  # noqa: E402

from occnet.runtime import MeshSettings, OccupancyModel, mesh_model  # noqa: E402
from occnet.runtime.errors import EmptySurfaceError  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tube", "demo", "sheet", "sheet_fourier", "rods", "ribs"])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[37, 100, 129, 200, 256])
    parser.add_argument("--thresholds", nargs="+", type=float, default=[0.05, 0.5, 0.8, 0.97])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print("| model | resolution | threshold | dense faces | missing | extra | adaptive points | dense points |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        path = Path(name) if name.endswith(".onnx") else ROOT / "models" / f"{name}.onnx"
        model = OccupancyModel(path, device="cpu", threads=args.threads)
        name = path.stem
        for resolution in args.resolutions:
            for threshold in args.thresholds:
                settings = MeshSettings(resolution=resolution, threshold=threshold)
                try:
                    dense, dense_stats = mesh_model(model, replace(settings, method="dense"))
                except EmptySurfaceError:
                    continue                      # nothing to find at this threshold
                try:
                    adaptive, stats = mesh_model(model, settings)
                    extra, missing = mesh_difference(adaptive, dense)
                    points = f"{stats.points_evaluated:,}"
                except EmptySurfaceError:         # adaptive saw no surface at all: everything is missing
                    extra, missing, points = 0, len(dense.faces), "-"
                print(f"| {name} | {resolution} | {threshold} | {len(dense.faces):,} | {missing:,} | {extra:,} "
                      f"| {points} | {dense_stats.points_evaluated:,} |", flush=True)


if __name__ == "__main__":
    main()
