"""One shape's whole pipeline — sample, train, export, mesh, score; or, given a conditional model, reconstruct
an observation — as a function from the source's bytes to the output files' bytes, so that it runs in any
worker without a shared file system: one task of occ-batch."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from occnet.runtime.checks import check_choice, check_instance, check_integer, check_real
from occnet.runtime.errors import OccNetError, first_line
from occnet.runtime.options import option
from occnet.runtime.settings import MESH_FORMATS, MeshSettings
from occnet.train.config import SamplingConfig, TrainConfig

RUN_FILES = ("best.pt", "last.pt", "metrics.csv", "loss.png")
"""What occ-train leaves in a run folder (loss.png where matplotlib is installed)."""
EVAL_FILE = "eval.json"
"""The shape's summary row, written last into its folder."""


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
    normalize: bool = option(False, "With --model: map each point cloud into the model's frame and the mesh "
                             "back, as occ-mesh --normalize.")
    model_sha256: str = ""
    """The digest of the conditional model the sources are reconstructed with ("": each shape is trained)."""

    def __post_init__(self) -> None:
        checked = {"train": check_instance("train", self.train, TrainConfig),
                   "sampling": check_instance("sampling", self.sampling, SamplingConfig),
                   "mesh": check_instance("mesh", self.mesh, MeshSettings),
                   "mesh_format": check_choice("mesh format", self.mesh_format, tuple(MESH_FORMATS.values())),
                   "eval_samples": check_integer("eval samples", self.eval_samples, 1),
                   "threads_per_shape": check_integer("threads per shape", self.threads_per_shape, 1),
                   "gpus_per_shape": check_real("gpus per shape", self.gpus_per_shape, at_least=0),
                   "normalize": check_instance("normalize", self.normalize, bool),
                   "model_sha256": check_instance("model sha256", self.model_sha256, str)}
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        if self.train.threads != self.threads_per_shape:   # a task trains on the threads it was given
            object.__setattr__(self, "train", replace(self.train, threads=self.threads_per_shape))

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The pipeline: :data:`STAGES` for shapes to learn, :data:`RECONSTRUCT_STAGES` with a model."""
        return RECONSTRUCT_STAGES if self.model_sha256 else STAGES

    @property
    def outputs(self) -> tuple[str, ...]:
        """The files a finished shape has in its folder: each stage's, then ``eval.json`` (written last, by the
        driver: it marks the folder complete)."""
        return (*(name for stage in self.stages for name in stage.outputs(self)), EVAL_FILE)

    def fingerprint(self) -> str:
        """A digest of what decides a shape's outputs, each stage's settings (not the resources its task gets):
        a rerun with the same fingerprint and the same input reuses the outputs."""
        record = {key: value for stage in self.stages for key, value in stage.settings(self).items()}
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


@dataclass
class Work:
    """What a shape's stages hand each other inside its task: the source in a temporary ``folder``, then the
    labelled points, the training run, the exported model, the mesh; ``scores`` and ``files`` (name -> path)
    gather what the stages give the summary and the shape's folder."""

    name: str
    settings: BatchSettings
    folder: Path
    source: Path
    scores: dict[str, float | int | bool | None] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    points: Any = None
    run: Any = None
    model: Any = None
    mesh: Any = None
    model_path: Path | None = None


def _train(work: Work) -> None:
    """Sample and label the source, train; the run's files."""
    from occnet.train.sampling import load_points
    from occnet.train.trainer import train

    started = time.perf_counter()                # a --time-budget counts sampling, as in occ-train
    work.points = load_points(work.source, work.settings.sampling, work.settings.train.seed)
    work.run = train(work.points, work.settings.train, work.folder / "run", started=started, extra={
        "sampling": asdict(work.settings.sampling), "data_path": work.name})
    work.scores.update(val_iou=work.run.best.val_iou, epochs=len(work.run.history))
    work.files.update({name: work.folder / "run" / name for name in RUN_FILES})


def _export(work: Work) -> None:
    """best.pt to model.onnx, verified against PyTorch."""
    from occnet.export.onnx_export import export_checkpoint

    export_checkpoint(work.folder / "run" / "best.pt", work.folder / "model.onnx")
    work.files["model.onnx"] = work.folder / "model.onnx"


def _mesh(work: Work) -> None:
    """The exported model meshed by onnxruntime, as occ-mesh meshes it."""
    from occnet.runtime.mesher import mesh_model
    from occnet.runtime.meshio import write_mesh
    from occnet.runtime.session import OccupancyModel

    work.model = OccupancyModel(work.folder / "model.onnx", work.settings.train.device,
                                work.settings.threads_per_shape)
    work.mesh, stats = mesh_model(work.model, work.settings.mesh)
    path = work.folder / f"mesh.{work.settings.mesh_format}"
    write_mesh(work.mesh, path)
    work.scores.update(faces=stats.faces, watertight=stats.watertight)
    work.files[path.name] = path


def _eval(work: Work) -> None:
    """A mesh input: the mesh against it, as occ-eval scores; labelled points: the exported model on exactly
    the points training held out."""
    from occnet.runtime.evaluate import compare_meshes, evaluate_model
    from occnet.runtime.meshio import read_mesh

    if work.source.suffix == ".npz":
        held_out = work.run.held_out
        on_points = evaluate_model(work.model, replace(work.points, points=work.points.points[held_out],
                                                       labels=work.points.labels[held_out]))
        work.scores.update(iou=on_points.iou, accuracy=on_points.accuracy)
    else:
        on_mesh = compare_meshes(work.mesh, read_mesh(work.source), work.settings.eval_samples)
        work.scores.update(chamfer_l1=on_mesh.chamfer_l1, normal_consistency=on_mesh.normal_consistency,
                           f_score=on_mesh.fscore[0.01], iou=on_mesh.iou)


def _reconstruct(work: Work) -> None:
    """The observation reconstructed by the batch's conditional model, as occ-mesh --input does."""
    from occnet.runtime.mesher import mesh_model
    from occnet.runtime.meshio import write_mesh
    from occnet.runtime.observation import Frame, load_observation, normalizing_frame
    from occnet.runtime.session import OccupancyModel

    model = OccupancyModel(work.model_path, work.settings.train.device, work.settings.threads_per_shape)
    observation, frame = load_observation(work.source), Frame()
    if work.settings.normalize and observation.ndim == 2:
        frame = normalizing_frame(observation)
        observation = frame.into(observation)
    work.mesh, stats = mesh_model(model.given(observation), work.settings.mesh)
    work.mesh.vertices = frame.back(work.mesh.vertices)
    path = work.folder / f"mesh.{work.settings.mesh_format}"
    write_mesh(work.mesh, path)
    work.scores.update(faces=stats.faces, watertight=stats.watertight)
    work.files[path.name] = path


@dataclass(frozen=True)
class Stage:
    """One step of a shape's pipeline, declared once: ``run`` does it; ``outputs`` names the files it leaves
    in the shape's folder, ``scores`` the summary columns it fills (``seconds_NAME`` is its time), and
    ``settings`` what of the batch's settings decides its results (the fingerprint). The outputs, the
    summary's columns and the fingerprint are derived from :data:`STAGES`, so a new stage is one entry."""

    name: str
    run: Callable[[Work], None]
    outputs: Callable[[BatchSettings], tuple[str, ...]]
    scores: tuple[str, ...]
    settings: Callable[[BatchSettings], dict]


STAGES: tuple[Stage, ...] = (
    Stage("train", _train, lambda s: RUN_FILES, ("epochs", "val_iou"),
          lambda s: {"train": s.train.to_dict(), "sampling": asdict(s.sampling)}),
    Stage("export", _export, lambda s: ("model.onnx",), (), lambda s: {}),
    Stage("mesh", _mesh, lambda s: (f"mesh.{s.mesh_format}",), ("faces", "watertight"),
          lambda s: {"mesh": asdict(s.mesh), "mesh_format": s.mesh_format}),
    Stage("eval", _eval, lambda s: (), ("chamfer_l1", "normal_consistency", "f_score", "iou", "accuracy"),
          lambda s: {"eval_samples": s.eval_samples}),
)
"""A shape's stages, in order; ``train`` includes sampling and labelling the source."""
RECONSTRUCT_STAGES: tuple[Stage, ...] = (
    Stage("reconstruct", _reconstruct, lambda s: (f"mesh.{s.mesh_format}",), ("faces", "watertight"),
          lambda s: {"model": s.model_sha256, "normalize": s.normalize, "mesh": asdict(s.mesh),
                     "mesh_format": s.mesh_format}),
)
"""An observation's stages when a conditional model reconstructs the sources."""
ALL_STAGES = (*STAGES, *RECONSTRUCT_STAGES)
"""Every stage a batch may run: the summary's columns come from these."""


def run_shape(name: str, suffix: str, data: bytes, settings: BatchSettings, model: bytes = b"") -> ShapeResult:
    """Run every stage of ``settings.stages`` on one shape given as its source's bytes (``suffix``: ``.npz``
    or a mesh suffix; an observation's, with the conditional ``model``'s bytes). A failure of the shape (bad
    file, diverged training, no surface, any error of a stage) becomes the result's ``error``, naming the
    stage; nothing escapes but an interruption."""
    began = time.time()
    import torch

    torch.set_num_threads(settings.threads_per_shape)
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="occnet-shape-") as tmp:
        work = Work(name, settings, Path(tmp), Path(tmp) / f"input{suffix}")
        work.source.write_bytes(data)
        if model:
            work.model_path = Path(tmp) / "model.onnx"
            work.model_path.write_bytes(model)
        for stage in settings.stages:
            start = time.perf_counter()
            try:
                stage.run(work)
            except Exception as exc:             # the shape's failure is its row of the summary, not the batch's end
                kind = "" if isinstance(exc, OccNetError) else f"{type(exc).__name__}: "
                message = first_line(exc).replace(str(work.source), name)   # the shape's name, not a temporary path
                return ShapeResult(name, f"{stage.name}: {kind}{message}", seconds, work.scores, {}, began)
            seconds[stage.name] = round(time.perf_counter() - start, 3)
        undeclared = set(work.scores) - {column for stage in settings.stages for column in stage.scores}
        if undeclared:                           # a score no column holds would be lost from the summary
            raise RuntimeError(f"stages gave scores no stage declares: {sorted(undeclared)}")
        files = {file_name: path.read_bytes() for file_name, path in work.files.items() if path.is_file()}
    return ShapeResult(name, "", seconds, work.scores, files, began)
