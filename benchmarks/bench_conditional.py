"""A conditional point-cloud model trained here, on the synthetic collection, against the baselines.

The collection: ``--per-class`` solids of each of the four synthetic classes (blob, ring, holed, pair), split
80/10/10 (1,252 a class gives 1,000 training shapes in all). The model: occ-train's small size and ONet's
recipe (300-point clouds with noise 0.005, 2048 query points a shape), trained for ``--minutes`` of wall time
(whole epochs; the epochs reached are printed, so ``--epochs`` repeats the run on any machine). Every test
shape is reconstructed from a fresh 300-point cloud by the exported model, as ``occ-eval`` scores, beside the
convex hull of the same cloud and screened Poisson reconstruction of it with normals estimated from the cloud
(MeshLab's, ``pip install 'occnet[bench]'``). Then Ray Train with 2 workers against one
process: seconds per sample seen, over the same epochs.

    python benchmarks/bench_conditional.py --minutes 30
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def train_for(collection, config, out_dir: Path, minutes: float):
    """``config`` for as many whole epochs as fit in ``minutes`` of wall time, loading included (the first
    epoch's own time sets the pace); returns the history and the epochs run."""
    from occnet.train.conditional import train_conditional

    started = time.perf_counter()
    history = train_conditional(collection, replace(config, epochs=1), out_dir, force=True)
    left = minutes * 60 - (time.perf_counter() - started) - (time.perf_counter() - started - history[0].seconds)
    epochs = 1 + max(0, int(left // history[0].seconds))
    if epochs > 1:
        history = train_conditional(collection, replace(config, epochs=epochs), out_dir, resume=True)
    return history, epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=313, help="solids a class (313: 1,000 training shapes)")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, help="folder for the collection (made once; default: a temporary one)")
    parser.add_argument("--speed-epochs", type=int, default=3, help="epochs of the Ray Train comparison (0: none)")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate (occ-train's default; ONet's 1e-4)")
    args = parser.parse_args()

    from occnet.export.onnx_export import export_checkpoint
    from occnet.runtime import MeshSettings, OccupancyModel
    from occnet.runtime.reconstruction import score_collection
    from occnet.train.collection import synthetic_collection
    from occnet.train.config import ConditionalConfig

    with tempfile.TemporaryDirectory() as folder:
        root = args.data or Path(folder) / "synthetic"
        began = time.perf_counter()
        collection = synthetic_collection(root, args.per_class, seed=0)
        print(f"collection: {sum(len(collection.shapes(s)) for s in ('train', 'val', 'test'))} shapes "
              f"({len(collection.shapes('train'))} train) in {time.perf_counter() - began:.0f} s")
        config = ConditionalConfig(threads=args.threads, lr=args.lr)
        run = Path(folder) / "run"
        history, epochs = train_for(collection, config, run, args.minutes)
        best = max(history, key=lambda m: m.val_iou)
        print(f"trained {epochs} epochs ({epochs * config.steps_per_epoch} steps) in "
              f"{sum(m.seconds for m in history):.0f} s; best epoch {best.epoch}: val IoU {best.val_iou:.4f}")
        export_checkpoint(run / "best.pt", run / "model.onnx")
        model = OccupancyModel(run / "model.onnx", device="cpu", threads=args.threads)
        summary = score_collection(model, collection, "test", MeshSettings(resolution=128), 20_000,
                                   baselines=("hull", "poisson")).summary()
        print("| class | method | IoU | Chamfer-L1 | normal consistency | F@1% |")
        print("|---|---|---|---|---|---|")
        for category in [*summary["model"]["classes"], "all"]:
            for method, part in summary.items():
                f = part["all"] if category == "all" else part["classes"][category]
                print(f"| {category} | {method} | {f['iou']:.4f} | {f['chamfer_l1']:.4f} | "
                      f"{f['normal_consistency']:.4f} | {f['f_score']:.4f} |")
        for baseline in ("hull", "poisson"):
            gap = summary["model"]["all"]["iou"] - summary[baseline]["all"]["iou"]
            print(f"model IoU - {baseline} IoU: {gap:+.4f}" + (" (target >= +0.08)" if baseline == "hull" else ""))
        if not args.speed_epochs:
            return
        speed = replace(config, epochs=args.speed_epochs, threads=1)
        from occnet.batch.distributed import train_distributed
        from occnet.train.conditional import train_conditional

        times = {}
        for name, call in (("one process", lambda: train_conditional(collection, speed, Path(folder) / "s1")),
                           ("2 Ray Train workers", lambda: train_distributed(collection, speed, Path(folder) / "s2",
                                                                             2))):
            began = time.perf_counter()
            call()
            times[name] = time.perf_counter() - began
        samples = speed.epochs * speed.steps_per_epoch * speed.batch_shapes * speed.points_per_shape
        for name, seconds in times.items():
            print(f"{name}: {seconds:.1f} s for {samples:,} samples ({seconds / samples * 1e6:.2f} us a sample)")
        print(json.dumps({"ray_over_single": times["2 Ray Train workers"] / times["one process"]}))


if __name__ == "__main__":
    main()
