"""Training a conditional occupancy network f(p, x) on a collection, ONet's recipe, read top to bottom.

Each step draws ``batch_shapes`` training shapes; each gives ``points_per_shape`` query points with their
occupancies and a fresh observation: ``cloud_points`` of its surface points with Gaussian noise
``cloud_noise`` (ONet: 300 and 0.005), or its 32³ grid. BCE on the logits, Adam. Every epoch
(``steps_per_epoch`` steps) the model is scored on the validation shapes — fixed observations and points,
drawn once by the seed — by the mean IoU at ``threshold``, and ``best.pt`` keeps the best, as ONet selects
its models. Checkpoints are ONet's (``model``, ``optimizer``, ``epoch_it``, ``it``, ``loss_val_best``) with an
``occnet`` entry for what ONet keeps in its config (the sizes, threshold, cloud size, this record), so
``occ-export best.pt`` takes them as it takes ONet's.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from occnet.runtime.checks import check_choice, check_integer, check_real
from occnet.runtime.files import write_bytes_atomic
from occnet.train.collection import Collection, ShapeData
from occnet.train.onet import ConditionalOccNet, OnetArchitecture
from occnet.train.plot import plot_history
from occnet.train.trainer import EpochMetrics, torch_threads, write_metrics

SIZES = {"small": OnetArchitecture("pointnet_resnet", 64, 64, 64), "onet": OnetArchitecture()}
"""Network sizes by name: ``small`` trains on a CPU (about 2 steps a second on one core); ``onet`` is ONet's
released model (10.4 M parameters: a GPU's work). The voxel condition takes the voxel encoder at the same
code and decoder sizes."""
KEPT_POINTS = 10_000
"""Query and surface points kept in memory per shape (a seeded subset of ONet's 100,000): 1,000 shapes take
about 250 MB instead of 2.5 GB."""


@dataclass(frozen=True)
class ConditionalConfig:
    """ONet's recipe at a CPU's size by default; see the module's docstring."""

    condition: str = "pointcloud"
    size: str = "small"
    epochs: int = 50
    steps_per_epoch: int = 50
    batch_shapes: int = 16
    points_per_shape: int = 2048
    cloud_points: int = 300
    cloud_noise: float = 0.005
    lr: float = 1e-4
    threshold: float = 0.2
    val_points: int = 4096
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        check_choice("condition", self.condition, ("pointcloud", "voxels"))
        check_choice("size", self.size, tuple(SIZES))
        for name in ("epochs", "steps_per_epoch", "batch_shapes", "points_per_shape", "cloud_points", "val_points",
                     "threads"):
            object.__setattr__(self, name, check_integer(name.replace("_", " "), getattr(self, name), 1))
        object.__setattr__(self, "seed", check_integer("seed", self.seed, 0, 2**63 - 1))
        object.__setattr__(self, "cloud_noise", check_real("cloud noise", self.cloud_noise, at_least=0))
        object.__setattr__(self, "lr", check_real("learning rate", self.lr, above=0))
        object.__setattr__(self, "threshold", check_real("threshold", self.threshold, above=0, below=1))

    @property
    def architecture(self) -> OnetArchitecture:
        arch = SIZES[self.size]
        if self.condition == "voxels":
            return OnetArchitecture("voxel_simple", arch.c_dim, 512, arch.hidden_size)
        return arch


@dataclass(frozen=True)
class Shapes:
    """Shapes held for training: ``points (S, K, 3)``, ``occupancies (S, K)``, ``surface (S, K, 3)`` float32
    and bool tensors, and ``voxels (S, 32, 32, 32)`` float32 for the voxel condition."""

    points: torch.Tensor
    occupancies: torch.Tensor
    surface: torch.Tensor
    voxels: torch.Tensor | None


def hold(collection: Collection, split: str, with_voxels: bool, seed: int) -> Shapes:
    """The shapes of ``split``, :data:`KEPT_POINTS` of each kind of point per shape (a subset drawn by ``seed``)."""
    rng = np.random.default_rng(seed)
    entries = collection.shapes(split)
    data: list[ShapeData] = [collection.load(entry) for entry in entries]

    def subset(array: np.ndarray) -> np.ndarray:
        return array[rng.choice(len(array), KEPT_POINTS, replace=len(array) < KEPT_POINTS)]

    picks = [(subset(np.arange(len(d.points))), subset(np.arange(len(d.surface)))) for d in data]
    voxels = torch.from_numpy(np.stack([collection.voxels(e) for e in entries]).astype(np.float32)) \
        if with_voxels else None
    return Shapes(torch.from_numpy(np.stack([d.points[p] for d, (p, _) in zip(data, picks)])),
                  torch.from_numpy(np.stack([d.occupancies[p] for d, (p, _) in zip(data, picks)])),
                  torch.from_numpy(np.stack([d.surface[s] for d, (_, s) in zip(data, picks)])), voxels)


def observe(shapes: Shapes, index: torch.Tensor, config: ConditionalConfig, generator: torch.Generator):
    """The observations of shapes ``index``: noisy clouds ``(B, cloud_points, 3)`` or grids ``(B, 32, 32, 32)``."""
    if config.condition == "voxels":
        return shapes.voxels[index]
    pick = torch.randint(0, KEPT_POINTS, (len(index), config.cloud_points), generator=generator)
    cloud = torch.gather(shapes.surface[index], 1, pick[..., None].expand(-1, -1, 3))
    return cloud + config.cloud_noise * torch.randn(cloud.shape, generator=generator)


def train_conditional(collection: Collection, config: ConditionalConfig, out_dir: str | Path) -> list[EpochMetrics]:
    """Train on ``collection``'s train split, select on its val split; writes ``best.pt``, ``last.pt``,
    ``metrics.csv`` and ``loss.png`` into ``out_dir``; returns the history."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    voxels = config.condition == "voxels"
    train = hold(collection, "train", voxels, config.seed)
    val = hold(collection, "val", voxels, config.seed + 1)
    generator = torch.Generator().manual_seed(config.seed)
    with torch_threads(config.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)                    # the initial weights, not the caller's generator
        model = ConditionalOccNet(config.architecture)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        val_index = torch.arange(len(val.points))
        val_seen = observe(val, val_index, config, torch.Generator().manual_seed(config.seed + 2))
        val_points, val_labels = val.points[:, :config.val_points], val.occupancies[:, :config.val_points]
        level = math.log(config.threshold / (1 - config.threshold))
        history: list[EpochMetrics] = []
        best_iou, step = -1.0, 0
        for epoch in range(1, config.epochs + 1):
            began = time.perf_counter()
            model.train()
            losses = []
            for _ in range(config.steps_per_epoch):
                index = torch.randint(0, len(train.points), (config.batch_shapes,), generator=generator)
                pick = torch.randint(0, KEPT_POINTS, (config.batch_shapes, config.points_per_shape),
                                     generator=generator)
                points = torch.gather(train.points[index], 1, pick[..., None].expand(-1, -1, 3))
                labels = torch.gather(train.occupancies[index], 1, pick).float()
                loss = F.binary_cross_entropy_with_logits(model(points, observe(train, index, config, generator)),
                                                          labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                step += 1
            model.eval()
            with torch.no_grad():
                logits = model(val_points, val_seen)
                val_loss = float(F.binary_cross_entropy_with_logits(logits, val_labels.float()))
                inside, truth = logits > level, val_labels
                iou = float(((inside & truth).sum(1) / (inside | truth).sum(1).clamp(min=1)).mean())
                accuracy = float((inside == truth).float().mean())
            history.append(EpochMetrics(epoch, float(np.mean(losses)), val_loss, iou, accuracy, config.lr,
                                        time.perf_counter() - began))
            state = _checkpoint(model, optimizer, epoch, step, val_loss, config, history)
            write_bytes_atomic(out_dir / "last.pt", state)
            if iou > best_iou:
                best_iou = iou
                write_bytes_atomic(out_dir / "best.pt", state)
            write_metrics(history, out_dir / "metrics.csv")
        plot_history(history, out_dir / "loss.png")
    return history


def _checkpoint(model, optimizer, epoch: int, step: int, val_loss: float, config: ConditionalConfig,
                history: list[EpochMetrics]) -> bytes:
    """ONet's checkpoint, with an ``occnet`` entry: the threshold and cloud size export needs, the record."""
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch_it": epoch, "it": step,
                "loss_val_best": np.float64(val_loss),
                "occnet": {"threshold": config.threshold, "cloud_points": config.cloud_points,
                           "config": asdict(config), "history": [asdict(m) for m in history]}}, buffer)
    return buffer.getvalue()
