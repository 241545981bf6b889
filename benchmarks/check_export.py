"""onnxruntime against PyTorch on millions of points: a checkpoint and its exported model, compared in bulk.

    python benchmarks/check_export.py [models/demo.pt models/demo.onnx] [--points 5000000]

Points are uniform in the model's box, 10% beyond it on each side. Reports what verification bounds:
onnxruntime's and PyTorch float32's largest errors against the same network in float64, the largest
|onnxruntime - PyTorch|, and inside/outside disagreements where the float64 logit exceeds both errors.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np

from occnet.export.exporter import ERROR_FACTOR, Agreement
from occnet.export.onnx_export import compare
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
    reference = copy.deepcopy(net).double()
    session = OccupancyModel(args.model, device="cpu")
    lo, hi = np.array(ckpt.bounds_min), np.array(ckpt.bounds_max)
    pad = 0.1 * (hi - lo)
    rng = np.random.default_rng(0)
    total = Agreement(0, 0.0, 0.0, 0.0, 0)
    for start in range(0, args.points, 500_000):
        points = rng.uniform(lo - pad, hi + pad, size=(min(500_000, args.points - start), 3)).astype(np.float32)
        total = total.merge(compare(net, reference, session, points))
    print(f"{total.points:,} points: onnxruntime error {total.onnx_error:.3g}, PyTorch float32 error "
          f"{total.torch_error:.3g} (ratio {total.onnx_error / total.torch_error:.2f}, limit {ERROR_FACTOR:g}), "
          f"max |onnxruntime - PyTorch| {total.max_abs_diff:.3g}, inside/outside disagreements: {total.sign_flips}")


if __name__ == "__main__":
    main()
