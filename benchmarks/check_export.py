"""onnxruntime against PyTorch on millions of points: a checkpoint and its exported model, compared in bulk.

    python benchmarks/check_export.py [models/demo.pt models/demo.onnx] [--points 5000000]

Points are uniform in the model's box, 10% beyond it on each side. Reports max |logit diff|, the scaled
difference verification bounds (|diff| / max(1, |logit|)), the largest |diff| where |logit| < 10 (where
surfaces are decided), and how often the two disagree on inside/outside.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from occnet.export.onnx_export import scaled_difference
from occnet.runtime.field import batched
from occnet.runtime.session import OccupancyModel
from occnet.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default=ROOT / "models" / "demo.pt", type=Path)
    parser.add_argument("model", nargs="?", default=ROOT / "models" / "demo.onnx", type=Path)
    parser.add_argument("--points", type=int, default=5_000_000)
    args = parser.parse_args()
    ckpt = load_checkpoint(args.checkpoint)
    net = ckpt.network()
    session = OccupancyModel(args.model, device="cpu")
    lo, hi = np.array(ckpt.bounds_min), np.array(ckpt.bounds_max)
    pad = 0.1 * (hi - lo)
    rng = np.random.default_rng(0)
    worst = scaled = near = 0.0
    flips = 0
    for start in range(0, args.points, 500_000):
        points = rng.uniform(lo - pad, hi + pad, size=(min(500_000, args.points - start), 3)).astype(np.float32)
        with torch.no_grad():
            expected = net(torch.from_numpy(points)).numpy()
        got = batched(session.logits, points, 65536)
        diff = np.abs(got - expected)
        worst = max(worst, float(diff.max()))
        scaled = max(scaled, float(scaled_difference(got, expected).max()))
        small = np.abs(expected) < 10
        near = max(near, float(diff[small].max()) if small.any() else 0.0)
        flips += int(np.count_nonzero((got > 0) != (expected > 0)))
    print(f"{args.points:,} points: max |diff| {worst:.3g}, max |diff|/max(1,|logit|) {scaled:.3g}, "
          f"max |diff| where |logit| < 10: {near:.3g}, inside/outside disagreements: {flips}")


if __name__ == "__main__":
    main()
