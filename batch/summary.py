"""The batch's record: ``summary.csv`` (one row a shape, also what a rerun reads to skip finished shapes) and
``summary.png`` (the scores' distributions, the worst shapes named)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from occnet.batch.job import ALL_STAGES
from occnet.runtime.errors import InputError
from occnet.runtime.files import write_bytes_atomic
from occnet.runtime.plot import figure, write_png

COLUMNS = ("name", "source", "status", "error", "input_sha256", "settings",
           *(f"seconds_{stage.name}" for stage in ALL_STAGES), "seconds_overhead",
           *dict.fromkeys(column for stage in ALL_STAGES for column in stage.scores))
"""Derived from the stages (:data:`~occnet.batch.job.ALL_STAGES`): their times, then their scores. ``status`` is
``done`` or ``failed``; ``error`` the failed stage and its one line; ``settings`` the digest of
the options (:meth:`~occnet.batch.job.BatchSettings.fingerprint`); ``seconds_overhead`` the task's time beyond
its stages (starting, moving files through Ray, writing them); ``f_score`` is F@1% and ``chamfer_l1``,
``normal_consistency``, ``f_score`` score the mesh against an input mesh, ``iou`` and ``accuracy`` the model
against input points (or ``iou`` the mesh's volume against an input mesh)."""
PLOTTED = (("chamfer_l1", "Chamfer-L1 (x longest side)", True), ("f_score", "F@1%", False),
           ("val_iou", "validation IoU", False))
"""(column, title, whether higher is worse) of the summary plot's panels."""
WORST = 3
"""Shapes named per panel."""


def read_summary(path: Path) -> dict[str, dict[str, str]]:
    """The rows of an earlier ``summary.csv`` by shape name ({} if there is none). A file re-saved by a
    spreadsheet (a byte-order mark) reads as written; a row cut short or with cells to spare, or without a
    name, is left out: its shape is done again."""
    if not path.is_file():
        return {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read {path}: {exc}; move it away to start the batch afresh") from None
    if header and not {"name", "status", "input_sha256", "settings"} <= set(header):
        raise InputError(f"{path} is not an occ-batch summary; choose another --out-dir")
    return {row["name"]: row for row in rows if row.get("name") and None not in row and None not in row.values()}


def write_summary(rows: dict[str, dict], path: Path) -> None:
    """``summary.csv``, sorted by name, replaced atomically."""
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for name in sorted(rows):
        writer.writerow({key: _cell(rows[name].get(key)) for key in COLUMNS})
    write_bytes_atomic(path, out.getvalue().encode())


def plot_summary(rows: dict[str, dict], path: Path) -> None:
    """``summary.png``: a histogram per score over the finished shapes, the ``WORST`` shapes named, and the
    count of failures in the title."""
    done = [row for row in rows.values() if row.get("status") == "done"]
    failed = len(rows) - len(done)
    fig = figure(5 * len(PLOTTED), 4.5)
    for ax, (column, title, higher_is_worse) in zip(fig.subplots(1, len(PLOTTED)), PLOTTED):
        scored = sorted(((float(row[column]), row["name"]) for row in done if _number(row.get(column))),
                        reverse=higher_is_worse)
        if not scored:
            ax.set(title=f"{title}: no values")
            continue
        ax.hist([value for value, _ in scored], bins=min(30, max(5, len(scored) // 3)), color="tab:blue")
        worst = "\n".join(f"{name}: {value:.4g}" for value, name in scored[:WORST])
        ax.text(0.98, 0.97, f"worst:\n{worst}", transform=ax.transAxes, ha="right", va="top", fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.8})
        ax.set(title=f"{title} ({len(scored)} shapes)", ylabel="shapes")
    fig.suptitle(f"{len(done)} shapes done, {failed} failed")
    write_png(fig, path)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _number(text) -> bool:
    try:
        return math.isfinite(float(text))
    except (TypeError, ValueError):
        return False
