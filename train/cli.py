"""``occ-train``: fit an occupancy network to labelled points, a mesh, or the built-in demo shape."""

from __future__ import annotations

from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from occnet.runtime.console import Device, fail, run_app

train_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


class Encoding(str, Enum):
    none = "none"
    fourier = "fourier"


@train_app.command()
def occ_train(
    data: Annotated[Optional[Path], typer.Argument(help=".npz points+occupancies, a mesh (.obj .ply .stl "
                    ".off .glb), or nothing for the built-in demo shape.")] = None,
    out_dir: Annotated[Path, typer.Option(help="Folder for best.pt, last.pt, metrics.csv, loss.png.")]
    = Path("."),
    epochs: Annotated[int, typer.Option(help="Passes over the training points.")] = 60,
    batch_size: Annotated[int, typer.Option(help="Points per optimiser step.")] = 1024,
    lr: Annotated[float, typer.Option(help="Peak learning rate (warm-up, then cosine decay).")] = 3e-3,
    hidden_size: Annotated[int, typer.Option(help="Width of the hidden layers.")] = 64,
    hidden_layers: Annotated[int, typer.Option(help="Hidden layers after the input layer.")] = 4,
    encoding: Annotated[Encoding, typer.Option(help="Input encoding: none, or fourier features.")]
    = Encoding.none,
    fourier_features: Annotated[int, typer.Option(help="fourier: number of random frequencies.")] = 32,
    fourier_scale: Annotated[float, typer.Option(help="fourier: frequency spread (cycles per box).")] = 2.0,
    val_fraction: Annotated[float, typer.Option(help="Share of points held out for validation.")] = 0.2,
    num_points: Annotated[int, typer.Option(help="Points to sample from a mesh or the demo.")] = 100_000,
    near_fraction: Annotated[float, typer.Option(help="Share of sampled points drawn near the surface.")]
    = 0.5,
    near_sigma: Annotated[float, typer.Option(help="Spread of near-surface points, x longest side.")] = 0.01,
    seed: Annotated[int, typer.Option(help="Seed for sampling, split, initialisation and shuffling.")] = 0,
    device: Annotated[Device, typer.Option(help="auto uses CUDA when PyTorch sees a GPU.")] = Device.auto,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this folder from last.pt, "
                      "with the options and data it recorded.")]
    = None,
    force: Annotated[bool, typer.Option(help="Replace a previous run in --out-dir.")] = False,
) -> None:
    """Train an occupancy network and keep the checkpoint with the best validation loss."""
    from occnet.runtime.console import progress_bar
    from occnet.train.sampling import SamplingConfig, load_points
    from occnet.train.trainer import TrainConfig, prepare_run, run_options, train

    run_dir = resume if resume is not None else out_dir
    prepare_run(run_dir, resume is not None, force)
    if resume is not None:                       # the run's own options and data, from its last.pt
        recorded = run_options(resume)
        config, sampling = recorded["config"], SamplingConfig(**recorded["sampling"])
        if data is None and recorded["data_path"]:
            data = Path(recorded["data_path"])
    else:
        fourier = encoding is Encoding.fourier
        config = TrainConfig(epochs, batch_size, lr, hidden_size, hidden_layers, encoding.value,
                             fourier_features if fourier else 0, fourier_scale if fourier else 0.0,
                             val_fraction, seed, device.value)
        sampling = SamplingConfig(num_points, near_fraction, near_sigma)
    points = load_points(data, sampling, config.seed)
    typer.echo(f"data: {points.source}: {len(points.points):,} points, {points.labels.mean():.1%} inside, "
               f"box {_fmt(points.bounds_min)} .. {_fmt(points.bounds_max)}", err=True)
    with progress_bar("training", total=config.epochs) as update:
        def show(row) -> None:
            update(row.epoch)

        try:
            extra = {"sampling": asdict(sampling), "data_path": str(data.resolve()) if data else None}
            result = train(points, config, run_dir, resume=resume is not None, force=force, extra=extra,
                           on_epoch=show)
        except KeyboardInterrupt:
            fail("occ-train", f"interrupted; last.pt in {run_dir} holds the last finished epoch: "
                 f"continue with occ-train --resume {run_dir}", 130)
    best = result.best
    typer.echo(f"{len(result.history)} epochs in {result.seconds:.1f} s; best.pt from epoch {best.epoch}: "
               f"val loss {best.val_loss:.4f}, val IoU {best.val_iou:.4f}, val accuracy {best.val_accuracy:.4f}")
    files = result.files
    written = [f for f in (files.best, files.last, files.metrics, files.plot) if f.exists()]
    typer.echo(f"files: {', '.join(map(str, written))}")


def _fmt(v) -> str:
    return "(" + ", ".join(f"{x:.3g}" for x in v) + ")"


def train_main(argv: list[str] | None = None) -> None:
    """Entry point: needs PyTorch (the ``[train]`` extra); says so in one line if it is missing."""
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        fail("occ-train", "PyTorch is not installed; occ-train needs the train extra: pip install 'occnet[train]'")
    run_app(train_app, "occ-train", argv)
