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
    models: Annotated[list[Path], typer.Argument(help="occnet ONNX model(s) (from occ-export); with --input, "
                      "one model, and paths that are not .onnx are more observations (as a shell expands "
                      "--input scans/*.ply).")],
    inputs: Annotated[Optional[list[Path]], typer.Option("--input", "-i", help="Observation to reconstruct with "
                      "a conditional model: a point cloud (.ply .obj .xyz .npz 'points') or voxels (.binvox, "
                      ".npz/.npy 'voxels'), in the model's frame unless --normalize.")] = None,
    normalize: Annotated[bool, typer.Option(help="Map each point cloud into the model's frame (its box centred, "
                         "longest side 1, as ONet's data) and the mesh back to the cloud's coordinates.")] = False,
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
    if inputs:
        inputs = inputs + [path for path in models[1:] if path.suffix.lower() != ".onnx"]
        models = [models[0], *(path for path in models[1:] if path.suffix.lower() == ".onnx")]
        if len(models) > 1:
            raise typer.BadParameter("--input reconstructs observations with one model; give one .onnx")
    elif normalize:
        raise typer.BadParameter("--normalize maps observations (--input) into the model's frame; give --input")
    sources = inputs or models
    if output is not None and (len(sources) > 1 or out_dir is not None):
        raise typer.BadParameter(f"--output names one mesh file: give one {'observation' if inputs else 'model'} "
                                 "and no --out-dir")
    outputs = mesh_outputs(sources, output, out_dir, "." + file_format.value, bool(inputs))
    if len(set(outputs)) < len(outputs):
        what = "observations" if inputs else "models"
        raise typer.BadParameter(f"two {what} would write the same mesh file; give each {what[:-1]} once")
    # folders under --out-dir are made as meshes arrive (nothing in them to check yet); any other must exist
    replaces = [check_mesh_output(path, [*models, *sources]) if out_dir is None or path.parent.is_dir() else False
                for path in outputs]
    jobs = _observation_jobs(_load(models[0], device.value, threads), inputs, normalize) if inputs else \
        _model_jobs(models, device.value, threads)
    failed = 0
    for (source, job), path, replaced in zip(zip(sources, jobs), outputs, replaces):
        try:
            stats = _mesh_one(job, source, path, settings)
        except OccNetError as exc:
            if len(sources) == 1:
                raise
            failed += 1
            typer.echo(f"occ-mesh: error: {source}: {' '.join(str(exc).split())}", err=True)
            continue
        finally:
            gc.collect()          # a trimesh holds reference cycles: free the last mesh before the next one
        if replaced:
            typer.echo(f"note: replaced the existing {path}", err=True)
        if as_json:
            typer.echo(json.dumps({**stats.to_dict(), "model": str(models[0] if inputs else source),
                                   **({"input": str(source)} if inputs else {}), "output": str(path)}))
        else:
            typer.echo(f"{path}: {stats.vertices:,} vertices, {stats.faces:,} faces, "
                       f"{'watertight' if stats.watertight else 'NOT watertight'}; {stats.method} "
                       f"{stats.resolution} on {stats.provider}: {stats.points_evaluated:,} points, "
                       f"{stats.seconds_inference:.2f} s inference + {stats.seconds_marching_cubes:.2f} s "
                       f"marching cubes = {stats.seconds_total:.2f} s")
    if failed:
        raise OccNetError(f"{failed} of {len(sources)} {'observations' if inputs else 'models'} failed (see "
                          "above); the other meshes were written")


def mesh_outputs(sources: list[Path], output: Path | None, out_dir: Path | None, suffix: str,
                 observations: bool = False) -> list[Path]:
    """Where each source's mesh goes: ``output``; else under ``out_dir`` at the source's path relative to the
    sources' common folder; else beside the source (an observation's as ``NAME_mesh``, not to replace a
    ``.ply`` cloud by its mesh)."""
    if output is not None:
        return [output]
    if out_dir is None:
        return [source.with_name(source.stem + ("_mesh" if observations else "") + suffix) for source in sources]
    absolute = [source.resolve() for source in sources]
    common = Path(os.path.commonpath([s.parent for s in absolute]))
    return [out_dir / s.relative_to(common).with_suffix(suffix) for s in absolute]


def _model_jobs(models: list[Path], device: str, threads: int):
    """Per model: a function loading it (one onnxruntime session at a time), for :func:`_mesh_one`."""
    for model in models:
        yield lambda model=model: (_load(model, device, threads), None)


def _observation_jobs(session, inputs: list[Path], normalize: bool):
    """Per observation: a function encoding it with the conditional model ``session`` (loaded once), and the
    frame its mesh goes back through."""
    from occnet.runtime.errors import InputError
    from occnet.runtime.observation import Frame, load_observation, normalizing_frame

    if session.info.condition is None:
        raise InputError(f"{session.path} is not a conditional model: it holds one shape and takes no --input")

    def job(path: Path):
        observation = load_observation(path)
        frame = Frame()
        if normalize:
            if observation.ndim != 2:
                raise InputError(f"{path}: --normalize maps point clouds; a voxel grid has the model's frame")
            frame = normalizing_frame(observation)
            observation = frame.into(observation)
        try:
            return session.given(observation), frame
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None

    for path in inputs:
        yield lambda path=path: job(path)


def _load(model: Path, device: str, threads: int):
    from occnet.runtime.session import OccupancyModel

    session = OccupancyModel(model, device, threads)
    if session.fallback:
        typer.echo(f"note: {session.fallback}", err=True)
    return session


def _mesh_one(job, source: Path, output: Path, settings: MeshSettings) -> MeshStats:
    """Mesh what ``job()`` gives (a model, or a model given an observation, and the frame its mesh is mapped
    back through) into ``output`` (its folder created if need be)."""
    from occnet.runtime.mesher import mesh_model
    from occnet.runtime.meshio import check_mesh_output, write_mesh

    model, frame = job()
    with progress_bar(f"evaluating {source.name}") as update:
        mesh, stats = mesh_model(model, settings, update)
    if frame is not None:
        mesh.vertices = frame.back(mesh.vertices)
    if not output.parent.is_dir():
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create folder {output.parent}: {exc.strerror}") from None
        check_mesh_output(output, [source])
    write_mesh(mesh, output)
    return stats


def mesh_main(argv: list[str] | None = None) -> None:
    run_app(mesh_app, "occ-mesh", argv)
