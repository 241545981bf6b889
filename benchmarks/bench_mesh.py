"""Meshing speed and peak memory, side by side in one run, on models/demo.onnx (demo.pt for the seed's way)
and models/tube.onnx (a thin-walled tube).

Cases, each in its own process so that peak memory (max RSS) is its own:
  seed      the seed's way: the whole make_grid (indexing='xy') through the PyTorch model at once, then
            marching cubes on the full volume (needs torch; demo only)
  dense     occnet dense onnxruntime extraction at a given --batch-size: the reference mesh
  adaptive  occnet's default: coarse-to-fine, split where the logits allow a surface, bricks along the band
  mise      ONet's MISE: its compiled libmise (build it from ONet's im2mesh/utils/libmise with
            `cythonize -i mise.pyx` and put the folder on PYTHONPATH), 32^3 voxels refined to resolution - 1,
            dense grid, marching cubes, timed as ONet runs it; needs resolution = 32 * 2^k + 1 (257, 513)
All timings include grid construction, inference and marching cubes, not model loading or file writing;
adaptive and MISE report the fastest of --repeat runs in one process, dense and seed a single run.
"same as dense" compares the adaptive mesh's faces with the dense one's (vertices matched within 1e-5).

    python benchmarks/bench_mesh.py [--models demo tube] [--resolutions 256 512 1024] [--threads 2]
    python benchmarks/bench_mesh.py --mise [--resolutions 257 513] [--threads 2]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "models" / "demo"
OUT = Path(tempfile.gettempdir()) / "occnet-bench-mesh"


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


def run_occnet(model_name: str, method: str, resolution: int, batch_size: int, threads: int, repeat: int) -> dict:
    """The fastest of ``repeat`` runs in this process (the machines here are shared and noisy)."""
    from occnet.runtime import MeshSettings, OccupancyModel, mesh_model

    model = OccupancyModel(ROOT / "models" / f"{model_name}.onnx", device="cpu", threads=threads)
    settings = MeshSettings(resolution=resolution, method=method, batch_size=batch_size)
    stats = None
    for _ in range(repeat):
        mesh = None                                     # one mesh alive at a time: peak RSS is one run's
        gc.collect()                                    # (a trimesh holds reference cycles through its cache)
        mesh, run = mesh_model(model, settings)
        stats = run if stats is None or run.seconds_total < stats.seconds_total else stats
    peak = peak_rss_mib()                               # meshing's peak, before the comparison's PLY export
    mesh.export(OUT / f"{model_name}-{method}-{resolution}.ply")   # every run gives the same mesh
    return {"seconds": stats.seconds_total, "points_evaluated": stats.points_evaluated, "faces": stats.faces,
            "seconds_inference": stats.seconds_inference, "seconds_marching_cubes": stats.seconds_marching_cubes,
            "watertight": stats.watertight, "field_mib": stats.field_bytes / 2**20, "peak_mib": peak}


def run_mise(model_name: str, resolution: int, batch_size: int, threads: int) -> dict:
    """ONet's generation with MISE, as its ``Generator3D.generate_from_latent`` runs it: the compiled libmise
    (32^3 voxels, ``resolution - 1 = 32 * 2^k``) queried and updated until no point is left, ``to_dense``, the
    grid padded with -1e6 and marching cubes. The network is the same onnxruntime session as occnet's, on
    the cube over the model's box (ONet meshes a cube), ``batch_size`` points at a time."""
    from mise import MISE
    from skimage import measure

    from occnet.runtime import OccupancyModel

    depth = int(np.log2((resolution - 1) // 32))
    if resolution - 1 != 32 * 2**depth:
        raise SystemExit(f"--mise needs resolution = 32 * 2^k + 1, got {resolution}")
    model = OccupancyModel(ROOT / "models" / f"{model_name}.onnx", device="cpu", threads=threads)
    lo, hi = np.array(model.info.bounds_min), np.array(model.info.bounds_max)
    side = float(np.max(hi - lo))
    start = time.perf_counter()
    extractor = MISE(32, depth, 0.0)
    points, evaluated = extractor.query(), 0
    while len(points):
        world = (lo + hi) / 2 + side * (points / extractor.resolution - 0.5)
        values = np.concatenate([model.logits(world[i:i + batch_size]) for i in range(0, len(world), batch_size)])
        extractor.update(points, values.astype(np.float64))
        evaluated += len(points)
        points = extractor.query()
    grid = np.pad(extractor.to_dense(), 1, constant_values=-1e6)
    _, faces, _, _ = measure.marching_cubes(grid, 0.0)
    return {"seconds": time.perf_counter() - start, "points_evaluated": evaluated, "faces": len(faces)}


def same_as_dense(model_name: str, resolution: int) -> str:
    """Whether the adaptive mesh has the dense mesh's faces: vertices matched within 1e-5 (brick-local and
    whole-volume marching cubes may round a coordinate one float32 step apart), faces as position triples."""
    import trimesh
    from scipy.spatial import cKDTree

    a, b = (trimesh.load(OUT / f"{model_name}-{m}-{resolution}.ply", process=False) for m in ("adaptive", "dense"))
    positions = np.asarray(b.vertices, np.float64)
    distance, index = cKDTree(positions).query(a.vertices)
    mapped = np.where((distance < 1e-5)[:, None], positions[index], np.nan)

    def faces(corners):
        return {min(k[r:] + k[:r] for r in range(3)) for k in (tuple(map(tuple, t)) for t in corners.tolist())}

    fa, fb = faces(mapped[np.asarray(a.faces)]), faces(positions[np.asarray(b.faces)])
    return "yes" if fa == fb else f"no ({len(fa - fb)} / {len(fb - fa)} faces differ)"


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM): unlike ru_maxrss, not inherited from the benchmark's
    own (large) process across fork and exec."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def case(args: argparse.Namespace) -> None:
    if args.case == "seed":
        result = run_seed(args.resolution)
    elif args.case == "mise":
        result = min((run_mise(args.model, args.resolution, args.batch_size, args.threads)
                      for _ in range(args.repeat)), key=lambda r: r["seconds"])
    else:
        repeat = args.repeat if args.case == "adaptive" else 1
        result = run_occnet(args.model, args.case, args.resolution, args.batch_size, args.threads, repeat)
    result.setdefault("peak_mib", peak_rss_mib())
    print(json.dumps(result))


def measure(model: str, name: str, resolution: int, batch_size: int, threads: int, repeat: int = 1) -> dict:
    cmd = [sys.executable, __file__, "--model", model, "--case", name, "--resolution", str(resolution),
           "--batch-size", str(batch_size), "--threads", str(threads), "--repeat", str(repeat)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare_mise(args: argparse.Namespace) -> None:
    print("| model | resolution | method | points evaluated | seconds | faces | vs MISE |")
    print("|---|---|---|---|---|---|---|")
    for model in args.models:
        for res in args.resolutions:
            mise = measure(model, "mise", res, args.batch_size, args.threads, args.repeat)
            ours = measure(model, "adaptive", res, args.batch_size, args.threads, args.repeat)
            for name, r in (("ONet MISE (libmise, 32^3 start)", mise),
                            ("adaptive (default)", ours)):
                print(f"| {model} | {res} | {name} | {r['points_evaluated']:,} | {r['seconds']:.2f} | "
                      f"{r['faces']:,} | {mise['seconds'] / r['seconds']:.1f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["seed", "dense", "adaptive", "mise"])
    parser.add_argument("--mise", action="store_true", help="compare with ONet's MISE instead of dense")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--models", nargs="+", default=["demo", "tube"])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--batch-size", type=int, default=16384)
    parser.add_argument("--seed-max", type=int, default=256, help="largest resolution to run the seed's way at")
    parser.add_argument("--dense-max", type=int, default=512, help="largest resolution to run dense at")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="adaptive runs per case; the fastest counts "
                        "(peak memory is the process's, over all of them)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.case:
        case(args)
        return
    if args.mise:
        compare_mise(args)
        return
    print("| model | resolution | method | points evaluated | seconds | peak MiB | field MiB | faces | watertight "
          "| same as dense | vs seed | vs dense |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for model in args.models:
        for res in args.resolutions:
            rows = []
            seed = measure(model, "seed", res, 0, args.threads) if res <= args.seed_max and model == "demo" else None
            if seed:
                rows.append(("seed (torch, whole grid)", seed))
            dense = measure(model, "dense", res, args.batch_size, args.threads) if res <= args.dense_max else None
            if dense:
                rows.append(("dense", dense))
            adaptive = measure(model, "adaptive", res, args.batch_size, args.threads, args.repeat)
            adaptive["same"] = same_as_dense(model, res) if dense else "-"
            rows.append(("adaptive (default)", adaptive))
            for name, r in rows:
                vs_seed = f"{seed['seconds'] / r['seconds']:.1f}x" if seed else "-"
                vs_dense = f"{dense['seconds'] / r['seconds']:.1f}x" if dense else "-"
                field = f"{r['field_mib']:.0f}" if "field_mib" in r else "-"
                print(f"| {model} | {res} | {name} | {r['points_evaluated']:,} | {r['seconds']:.2f} | "
                      f"{r['peak_mib']:.0f} | {field} | {r['faces']:,} | {r.get('watertight', '-')} | "
                      f"{r.get('same', '-')} | {vs_seed} | {vs_dense} |", flush=True)


if __name__ == "__main__":
    main()
