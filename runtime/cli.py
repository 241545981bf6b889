"""``occ-mesh``: an occnet ONNX model to a mesh file, without PyTorch.

Only typer and the settings record are imported up front, so ``--help`` answers at once; onnxruntime,
scikit-image and trimesh load when there is work to do.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from occnet.runtime.console import Device, progress_bar, run_app
from occnet.runtime.settings import METHODS, MeshSettings

Method = Enum("Method", {name: name for name in METHODS}, type=str)
DEFAULTS = MeshSettings()

mesh_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@mesh_app.command()
def occ_mesh(
    model: Annotated[Path, typer.Argument(help="occnet ONNX model (from occ-export).")],
    resolution: Annotated[int, typer.Option(help="Grid samples along the box's longest side.")]
    = DEFAULTS.resolution,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Mesh file; the suffix picks "
                      ".ply .obj .stl .glb .off. Default: the model's name with .ply.")] = None,
    method: Annotated[Method, typer.Option(help="adaptive (coarse-to-fine) or dense (every point).")]
    = Method(DEFAULTS.method),
    threshold: Annotated[float, typer.Option(help="Occupancy probability of the surface, in (0, 1).")]
    = DEFAULTS.threshold,
    batch_size: Annotated[int, typer.Option(help="Points per onnxruntime call.")] = DEFAULTS.batch_size,
    device: Annotated[Device, typer.Option(help="auto uses CUDA when onnxruntime has it.")] = Device.auto,
    threads: Annotated[int, typer.Option(help="onnxruntime intra-op threads, at most the core count; "
                       "0: its default.")] = 0,
    largest_only: Annotated[bool, typer.Option(help="Keep only the largest connected component.")]
    = DEFAULTS.largest_only,
    min_faces: Annotated[int, typer.Option(help="Drop components with fewer faces.")] = DEFAULTS.min_faces,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object of figures.")] = False,
) -> None:
    """Mesh the surface of an occupancy network: grid inference with onnxruntime, then marching cubes."""
    from occnet.runtime.mesher import mesh_model
    from occnet.runtime.meshio import check_mesh_output, write_mesh
    from occnet.runtime.session import OccupancyModel

    settings = MeshSettings(resolution=resolution, method=method.value, threshold=threshold,
                            batch_size=batch_size, largest_only=largest_only, min_faces=min_faces)
    output = output if output is not None else model.with_suffix(".ply")
    replaces = check_mesh_output(output, [model])
    session = OccupancyModel(model, device.value, threads)
    if session.fallback:
        typer.echo(f"note: {session.fallback}", err=True)
    with progress_bar("evaluating") as update:
        mesh, stats = mesh_model(session, settings, update)
    write_mesh(mesh, output)
    if replaces:
        typer.echo(f"note: replaced the existing {output}", err=True)
    if as_json:
        typer.echo(json.dumps({**stats.to_dict(), "output": str(output)}))
    else:
        typer.echo(f"{output}: {stats.vertices:,} vertices, {stats.faces:,} faces, "
                   f"{'watertight' if stats.watertight else 'NOT watertight'}; {stats.method} "
                   f"{stats.resolution} on {stats.provider}: {stats.points_evaluated:,} points, "
                   f"{stats.seconds_inference:.2f} s inference + {stats.seconds_marching_cubes:.2f} s "
                   f"marching cubes = {stats.seconds_total:.2f} s")


def mesh_main(argv: list[str] | None = None) -> None:
    run_app(mesh_app, "occ-mesh", argv)
