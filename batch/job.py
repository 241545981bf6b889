"""One shape's whole pipeline — sample, train, export, mesh, score — as a function from the source's bytes to
the output files' bytes, so that it runs in any worker without a shared file system: one task of occ-batch."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from occnet.runtime.checks import check_choice, check_instance, check_integer, check_real
from occnet.runtime.errors import OccNetError, first_line
from occnet.runtime.options import option
from occnet.runtime.settings import MESH_FORMATS, MeshSettings
from occnet.train.config import SamplingConfig, TrainConfig

RUN_FILES = ("best.pt", "last.pt", "metrics.csv", "loss.png")
"""What occ-train leaves in a run folder (loss.png where matplotlib is installed)."""
STAGES = ("train", "export", "mesh", "eval")
"""A shape's stages, in order; ``train`` includes sampling and labelling the source."""


@dataclass(frozen=True)
class BatchSettings:
    """Everything a batch does to each shape: the single-shape commands' options, the mesh format, how many
    surface samples score a mesh, and what each task gets of the cluster (threads for torch and onnxruntime,
    a share of a GPU)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    mesh: MeshSettings = field(default_factory=MeshSettings)
    mesh_format: str = option("ply", "Mesh format of each shape's mesh.", choices=tuple(MESH_FORMATS.values()),
                              flag="--format")
    eval_samples: int = option(100_000, "Surface samples each way scoring a mesh (ONet: 100000).")
    threads_per_shape: int = option(1, "CPU threads of each shape's task (torch and onnxruntime); the cores / "
                                    "this shapes run at once.")
    gpus_per_shape: float = option(0.0, "GPUs of each shape's task (fractions share one).")

    def __post_init__(self) -> None:
        checked = {"train": check_instance("train", self.train, TrainConfig),
                   "sampling": check_instance("sampling", self.sampling, SamplingConfig),
                   "mesh": check_instance("mesh", self.mesh, MeshSettings),
                   "mesh_format": check_choice("mesh format", self.mesh_format, tuple(MESH_FORMATS.values())),
                   "eval_samples": check_integer("eval samples", self.eval_samples, 1),
                   "threads_per_shape": check_integer("threads per shape", self.threads_per_shape, 1),
                   "gpus_per_shape": check_real("gpus per shape", self.gpus_per_shape, at_least=0)}
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        if self.train.threads != self.threads_per_shape:   # a task trains on the threads it was given
            object.__setattr__(self, "train", replace(self.train, threads=self.threads_per_shape))

    @property
    def outputs(self) -> tuple[str, ...]:
        """The files a finished shape has in its folder, ``eval.json`` (written last) included."""
        return (*RUN_FILES, "model.onnx", f"mesh.{self.mesh_format}", "eval.json")

    def fingerprint(self) -> str:
        """A digest of what decides a shape's outputs (not the resources its task gets): a rerun with the same
        fingerprint and the same input reuses the outputs."""
        record = {"train": asdict(self.train), "sampling": asdict(self.sampling), "mesh": asdict(self.mesh),
                  "mesh_format": self.mesh_format, "eval_samples": self.eval_samples}
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ShapeResult:
    """What a task sends back: ``error`` is one line naming the failed stage ("" when it worked), ``seconds``
    each finished stage's time, ``scores`` the figures of the summary, ``files`` the outputs by name (none when
    it failed), ``started`` the task's start (``time.time()``, to tell the machinery's time from the stages')."""

    name: str
    error: str
    seconds: dict[str, float]
    scores: dict[str, float | int | bool | None]
    files: dict[str, bytes]
    started: float

    @property
    def ok(self) -> bool:
        return not self.error


def run_shape(name: str, suffix: str, data: bytes, settings: BatchSettings) -> ShapeResult:
    """Train, export, mesh and score one shape given as its source's bytes (``suffix``: ``.npz`` or a mesh
    suffix). A failure of the shape (bad file, diverged training, no surface, any error of a stage) becomes
    the result's ``error``; nothing escapes but an interruption."""
    began = time.time()
    import torch

    from occnet.export.onnx_export import export_checkpoint
    from occnet.runtime.evaluate import compare_meshes, evaluate_model
    from occnet.runtime.mesher import mesh_model
    from occnet.runtime.meshio import read_mesh, write_mesh
    from occnet.runtime.session import OccupancyModel
    from occnet.train.sampling import load_points
    from occnet.train.trainer import train

    torch.set_num_threads(settings.threads_per_shape)
    seconds: dict[str, float] = {}
    scores: dict[str, float | int | bool | None] = {}
    with tempfile.TemporaryDirectory(prefix="occnet-shape-") as tmp:
        folder = Path(tmp)
        source, run, onnx_path = folder / f"input{suffix}", folder / "run", folder / "model.onnx"
        mesh_path = folder / f"mesh.{settings.mesh_format}"
        source.write_bytes(data)
        clock = _StageClock(seconds)
        try:
            points = load_points(source, settings.sampling, settings.train.seed)
            result = train(points, settings.train, run, started=clock.start,
                           extra={"sampling": asdict(settings.sampling), "data_path": name})
            scores["val_iou"] = result.best.val_iou
            scores["epochs"] = len(result.history)
            clock.lap()
            export_checkpoint(run / "best.pt", onnx_path)
            clock.lap()
            model = OccupancyModel(onnx_path, settings.train.device, settings.threads_per_shape)
            mesh, stats = mesh_model(model, settings.mesh)
            write_mesh(mesh, mesh_path)
            scores.update(faces=stats.faces, watertight=stats.watertight)
            clock.lap()
            if suffix == ".npz":                 # the held-out points: those training's validation used
                on_points = evaluate_model(model, replace(points, points=points.points[result.held_out],
                                                          labels=points.labels[result.held_out]))
                scores.update(iou=on_points.iou, accuracy=on_points.accuracy)
            else:
                on_mesh = compare_meshes(mesh, read_mesh(source), settings.eval_samples)
                scores.update(chamfer_l1=on_mesh.chamfer_l1, normal_consistency=on_mesh.normal_consistency,
                              f_score=on_mesh.fscore[0.01], iou=on_mesh.iou)
            clock.lap()
        except Exception as exc:             # the shape's failure is its row of the summary, not the batch's end
            kind = "" if isinstance(exc, OccNetError) else f"{type(exc).__name__}: "
            message = first_line(exc).replace(str(source), name)          # the shape's name, not a temporary path
            return ShapeResult(name, f"{clock.stage}: {kind}{message}", seconds, scores, {}, began)
        files = {path.name: path.read_bytes() for path in (*[run / f for f in RUN_FILES], onnx_path, mesh_path)
                 if path.is_file()}
    return ShapeResult(name, "", seconds, scores, files, began)


class _StageClock:
    """Times the stages of :data:`STAGES` in order into ``seconds``; ``stage`` is the one running."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds, self.finished, self.start = seconds, 0, time.perf_counter()

    @property
    def stage(self) -> str:
        return STAGES[self.finished]

    def lap(self) -> None:
        """The running stage is done; the next one starts now."""
        now = time.perf_counter()
        self.seconds[self.stage] = round(now - self.start, 3)
        self.finished, self.start = self.finished + 1, now
