"""Figures as PNG files: matplotlib (an optional dependency, imported on use) on its own Agg canvas, written
atomically; ``occ-eval``'s picture of a collection's scores."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

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


def plot_collection_scores(scores, title: str, path: Path) -> None:
    """``occ-eval``'s summary of a collection (:class:`~occnet.runtime.reconstruction.CollectionScores`): mean
    IoU by class and method as grouped bars, and each method's per-shape IoU as a histogram."""
    summary = scores.summary()
    methods = list(summary)
    classes = [*summary[methods[0]]["classes"], "all"]
    fig = figure(12, 4.5)
    bars, spread = fig.subplots(1, 2)
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        means = [summary[method]["all"]["iou"] if c == "all" else summary[method]["classes"][c]["iou"]
                 for c in classes]
        bars.bar(np.arange(len(classes)) + (k - (len(methods) - 1) / 2) * width, means, width, label=method)
        values = [row.iou for row in scores.rows if row.method == method]
        spread.hist(values, bins=np.linspace(0, 1, 21), histtype="step", linewidth=2, label=method)
    bars.set_xticks(np.arange(len(classes)), classes)
    bars.set(ylabel="mean IoU", ylim=(0, 1), title="IoU by class")
    spread.set(xlabel="IoU", ylabel="shapes", title="IoU of each shape")
    for ax in (bars, spread):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    write_png(fig, path)
