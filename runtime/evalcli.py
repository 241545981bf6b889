"""``occ-eval``: a mesh against a reference mesh, or a model against labelled points (torch-free)."""

from __future__ import annotations

import importlib.util
import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from occnet.runtime.console import run_app
from occnet.runtime.errors import InputError

eval_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
Baseline = Enum("Baseline", {name: name for name in ("hull", "poisson")}, type=str)


@eval_app.command()
def occ_eval(
    first: Annotated[Path, typer.Argument(help="A mesh, or an occnet ONNX model.")],
    second: Annotated[Path, typer.Argument(help="The reference mesh; labelled points (.npz) for a model; a "
                      "collection in ONet's layout (a folder) for a conditional model.")],
    split: Annotated[str, typer.Option(help="Collection mode: the split whose shapes are reconstructed.")]
    = "test",
    resolution: Annotated[int, typer.Option(help="Collection mode: grid of each reconstruction.")] = 128,
    baseline: Annotated[Optional[list[Baseline]], typer.Option(
        help="Collection mode: a baseline reconstructed from the same observation (repeat for several; default: "
             "the convex hull, and screened Poisson of point clouds where pymeshlab is installed).")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Collection mode: also draw the scores to this PNG "
                                                 "(needs matplotlib).")] = None,
    tau: Annotated[Optional[list[float]], typer.Option(help="Extra F-score threshold(s), x longest side; "
                                                       "F-score at 0.01 is always reported.")] = None,
    samples: Annotated[int, typer.Option(help="Surface samples per mesh (ONet: 100000).")] = 100_000,
    iou_samples: Annotated[int, typer.Option(help="Uniform samples for volumetric IoU.")] = 100_000,
    threshold: Annotated[float, typer.Option(help="Model mode: occupancy probability of 'inside'.")] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed for the samples: same seed, same figures.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Chamfer-L1, normal consistency, F-score and IoU of MESH against REFERENCE (ONet's metrics); IoU and
    accuracy of MODEL.onnx on labelled POINTS.npz; or a conditional MODEL.onnx on a COLLECTION's shapes, each
    reconstructed from an observation, beside baselines given the same observation."""
    from occnet.runtime.evaluate import compare_meshes, evaluate_model
    from occnet.runtime.inside import MAX_AMBIGUOUS
    from occnet.runtime.meshio import mesh_format, read_mesh
    from occnet.runtime.points import load_npz
    from occnet.runtime.session import OccupancyModel

    if first.suffix.lower() == ".onnx" and second.is_dir():
        _score_collection(first, second, split, resolution, samples, seed, baseline, plot, as_json)
        return
    if baseline or plot:
        raise InputError("--baseline and --plot score a conditional model on a collection (a folder)")
    if first.suffix.lower() == ".onnx":
        if second.suffix.lower() != ".npz":
            raise InputError(f"a model is evaluated on labelled points (.npz), not {second.name}")
        result = evaluate_model(OccupancyModel(first, device="auto"), load_npz(second, for_training=False),
                                threshold)
        text = f"{first.name} on {result.points:,} points of {second.name}: IoU {result.iou:.4f}, " \
               f"accuracy {result.accuracy:.4f}"
    else:
        for path in (first, second):
            mesh_format(path)
        result = compare_meshes(read_mesh(first), read_mesh(second), samples, (0.01, *(tau or [])),
                                iou_samples, seed)
        fscores = ", ".join(f"F@{t:g} {v:.4f}" for t, v in result.fscore.items())
        iou = f"IoU {result.iou:.4f}" if result.iou is not None else \
            f"IoU n/a (a mesh leaves over {MAX_AMBIGUOUS:.0%} of the points without a clear side)"
        text = f"{first.name} vs {second.name}: Chamfer-L1 {result.chamfer_l1:.5f}, normal consistency " \
               f"{result.normal_consistency:.4f}, {fscores}, {iou}"
    for note in result.notes:
        typer.echo(f"warning: {note}", err=True)
    typer.echo(json.dumps(result.to_dict()) if as_json else text)


def _score_collection(model_path: Path, root: Path, split: str, resolution: int, samples: int, seed: int,
                      baselines: list | None, plot: Path | None, as_json: bool) -> None:
    from occnet.runtime.collection import Collection
    from occnet.runtime.console import progress_bar
    from occnet.runtime.files import check_output
    from occnet.runtime.plot import plot_collection_scores
    from occnet.runtime.reconstruction import FIGURES, default_baselines, score_collection
    from occnet.runtime.session import OccupancyModel
    from occnet.runtime.settings import MeshSettings

    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise InputError(f"--plot writes a PNG; name a .png file, not {plot.name}")
        if importlib.util.find_spec("matplotlib") is None:
            raise InputError("--plot needs matplotlib: pip install 'occnet[bench]'")
        check_output(plot, [model_path])
    collection = Collection(root)
    model = OccupancyModel(model_path, device="auto")
    observation = model.info.condition.observation if model.info.condition else ""
    chosen = tuple(dict.fromkeys(b.value for b in baselines)) if baselines else default_baselines(observation)
    if not baselines and observation == "pointcloud" and "poisson" not in chosen:
        typer.echo("note: screened Poisson left out (pymeshlab is not installed: pip install 'occnet[bench]')",
                   err=True)
    with progress_bar("reconstructing") as update:
        scores = score_collection(model, collection, split, MeshSettings(resolution=resolution), samples, seed,
                                  chosen, lambda done, total: update(done))
    shapes = len(scores.rows) // (1 + len(chosen))
    if plot is not None:
        plot_collection_scores(scores, f"{model_path.name}, {split} split of {root.name} ({shapes} shapes)", plot)
    if as_json:
        typer.echo(json.dumps(scores.to_dict()))
        return
    summary = scores.summary()
    names = {"iou": "IoU", "chamfer_l1": "Chamfer-L1", "normal_consistency": "normal consistency",
             "f_score": "F@1%"}
    described = {"hull": "hull: the convex hull of the same observation",
                 "poisson": "poisson: screened Poisson of the same cloud, normals estimated"}
    typer.echo(f"{model_path.name} on the {split} split of {root} ({shapes} shapes; "
               + "; ".join(described[name] for name in chosen) + ")")
    typer.echo("| class | method | " + " | ".join(names[f] for f in FIGURES) + " |")
    typer.echo("|---|---|" + "---|" * len(FIGURES))
    for category in [*summary["model"]["classes"], "all"]:
        for method, part in summary.items():
            figures = part["all"] if category == "all" else part["classes"][category]
            cells = " | ".join("-" if figures[f] is None else f"{figures[f]:.4f}" for f in FIGURES)
            typer.echo(f"| {category} | {method} | {cells} |")
    if summary["model"]["empty"]:
        typer.echo(f"warning: {summary['model']['empty']} reconstructions had no surface (IoU 0, no surface "
                   "figures)", err=True)


def eval_main(argv: list[str] | None = None) -> None:
    run_app(eval_app, "occ-eval", argv)
