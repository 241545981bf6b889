"""``loss.png`` of a training run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from occnet.runtime.plot import figure, write_png


def plot_history(history: Sequence, path: Path) -> None:
    """Draw the loss curves (log scale) and the IoU of ``history`` (EpochMetrics rows) to a PNG, atomically."""
    from matplotlib.ticker import MaxNLocator

    epochs = [m.epoch for m in history]
    fig = figure(10, 4)
    ax_loss, ax_iou = fig.subplots(1, 2)
    ax_loss.plot(epochs, [m.train_loss for m in history], label="train")
    ax_loss.plot(epochs, [m.val_loss for m in history], label="validation")
    best = min(history, key=lambda m: m.val_loss)
    ax_loss.scatter([best.epoch], [best.val_loss], color="black", zorder=3, label=f"best (epoch {best.epoch})")
    ax_loss.set(xlabel="epoch", ylabel="BCE loss", yscale="log", title="loss")
    ax_loss.legend()
    ax_iou.plot(epochs, [m.val_iou for m in history], color="tab:green")
    ax_iou.set(xlabel="epoch", ylabel="IoU", title=f"validation IoU (best.pt: {best.val_iou:.4f})")
    for ax in (ax_loss, ax_iou):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    write_png(fig, path)
