"""``occ-train``: fit an occupancy network to labelled points, a mesh, or the built-in demo shape; or a
conditional one (ONet's recipe) to a collection of shapes."""

from __future__ import annotations

import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from occnet.runtime.console import Interrupted, run_app
from occnet.runtime.options import with_options
from occnet.train.config import ConditionalConfig, SamplingConfig, TrainConfig, encoding_options, training_records

train_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
RESUME_ALLOWS = {"data", "resume", "epochs"}
"""What may be given with ``--resume``: the run's own options come from its last.pt; ``--epochs`` extends it
and DATA names its data where the file has moved."""


SHARED = {"epochs", "lr", "seed", "threads"}
"""Options a collection's training takes from occ-train's own (given on the command line; its defaults are the
recipe's)."""
DISTRIBUTED = {"workers", "address", "gpus_per_worker"}
"""The options that put a collection's training on Ray Train (a resumed run may take them)."""
COLLECTION_ONLY = {f.name for f in fields(ConditionalConfig)} - SHARED
"""Options of a collection's training alone: given without DATA they choose the built-in synthetic collection;
given with one shape they are refused."""


@train_app.command()
@with_options(TrainConfig, *encoding_options(), SamplingConfig)
@with_options(ConditionalConfig)
def occ_train(
    ctx: typer.Context,
    data: Annotated[Optional[Path], typer.Argument(help=".npz points+occupancies, a mesh (.obj .ply .stl "
                    ".off .glb), nothing for the built-in demo shape; or for a conditional model (--condition) a "
                    "collection in ONet's layout, a folder of meshes (CLASS/*.stl ..., prepared once into "
                    "OUT_DIR/collection), or nothing for the built-in synthetic collection.")] = None,
    out_dir: Annotated[Path, typer.Option(help="Folder for best.pt, last.pt, metrics.csv, loss.png.")]
    = Path("."),
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this folder from last.pt, "
                      "with the options and data it recorded (--epochs N extends it to N epochs).")] = None,
    force: Annotated[bool, typer.Option(help="Replace a previous run in --out-dir.")] = False,
    workers: Annotated[int, typer.Option(help="Collections: data-parallel workers on Ray Train (pip install "
                       "'occnet[batch]'); 1 trains in this process.")] = 1,
    address: Annotated[Optional[str], typer.Option(help="Collections with --workers: the Ray cluster to join "
                       "(auto, ray://HOST:PORT); default: a private Ray on this machine.")] = None,
    gpus_per_worker: Annotated[float, typer.Option(help="Collections with --workers: GPUs of each worker.")]
    = 0.0,
    **options,
) -> None:
    """Train an occupancy network and keep the checkpoint with the best validation loss."""
    run_dir = resume if resume is not None else out_dir
    finished = []                                    # epochs this process completed
    began = time.time()
    try:                                             # an interrupt from the first import on says what is kept
        from occnet.runtime.console import progress_bar
        from occnet.train.conditional import recorded_run
        from occnet.train.sampling import load_points
        from occnet.train.trainer import RunFiles, claim_run, fit, run_options

        recorded = recorded_run(resume) if resume is not None and RunFiles.in_folder(resume).last.is_file() else None
        given = {p.name for p in ctx.command.params if ctx.get_parameter_source(p.name).name == "COMMANDLINE"}
        if resume is not None and given - RESUME_ALLOWS - DISTRIBUTED:
            raise typer.BadParameter(f"{_flags(ctx, given - RESUME_ALLOWS - DISTRIBUTED)} cannot be combined with "
                                     "--resume: a resumed run keeps the options it recorded (only --epochs and "
                                     "DATA may be given)")
        synthetic = data is None and resume is None and bool(given & COLLECTION_ONLY)
        if recorded is not None or synthetic or _is_collection_folder(data):
            _train_collection(ctx, given, data, run_dir, resume, force, recorded, finished,
                              (workers, address, gpus_per_worker))
            return
        if workers != 1 or address is not None or gpus_per_worker:
            raise typer.BadParameter("--workers, --address and --gpus-per-worker train a collection (a folder in "
                                     "ONet's layout) on Ray Train; a single shape trains in this process")
        if given & COLLECTION_ONLY and resume is None:
            names = ", ".join("--" + name.replace("_", "-") for name in sorted(given & COLLECTION_ONLY))
            raise typer.BadParameter(f"{names} apply to a collection (a folder, or no DATA for the built-in "
                                     f"synthetic one), not to one shape")
        with claim_run(run_dir, resume is not None, force) as files:
            if resume is not None:                   # the run's own options and data, from its last.pt
                recorded = run_options(resume)
                config, sampling = recorded["config"], SamplingConfig(**recorded["sampling"])
                if ctx.get_parameter_source("epochs").name == "COMMANDLINE":
                    config = replace(config, epochs=options["epochs"])
                if data is None and recorded["data_path"]:
                    data = Path(recorded["data_path"])
            else:
                config, sampling = training_records(ctx.params)

            def on_epoch(row) -> None:
                finished.append(row.epoch)
                update(row.epoch)

            with progress_bar("training", total=config.epochs) as update:
                started = time.perf_counter()
                points = load_points(data, sampling, config.seed)
                typer.echo(f"data: {points.source}: {len(points.points):,} points, {points.labels.mean():.1%} "
                           f"inside, box {_fmt(points.bounds_min)} .. {_fmt(points.bounds_max)}", err=True)
                extra = {"sampling": asdict(sampling), "data_path": str(data.resolve()) if data else None}
                result = fit(points, config, files, resume=resume is not None, extra=extra, on_epoch=on_epoch,
                             started=started)
    except KeyboardInterrupt:
        last = run_dir / "last.pt"                   # a signal between writing last.pt and counting its epoch
        kept = bool(finished) or resume is not None or (last.is_file() and last.stat().st_mtime >= began)
        hint = (f"last.pt in {run_dir} holds the last finished epoch: continue with occ-train --resume "
                f"{run_dir}" if kept else "no epoch had finished, so no checkpoint was written")
        if not kept and (run_dir / "collection" / "collection.json").is_file():
            hint += f"; the shapes prepared so far are kept in {run_dir / 'collection'}"
        raise Interrupted(hint) from None
    best = result.best
    typer.echo(f"{len(result.history)} epochs in {result.seconds:.1f} s (stopped: {result.stopped}); best.pt "
               f"from epoch {best.epoch}: "
               f"val loss {best.val_loss:.4f}, val IoU {best.val_iou:.4f}, val accuracy {best.val_accuracy:.4f}")
    written = [f for f in (files.best, files.last, files.metrics, files.plot) if f.exists()]
    typer.echo(f"files: {', '.join(map(str, written))}")


def _train_collection(ctx: typer.Context, given: set[str], data: Path | None, run_dir: Path, resume: Path | None,
                      force: bool, recorded, finished: list[int], distributed: tuple[int, str | None, float]) -> None:
    """A conditional model trained on the collection ``data`` (or resumed from what ``recorded`` says), in this
    process or on ``distributed = (workers, address, gpus per worker)`` Ray Train workers; ``given``: the
    options on the command line."""
    from occnet.runtime.console import progress_bar
    from occnet.runtime.options import make_record
    from occnet.train.conditional import train_conditional

    if resume is not None:
        config, recorded_root = recorded
        if "epochs" in given:
            config = replace(config, epochs=ctx.params["epochs"])
        data = data or recorded_root
    else:
        own = {f.name for f in fields(ConditionalConfig)}
        extra = sorted(given - own - {"data", "out_dir", "force"} - DISTRIBUTED)
        if extra:
            names = ", ".join("--" + name.replace("_", "-") for name in extra)
            raise typer.BadParameter(f"{names} apply to one shape, not to a collection")
        config = make_record(ConditionalConfig, {k: v for k, v in ctx.params.items()
                                                 if k in own and (k not in SHARED or k in given)})
    workers, address, gpus = distributed
    on_ray = workers > 1 or address is not None
    collection = _collection(data, run_dir, config.seed, on_ray, address)
    typer.echo(f"data: {collection.root}: {len(collection.shapes('train')):,} training and "
               f"{len(collection.shapes('val')):,} validation shapes in {len(collection.categories)} classes; "
               f"{config.condition} model, {config.size}", err=True)

    def on_epoch(row) -> None:
        finished.append(row.epoch)
        update(row.epoch)

    if on_ray:
        from occnet.batch.distributed import check_workers, train_distributed

        check_workers(workers, config)
        typer.echo(f"training on {workers} Ray Train workers", err=True)
        history = train_distributed(collection, config, run_dir, workers, address=address, gpus_per_worker=gpus,
                                    resume=resume is not None, force=force)
    else:
        with progress_bar("training", total=config.epochs) as update:
            history = train_conditional(collection, config, run_dir, resume=resume is not None, force=force,
                                        on_epoch=on_epoch)
    best = max(history, key=lambda m: m.val_iou)
    typer.echo(f"{len(history)} epochs ({len(history) * config.steps_per_epoch:,} steps); best.pt from epoch "
               f"{best.epoch}: val IoU {best.val_iou:.4f} at threshold {config.threshold:g}, val loss "
               f"{best.val_loss:.4f}")
    typer.echo(f"files: {', '.join(str(run_dir / name) for name in ('best.pt', 'last.pt', 'metrics.csv', 'loss.png'))}")


def _flags(ctx: typer.Context, names: set[str]) -> str:
    """``--a, --b`` for the options ``names``, in the command's order."""
    return ", ".join("--" + p.name.replace("_", "-") for p in ctx.command.params if p.name in names)


def _is_collection_folder(data: Path | None) -> bool:
    """Whether DATA names a collection: a folder, unless it is named like a data file (``t.npz``, ``part.stl``:
    one shape's file, refused as a folder on the single-shape path)."""
    from occnet.runtime.settings import MESH_FORMATS

    return data is not None and data.is_dir() and data.suffix.lower() not in (".npz", *MESH_FORMATS)


def _collection(data: Path | None, run_dir: Path, seed: int, on_ray: bool, address: str | None):
    """The collection to train on: ``data`` in ONet's layout as it is; a folder of meshes prepared into
    ``run_dir/collection`` (``on_ray``: as Ray tasks, on the cluster at ``address`` or a private Ray); no data:
    the built-in synthetic collection, made there once."""
    from occnet.runtime.collection import Collection, in_onet_layout
    from occnet.runtime.console import progress_bar
    from occnet.train.collection import DEMO_PER_CLASS, prepare_meshes, synthetic_collection

    if data is not None and in_onet_layout(data):
        return Collection(data)
    target = run_dir / "collection"
    with progress_bar("preparing shapes") as update:
        if data is None:
            return synthetic_collection(target, DEMO_PER_CLASS, seed=0, progress=lambda done, total: update(done))
        mapper = None
        if on_ray:
            from occnet.batch.prepare import ray_mapper

            mapper = ray_mapper(address)
        return prepare_meshes(data, target, seed, mapper, lambda done, total: update(done))


def _fmt(v) -> str:
    return "(" + ", ".join(f"{x:.3g}" for x in v) + ")"


def train_main(argv: list[str] | None = None) -> None:
    """Entry point: needs PyTorch (the ``[train]`` extra); says so in one line if it is missing."""
    run_app(train_app, "occ-train", argv, extra="train", needs=("torch",))
