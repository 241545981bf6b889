"""occ-batch on the local Ray against the same shapes run one after another by the single-shape commands,
side by side in one run, plus Ray's own start-up and the batch machinery's time per shape.

The shapes are the first --shapes of the quality suite (occnet.train.suite), written as STL. Both ways train
a fixed number of epochs (--time-budget inf, so both do the same work), export, mesh at --resolution and
score the mesh against its input:
  commands  occ-train, occ-export, occ-mesh, occ-eval per shape, one after another, each with its defaults
            (torch and onnxruntime take every core)
  occ-batch one command, --threads-per-shape 1: Ray runs as many shapes at once as there are cores
"overhead" is the summary's seconds_overhead: a task's time beyond its stages (starting the worker's
imports, moving files through Ray, writing them). Ray's start-up is ray.init() on this machine, its memory
the resident memory of the processes it started.

    python benchmarks/bench_batch.py [--shapes 8] [--epochs 30] [--resolution 256]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def write_shapes(folder: Path, count: int) -> list[Path]:
    from occnet.train.suite import quality_suite

    folder.mkdir(parents=True)
    paths = []
    for name, shape in list(quality_suite().items())[:count]:
        paths.append(folder / f"{name}.stl")
        shape.mesh.export(paths[-1])
    return paths


def run(*args: str) -> None:
    result = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {result.stderr.strip()}")


def one_after_another(shapes: list[Path], out: Path, training: list[str], resolution: int) -> float:
    start = time.perf_counter()
    for shape in shapes:
        run_dir = out / shape.stem
        run("occ-train", str(shape), "--out-dir", str(run_dir), *training)
        run("occ-export", str(run_dir / "best.pt"), str(run_dir / "model.onnx"))
        run("occ-mesh", str(run_dir / "model.onnx"), "--resolution", str(resolution), "-o", str(run_dir / "mesh.ply"))
        run("occ-eval", str(run_dir / "mesh.ply"), str(shape))
    return time.perf_counter() - start


def batch(folder: Path, out: Path, training: list[str], resolution: int) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    run("occ-batch", str(folder), "--out-dir", str(out), "--threads-per-shape", "1", "--resolution",
        str(resolution), *training)
    seconds = time.perf_counter() - start
    with open(out / "summary.csv", newline="") as handle:
        return seconds, list(csv.DictReader(handle))


def ray_start_up() -> tuple[float, float]:
    """Seconds of ray.init() on this machine and the resident MiB of the processes it started."""
    code = """
import os, time, ray
start = time.perf_counter()
ray.init(include_dashboard=False, logging_level="ERROR")
seconds = time.perf_counter() - start
time.sleep(2)
def children(pid):
    out = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                if entry.isdigit() and int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    out += [int(entry), *children(int(entry))]
        except OSError:
            pass
    return out
rss = 0
for pid in children(os.getpid()):
    try:
        with open(f"/proc/{pid}/status") as f:
            rss += next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
    except (OSError, StopIteration):
        pass
print(seconds, rss / 1024)
ray.shutdown()
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, mib = map(float, result.stdout.split())
    return seconds, mib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    training = ["--epochs", str(args.epochs), "--time-budget", "inf"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shapes = write_shapes(root / "shapes", args.shapes)
        alone = one_after_another(shapes, root / "commands", training, args.resolution)
        together, rows = batch(root / "shapes", root / "batch", training, args.resolution)
        start_seconds, start_mib = ray_start_up()
    overhead = [float(row["seconds_overhead"]) for row in rows if row["seconds_overhead"]]
    failed = [row["name"] for row in rows if row["status"] != "done"]
    print(f"{args.shapes} shapes, {args.epochs} epochs each, resolution {args.resolution}, {os.cpu_count()} cores"
          + (f"; failed in the batch: {failed}" if failed else ""))
    print("| way | wall seconds | vs commands |\n|---|---|---|")
    print(f"| single-shape commands, one after another | {alone:.1f} | 1.00x |")
    print(f"| occ-batch, local Ray, --threads-per-shape 1 | {together:.1f} | {together / alone:.2f}x |")
    print(f"\nRay start-up: {start_seconds:.1f} s, {start_mib:.0f} MiB resident; batch overhead per shape: mean "
          f"{sum(overhead) / len(overhead):.2f} s, max {max(overhead):.2f} s")


if __name__ == "__main__":
    main()
