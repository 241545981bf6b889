"""Meshing speed and peak memory, side by side in one run, on the demo model (models/demo.onnx, demo.pt).

Cases, each in its own process so that peak memory (max RSS) is its own:
  seed      the seed's way: the whole make_grid (indexing='xy') through the PyTorch model at once, then
            marching cubes on the full volume (needs torch)
  dense     occnet dense onnxruntime extraction at a given --batch-size
  adaptive  occnet's default: coarse-to-fine narrow band
All timings include grid construction, inference and marching cubes, not model loading or file writing.

    python benchmarks/bench_mesh.py [--resolutions 128 256 512] [--threads 0]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "models" / "demo"


def run_seed(resolution: int) -> dict:
    import torch
    from skimage import measure

    from occnet.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(DEMO.with_suffix(".pt"))
    model = ckpt.network()
    start = time.perf_counter()
    axes = [np.linspace(lo, hi, resolution) for lo, hi in zip(ckpt.bounds_min, ckpt.bounds_max)]
    grid = np.stack(np.meshgrid(*axes, indexing="xy"), axis=-1).reshape(-1, 3)
    with torch.no_grad():
        logits = model(torch.from_numpy(grid).float()).numpy()
    verts, faces, _, _ = measure.marching_cubes(logits.reshape((resolution,) * 3), 0.0)
    return {"seconds": time.perf_counter() - start, "points_evaluated": len(grid), "faces": len(faces)}


def run_occnet(method: str, resolution: int, batch_size: int, threads: int) -> dict:
    from occnet.runtime import MeshSettings, OccupancyModel, mesh_model

    model = OccupancyModel(DEMO.with_suffix(".onnx"), device="cpu", threads=threads)
    mesh, stats = mesh_model(model, MeshSettings(resolution=resolution, method=method, batch_size=batch_size))
    return {"seconds": stats.seconds_total, "points_evaluated": stats.points_evaluated, "faces": stats.faces,
            "seconds_inference": stats.seconds_inference, "seconds_marching_cubes": stats.seconds_marching_cubes,
            "watertight": stats.watertight}


def case(args: argparse.Namespace) -> None:
    result = (run_seed(args.resolution) if args.case == "seed"
              else run_occnet(args.case, args.resolution, args.batch_size, args.threads))
    result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def measure(name: str, resolution: int, batch_size: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--case", name, "--resolution", str(resolution),
           "--batch-size", str(batch_size), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["seed", "dense", "adaptive"])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--batch-size", type=int, default=16384)
    parser.add_argument("--dense-batches", type=int, nargs="+", default=[16384, 65536, 262144, 1048576])
    parser.add_argument("--seed-max", type=int, default=256, help="largest resolution to run the seed's way at")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.case:
        case(args)
        return
    print("| resolution | method | points evaluated | seconds | peak MiB | faces | vs seed | vs best dense |")
    print("|---|---|---|---|---|---|---|---|")
    for res in args.resolutions:
        rows = []
        seed = measure("seed", res, 0, args.threads) if res <= args.seed_max else None
        if seed:
            rows.append(("seed (torch, whole grid)", seed))
        dense = [(b, measure("dense", res, b, args.threads)) for b in args.dense_batches]
        best_batch, best = min(dense, key=lambda d: d[1]["seconds"])
        for b, d in dense:
            rows.append((f"dense, batch {b:,}" + (" (best)" if b == best_batch else ""), d))
        adaptive = measure("adaptive", res, args.batch_size, args.threads)
        rows.append(("adaptive (default)", adaptive))
        for name, r in rows:
            vs_seed = f"{seed['seconds'] / r['seconds']:.1f}x" if seed else "-"
            print(f"| {res} | {name} | {r['points_evaluated']:,} | {r['seconds']:.2f} | {r['peak_mib']:.0f} | "
                  f"{r['faces']:,} | {vs_seed} | {best['seconds'] / r['seconds']:.1f}x |")


if __name__ == "__main__":
    main()
