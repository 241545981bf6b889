"""``occ-mesh``: an occnet ONNX model to a mesh file, without PyTorch.

Only typer and the settings record are imported up front, so ``--help`` answers at once; onnxruntime,
scikit-image and trimesh load when there is work to do.
"""

from __future__ import annotations

import gc
import json
import os
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from occnet.runtime.console import Device, progress_bar, run_app
from occnet.runtime.errors import OutputError
from occnet.runtime.options import make_record, with_options
from occnet.runtime.settings import MESH_FORMATS, MeshSettings

if TYPE_CHECKING:
    from occnet.runtime.mesher import MeshStats

MeshFormat = Enum("MeshFormat", {name: name for name in MESH_FORMATS.values()}, type=str)

mesh_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@mesh_app.command()
@with_options(MeshSettings)
def occ_mesh(
    ctx: typer.Context,
    models: Annotated[list[Path], typer.Argument(help="occnet ONNX model(s) (from occ-export).")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Mesh file (one model only); the "
                      "suffix picks .ply .obj .stl .glb .off. Default: the model's name with --format.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option(help="Folder for the meshes, each at its model's path "
                       "relative to the models' common folder (runs/a/model.onnx -> DIR/a/model.ply).")] = None,
    file_format: Annotated[MeshFormat, typer.Option("--format", help="Mesh format where no --output names "
                           "the file.")] = MeshFormat.ply,
    device: Annotated[Device, typer.Option(help="auto uses CUDA when onnxruntime has it.")] = Device.auto,
    threads: Annotated[int, typer.Option(help="onnxruntime intra-op threads, at most the cores this "
                       "process may use; 0: all of them.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object of figures per model.")] = False,
    **options,
) -> None:
    """Mesh the surface of occupancy networks: grid inference with onnxruntime, then marching cubes; several
    models are meshed one after another (one session at a time), a failed one does not stop the others."""
    from occnet.runtime.errors import OccNetError
    from occnet.runtime.meshio import check_mesh_output

    settings = make_record(MeshSettings, ctx.params)
    if output is not None and (len(models) > 1 or out_dir is not None):
        raise typer.BadParameter("--output names one mesh file: give one model and no --out-dir")
    outputs = mesh_outputs(models, output, out_dir, "." + file_format.value)
    if len(set(outputs)) < len(outputs):
        raise typer.BadParameter("two models would write the same mesh file; give each model once")
    # folders under --out-dir are made as meshes arrive (nothing in them to check yet); any other must exist
    replaces = [check_mesh_output(path, models) if out_dir is None or path.parent.is_dir() else False
                for path in outputs]
    failed = 0
    for model, path, replaced in zip(models, outputs, replaces):
        try:
            stats = _mesh_one(model, path, settings, device.value, threads)
        except OccNetError as exc:
            if len(models) == 1:
                raise
            failed += 1
            typer.echo(f"occ-mesh: error: {model}: {' '.join(str(exc).split())}", err=True)
            continue
        finally:
            gc.collect()          # a trimesh holds reference cycles: free the last mesh before the next model
        if replaced:
            typer.echo(f"note: replaced the existing {path}", err=True)
        if as_json:
            typer.echo(json.dumps({**stats.to_dict(), "model": str(model), "output": str(path)}))
        else:
            typer.echo(f"{path}: {stats.vertices:,} vertices, {stats.faces:,} faces, "
                       f"{'watertight' if stats.watertight else 'NOT watertight'}; {stats.method} "
                       f"{stats.resolution} on {stats.provider}: {stats.points_evaluated:,} points, "
                       f"{stats.seconds_inference:.2f} s inference + {stats.seconds_marching_cubes:.2f} s "
                       f"marching cubes = {stats.seconds_total:.2f} s")
    if failed:
        raise OccNetError(f"{failed} of {len(models)} models failed (see above); the other meshes were written")


def mesh_outputs(models: list[Path], output: Path | None, out_dir: Path | None, suffix: str) -> list[Path]:
    """Where each model's mesh goes: ``output``; else under ``out_dir`` at the model's path relative to the
    models' common folder; else beside the model."""
    if output is not None:
        return [output]
    if out_dir is None:
        return [model.with_suffix(suffix) for model in models]
    absolute = [model.resolve() for model in models]
    common = Path(os.path.commonpath([m.parent for m in absolute]))
    return [out_dir / m.relative_to(common).with_suffix(suffix) for m in absolute]


def _mesh_one(model: Path, output: Path, settings: MeshSettings, device: str, threads: int) -> MeshStats:
    """Mesh one model into ``output`` (its folder created if need be), one onnxruntime session at a time."""
    from occnet.runtime.mesher import mesh_model
    from occnet.runtime.meshio import check_mesh_output, write_mesh
    from occnet.runtime.session import OccupancyModel

    session = OccupancyModel(model, device, threads)
    if session.fallback:
        typer.echo(f"note: {session.fallback}", err=True)
    with progress_bar(f"evaluating {model.name}") as update:
        mesh, stats = mesh_model(session, settings, update)
    if not output.parent.is_dir():
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create folder {output.parent}: {exc.strerror}") from None
        check_mesh_output(output, [model])
    write_mesh(mesh, output)
    return stats


def mesh_main(argv: list[str] | None = None) -> None:
    run_app(mesh_app, "occ-mesh", argv)
