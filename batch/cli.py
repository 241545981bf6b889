"""``occ-batch``: train, export, mesh and score a whole collection of shapes as Ray tasks, locally or on a
cluster; a rerun skips what is finished."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer

from occnet.batch.job import BatchSettings
from occnet.batch.runner import BatchProgress
from occnet.runtime.console import Interrupted, run_app
from occnet.runtime.errors import OccNetError
from occnet.runtime.options import make_record, with_options
from occnet.runtime.settings import MeshSettings
from occnet.train.config import SamplingConfig, TrainConfig, encoding_options, training_records

batch_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


MESH_OPTIONS = ("resolution", "method", "threshold")
"""The meshing options occ-batch takes: a batch meshes with occ-mesh's defaults otherwise (its own
``--batch-size`` is training's)."""


@batch_app.command()
# a task trains on --threads-per-shape
@with_options(TrainConfig, *encoding_options(), SamplingConfig, exclude=("threads",))
@with_options(MeshSettings, only=MESH_OPTIONS)
@with_options(BatchSettings)
def occ_batch(
    ctx: typer.Context,
    sources: Annotated[list[str], typer.Argument(help="Files, folders (searched recursively for meshes and "
                       ".npz points; ONet's category/shape/points.npz is shape category/shape) or globs.")],
    out_dir: Annotated[Path, typer.Option(help="Folder for NAME/{best.pt,last.pt,metrics.csv,loss.png,"
                       "model.onnx,mesh.*,eval.json}, summary.csv and summary.png.")],
    address: Annotated[Optional[str], typer.Option(help="Ray cluster to join: auto, or ray://HOST:PORT. "
                       "Default: a private Ray on this machine (RAY_ADDRESS is not used).")] = None,
    **options,
) -> None:
    """Run occ-train, occ-export, occ-mesh and occ-eval on every shape of SOURCES as Ray tasks."""
    from occnet.batch.runner import run_batch
    from occnet.batch.sources import find_shapes

    config, sampling = training_records(ctx.params)
    mesh = make_record(MeshSettings, ctx.params, only=MESH_OPTIONS)
    settings = make_record(BatchSettings, ctx.params, train=config, sampling=sampling, mesh=mesh)
    if address is None and os.environ.get("RAY_ADDRESS"):
        typer.echo(f"note: RAY_ADDRESS={os.environ['RAY_ADDRESS']} is not used: without --address occ-batch starts "
                   "a private Ray on this machine", err=True)
    shapes = find_shapes(sources, exclude=out_dir)
    typer.echo(f"data: {len(shapes)} shapes -> {out_dir}", err=True)
    try:
        with _progress(len(shapes)) as show:
            report = run_batch(shapes, settings, out_dir, address, show)
    except KeyboardInterrupt:
        raise Interrupted(f"finished shapes are kept in {out_dir}/summary.csv; run the same command again to "
                          "continue") from None
    typer.echo(f"{report.done} done, {report.failed} failed, {report.skipped} skipped (finished before) in "
               f"{report.seconds:.0f} s: {out_dir / 'summary.csv'}, {out_dir / 'summary.png'}")
    if report.failed:
        worst = next(row for row in report.rows.values() if row["status"] == "failed")
        raise OccNetError(f"{report.failed} of {len(shapes)} shapes failed (first: {worst['name']}: "
                          f"{worst['error']}); see {out_dir / 'summary.csv'}")


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Callable[[BatchProgress], None]]:
    """Yields ``show(progress)``: a bar over shapes on a terminal, a plain line per change otherwise."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    stderr = Console(stderr=True, highlight=False)
    if stderr.is_terminal:
        with Progress(TextColumn("shapes"), BarColumn(), TextColumn("{task.description}"), TimeRemainingColumn(),
                      console=stderr, transient=True) as bar:
            task = bar.add_task("", total=total)
            yield lambda p: bar.update(task, completed=p.done + p.failed + p.skipped, description=_counts(p))
        return
    shown = set()

    def show(p: BatchProgress) -> None:
        text = _counts(p)
        if text not in shown:
            shown.add(text)
            eta = f", ETA {p.eta_seconds:.0f} s" if p.eta_seconds is not None else ""
            sys.stderr.write(f"{time.strftime('%H:%M:%S')} shapes {p.done + p.failed + p.skipped}/{total}: "
                             f"{text}{eta}\n")
            sys.stderr.flush()
    yield show


def _counts(p: BatchProgress) -> str:
    return f"{p.done} done, {p.failed} failed, {p.skipped} skipped, {p.running} running"


def batch_main(argv: list[str] | None = None) -> None:
    """Entry point: needs Ray and PyTorch (the ``[batch]`` extra); says so in one line if they are missing."""
    run_app(batch_app, "occ-batch", argv, extra="batch", needs=("ray", "torch", "onnx"))
