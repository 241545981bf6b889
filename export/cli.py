"""``occ-export``: a training checkpoint to a verified, self-describing ONNX model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from occnet.runtime.console import run_app

export_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@export_app.command()
def occ_export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint from occ-train (best.pt), or ONet's "
                          "(model_best.pt: its point-cloud or voxel model).")],
    output: Annotated[Path, typer.Argument(help="ONNX file to write.")],
    config: Annotated[Optional[Path], typer.Option(help="ONet's YAML config of the checkpoint (checked against "
                      "its weights; gives the threshold and the cloud's size).")] = None,
    opset: Annotated[Optional[int], typer.Option(help="ONNX opset; default: the exporter's.")] = None,
    verify: Annotated[bool, typer.Option(help="Check onnxruntime against the network in float64 (as good as "
                      "PyTorch float32, same inside/outside).")]
    = True,
) -> None:
    """Export a checkpoint to ONNX with its bounds, architecture and metrics as metadata."""
    from occnet.export.exporter import ERROR_FACTOR
    from occnet.export.onnx_export import export_checkpoint

    report = export_checkpoint(checkpoint, output, opset, verify, config=config)
    if report.replaced:
        typer.echo(f"note: replaced the existing {output}", err=True)
    if report.warning:
        typer.echo(f"warning: {report.warning}", err=True)
    a = report.agreement
    check = (f"against the network in float64 on {a.points:,} points: onnxruntime error {a.onnx_error:.2e}, "
             f"PyTorch float32 error {a.torch_error:.2e} (limit {ERROR_FACTOR:g}x), max |onnxruntime - "
             f"PyTorch| {a.max_abs_diff:.2e}, inside/outside agree" if a else "not verified (--no-verify)")
    typer.echo(f"wrote {report.path}: {report.size_bytes / 1024:.1f} KiB, opset {report.opset}; {check}")


def export_main(argv: list[str] | None = None) -> None:
    """Entry point: needs PyTorch and onnx (the ``[train]`` extra); says so in one line if missing."""
    run_app(export_app, "occ-export", argv, extra="train", needs=("torch", "onnx"))
