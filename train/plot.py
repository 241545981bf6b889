"""Figures as PNG files: matplotlib on its own Agg canvas, written atomically; ``loss.png`` of a run."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from occnet.runtime.files import write_bytes_atomic


def figure(width: float, height: float):
    """A matplotlib figure of ``width`` x ``height`` inches on its own Agg canvas: matplotlib's object API, no
    pyplot, no process-wide backend switch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def write_png(fig, path: Path) -> None:
    """Lay ``fig`` out and write it to ``path`` as a PNG, atomically."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_bytes_atomic(Path(path), buffer.getvalue())


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
