"""Extraction by sound bounds against the adaptive rule, side by side in one run: network evaluations, seconds
(the fastest of ``--repeats``) and faces, on the repository's models.

    python benchmarks/bench_bounded.py --resolutions 128 256 --threads 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

MODELS = Path(__file__).resolve().parent.parent / "models"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["demo", "tube", "sheet_fourier", "ribs"])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from occnet.runtime import MeshSettings, OccupancyModel, mesh_model

    print("| model | resolution | method | evaluations | seconds | faces |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        model = OccupancyModel(MODELS / f"{name}.onnx", device="cpu", threads=args.threads)
        for resolution in args.resolutions:
            seconds = {}
            for method in ("adaptive", "bounded"):
                runs = [mesh_model(model, MeshSettings(resolution=resolution, method=method))
                        for _ in range(args.repeats)]
                mesh, stats = min(runs, key=lambda run: run[1].seconds_total)
                seconds[method] = stats.seconds_total
                print(f"| {name} | {resolution} | {method} | {stats.points_evaluated:,} | {stats.seconds_total:.2f} | "
                      f"{len(mesh.faces):,} |")
            ratio = seconds["bounded"] / seconds["adaptive"]
            print(f"| {name} | {resolution} | bounded / adaptive | | {ratio:.1f}x | |")


if __name__ == "__main__":
    main()
