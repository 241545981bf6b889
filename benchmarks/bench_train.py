"""Training speed, side by side in one run: the seed's loop against occnet's, on the same data and split.

The seed: ``DataLoader(TensorDataset, batch_size=1024, shuffle=True)``, Adam at 1e-3, 100 epochs, the same
network. occnet: ``TrainConfig()`` defaults (index slices of shuffled tensors, fused Adam, warm-up + cosine LR).
Reports the per-epoch time ratio at the same batch size, and how long occnet's defaults take to reach the
seed's final (100-epoch) validation IoU.

    python benchmarks/bench_train.py [--seed-epochs 100] [--near-fraction 0.0]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from occnet.train.model import OccNet
from occnet.train.sampling import SamplingConfig, load_points
from occnet.train.trainer import TrainConfig, evaluate, split, train


def seed_loop(data, train_idx, val_idx, epochs: int, log) -> list[tuple[float, float]]:
    """The seed's recipe; returns (elapsed seconds, val IoU) per epoch."""
    torch.manual_seed(0)
    x, y = torch.from_numpy(data.points.astype(np.float32)), torch.from_numpy(data.labels)
    model = OccNet(TrainConfig().architecture, data.bounds_min, data.bounds_max)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(x[train_idx], y[train_idx]), batch_size=1024, shuffle=True)
    history, start = [], time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        for xb, yb in loader:
            loss = F.binary_cross_entropy_with_logits(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        _, iou, _ = evaluate(model, x[val_idx], y[val_idx])
        history.append((time.perf_counter() - start, iou))
        log(f"seed epoch {epoch}: {history[-1][0]:.1f} s, val IoU {iou:.4f}")
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed-epochs", type=int, default=100)
    parser.add_argument("--near-fraction", type=float, default=0.0,
                        help="0: uniform points only, like ONet's points.npz (the seed's data)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    log = (lambda _: None) if args.quiet else print

    data = load_points(None, SamplingConfig(num_points=100_000, near_fraction=args.near_fraction), seed=0)
    train_idx, val_idx = split(len(data.points), 0.2, 0)
    seed = seed_loop(data, train_idx, val_idx, args.seed_epochs, log)
    with tempfile.TemporaryDirectory() as out:
        ours = train(data, TrainConfig(device="cpu"), out)
    seed_times = [b[0] - a[0] for a, b in zip([(0.0, 0.0)] + seed[:-1], seed)]
    seed_epoch = statistics.median(seed_times)
    our_epoch = statistics.median(m.seconds for m in ours.history)
    target = seed[-1][1]
    elapsed, reached = 0.0, None
    for m in ours.history:
        elapsed += m.seconds
        if reached is None and m.val_iou >= target:
            reached = (m.epoch, elapsed)
    print(f"| loop | median epoch over {len(train_idx):,} points (s) | final val IoU | total (s) |")
    print("|---|---|---|---|")
    print(f"| seed (DataLoader, {len(seed)} epochs) | {seed_epoch:.3f} | {target:.4f} | {seed[-1][0]:.1f} |")
    print(f"| occnet defaults ({len(ours.history)} epochs) | {our_epoch:.3f} | {ours.history[-1].val_iou:.4f} | "
          f"{elapsed:.1f} |")
    print(f"\nepoch time ratio (seed / occnet, batch 1024 both): {seed_epoch / our_epoch:.1f}x")
    if reached:
        print(f"occnet reaches the seed's {len(seed)}-epoch IoU {target:.4f} at epoch {reached[0]}, "
              f"{reached[1]:.1f} s: {seed[-1][0] / reached[1]:.1f}x sooner")
    else:
        print(f"occnet did not reach the seed's IoU {target:.4f}")


if __name__ == "__main__":
    main()
