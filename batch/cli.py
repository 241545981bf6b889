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
    model: Annotated[Optional[Path], typer.Option(help="A conditional model (occ-export of ONet's checkpoint): "
                     "SOURCES are its observations (point clouds or voxel grids, ONet's pointcloud.npz and "
                     "model.binvox named by their folders), each reconstructed into NAME/mesh.*.")] = None,
    **options,
) -> None:
    """Run occ-train, occ-export, occ-mesh and occ-eval on every shape of SOURCES as Ray tasks; with --model,
    reconstruct every observation of SOURCES with that model."""
    from occnet.batch.runner import run_batch
    from occnet.batch.sources import POINT_CLOUDS, SHAPES, VOXEL_GRIDS, find_shapes, sha256

    config, sampling = training_records(ctx.params)
    mesh = make_record(MeshSettings, ctx.params, only=MESH_OPTIONS)
    data, kind = b"", SHAPES
    if model is not None:
        data, condition = _conditional_model(ctx, model)
        kind = POINT_CLOUDS if condition.observation == "pointcloud" else VOXEL_GRIDS
    elif ctx.params["normalize"]:
        raise typer.BadParameter("--normalize maps observations into a conditional model's frame; give --model")
    settings = make_record(BatchSettings, ctx.params, train=config, sampling=sampling, mesh=mesh,
                           model_sha256=sha256(data) if data else "")
    if address is None and os.environ.get("RAY_ADDRESS"):
        typer.echo(f"note: RAY_ADDRESS={os.environ['RAY_ADDRESS']} is not used: without --address occ-batch starts "
                   "a private Ray on this machine", err=True)
    shapes = find_shapes(sources, exclude=out_dir, kind=kind)
    typer.echo(f"data: {len(shapes)} {kind.what} -> {out_dir}", err=True)
    try:
        with _progress(len(shapes)) as show:
            report = run_batch(shapes, settings, out_dir, address, show, data)
    except KeyboardInterrupt:
        raise Interrupted(f"finished shapes are kept in {out_dir}/summary.csv; run the same command again to "
                          "continue") from None
    typer.echo(f"{report.done} done, {report.failed} failed, {report.skipped} skipped (finished before) in "
               f"{report.seconds:.0f} s: {out_dir / 'summary.csv'}, {out_dir / 'summary.png'}")
    if report.failed:
        worst = next(row for row in report.rows.values() if row["status"] == "failed")
        raise OccNetError(f"{report.failed} of {len(shapes)} {kind.what} failed (first: {worst['name']}: "
                          f"{worst['error']}); see {out_dir / 'summary.csv'}")


RECONSTRUCT_ALLOWS = {"device", "threads_per_shape", "gpus_per_shape", "normalize", "mesh_format"}
"""Options besides the meshing ones that reconstructing with --model heeds: no shape is trained or scored."""


def _conditional_model(ctx: typer.Context, path: Path):
    """The bytes and condition of the conditional model ``path``, loaded as a worker will load it; options
    that only training or scoring use are refused by name."""
    from occnet.runtime.errors import InputError
    from occnet.runtime.session import OccupancyModel

    ignored = [p.name for p in ctx.command.params if p.name not in {*MESH_OPTIONS, *RECONSTRUCT_ALLOWS}
               and ctx.get_parameter_source(p.name).name == "COMMANDLINE" and p.name not in ("sources", "out_dir",
                                                                                            "address", "model")]
    if ignored:
        names = ", ".join("--" + name.replace("_", "-") for name in ignored)
        raise typer.BadParameter(f"{names} cannot be combined with --model: its observations are reconstructed, "
                                 "not trained or scored")
    loaded = OccupancyModel(path, device="cpu", threads=1)
    if loaded.info.condition is None:
        raise InputError(f"{path} is not a conditional model: --model reconstructs observations; without it "
                         "occ-batch trains a model per shape")
    return path.read_bytes(), loaded.info.condition


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
