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

from occnet.runtime.collection import Collection, ShapeData
from occnet.runtime.errors import InputError
from occnet.runtime.files import write_bytes_atomic
from occnet.train.checkpoint import read_torch_file
from occnet.train.config import ConditionalConfig
from occnet.train.onet import ConditionalOccNet
from occnet.train.onet_checkpoint import NUMPY_GLOBALS, OCCNET_ENTRY
from occnet.train.plot import plot_history
from occnet.train.trainer import EpochMetrics, RunFiles, claim_run, torch_threads, write_metrics

KEPT_POINTS = 10_000
"""Query and surface points kept in memory per shape (a seeded subset of ONet's 100,000): 1,000 shapes take
about 250 MB instead of 2.5 GB."""


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


def train_conditional(collection: Collection, config: ConditionalConfig, out_dir: str | Path, *,
                      resume: bool = False, force: bool = False, on_epoch=None) -> list[EpochMetrics]:
    """Train on ``collection``'s train split, select on its val split; writes ``best.pt``, ``last.pt``,
    ``metrics.csv`` and ``loss.png`` into ``out_dir`` (claimed as occ-train claims its folder); returns the
    history. ``resume`` continues from ``last.pt`` (``config.epochs`` may extend the run) and ends where an
    uninterrupted run ends; ``on_epoch`` sees each epoch's row."""
    with claim_run(Path(out_dir), resume, force) as files:
        return fit(collection, config, files, resume, on_epoch)


@dataclass(frozen=True)
class World:
    """Where this process stands among the data-parallel workers of a run: ``rank`` of ``size``. Each draws
    ``batch_shapes / size`` shapes a step; rank 0 validates and writes the files."""

    rank: int = 0
    size: int = 1


def fit(collection: Collection, config: ConditionalConfig, files: RunFiles, resume: bool, on_epoch=None,
        world: World = World(), wrap=None) -> list[EpochMetrics]:
    """The training loop of :func:`train_conditional` in a claimed run folder, as worker ``world`` of a run
    (``wrap``: what makes the network data-parallel, e.g. Ray Train's ``prepare_model``; None for one process).
    A step's shapes come from a generator seeded by the seed, the rank and the epoch, so a resumed run draws
    what an uninterrupted one draws without keeping a generator's state."""
    if config.batch_shapes % world.size:
        raise InputError(f"batch shapes {config.batch_shapes} must divide among the {world.size} workers")
    voxels = config.condition == "voxels"
    train = hold(collection, "train", voxels, config.seed)
    val = hold(collection, "val", voxels, config.seed + 1)
    if not len(train.points) or not len(val.points):
        raise InputError(f"{collection.root}: training needs shapes in both its train and val lists")
    per_worker = config.batch_shapes // world.size
    with torch_threads(config.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)                    # the initial weights, not the caller's generator
        model = ConditionalOccNet(config.architecture)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        val_seen = observe(val, torch.arange(len(val.points)), config, torch.Generator().manual_seed(config.seed + 2))
        val_points, val_labels = val.points[:, :config.val_points], val.occupancies[:, :config.val_points]
        level = math.log(config.threshold / (1 - config.threshold))
        history: list[EpochMetrics] = []
        step = 0
        if resume:
            step = _restore(files.last, config, collection, model, optimizer, history)
        trained = wrap(model) if wrap else model          # DDP shares the module's parameters
        best_iou = max((m.val_iou for m in history), default=-1.0)
        for epoch in range(len(history) + 1, config.epochs + 1):
            began = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, epoch)
            seed = int(np.random.SeedSequence([config.seed, world.rank, epoch]).generate_state(1)[0])
            generator = torch.Generator().manual_seed(seed)
            trained.train()
            losses = []
            for _ in range(config.steps_per_epoch):
                index = torch.randint(0, len(train.points), (per_worker,), generator=generator)
                pick = torch.randint(0, KEPT_POINTS, (per_worker, config.points_per_shape), generator=generator)
                points = torch.gather(train.points[index], 1, pick[..., None].expand(-1, -1, 3))
                labels = torch.gather(train.occupancies[index], 1, pick).float()
                loss = F.binary_cross_entropy_with_logits(trained(points, observe(train, index, config, generator)),
                                                          labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                step += 1
            if world.rank:
                continue                                  # rank 0 validates and writes for the run
            model.eval()
            with torch.no_grad():
                logits = model(val_points, val_seen)
                val_loss = float(F.binary_cross_entropy_with_logits(logits, val_labels.float()))
                inside, truth = logits > level, val_labels
                iou = float(((inside & truth).sum(1) / (inside | truth).sum(1).clamp(min=1)).mean())
                accuracy = float((inside == truth).float().mean())
            history.append(EpochMetrics(epoch, float(np.mean(losses)), val_loss, iou, accuracy,
                                        learning_rate(config, epoch),
                                        time.perf_counter() - began))
            state = _checkpoint(model, optimizer, step, val_loss, config, collection, history)
            if iou > best_iou:
                best_iou = iou
                write_bytes_atomic(files.best, state)
            write_bytes_atomic(files.last, state)
            write_metrics(history, files.metrics)
            if on_epoch:
                on_epoch(history[-1])
        if not world.rank:
            plot_history(history, files.plot)
    return history


def learning_rate(config: ConditionalConfig, epoch: int) -> float:
    """The learning rate of ``epoch`` (1-based): ``config.lr`` decayed along half a cosine over ``config.epochs``
    (ONet keeps 1e-4 constant; the decay settles the small model's noisy end: see ``ConditionalConfig``).
    Epoch 1 has the full rate whatever the length, and the rate is a function of the epoch alone, so a
    resumed run follows the schedule an uninterrupted one follows; ``--resume --epochs N`` follows N's from
    where the run stands."""
    return config.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / config.epochs))


def recorded_run(run_dir: str | Path) -> tuple[ConditionalConfig, Path] | None:
    """The options and collection a conditional run in ``run_dir`` recorded in its ``last.pt``; None where the
    folder's run is not one (occ-train's single-shape runs)."""
    state = read_torch_file(RunFiles.in_folder(Path(run_dir)).last, legacy=True, allowed=NUMPY_GLOBALS)
    entry = state.get(OCCNET_ENTRY) if isinstance(state, dict) and "format" not in state else None
    if not isinstance(entry, dict) or "config" not in entry:
        return None
    try:
        return ConditionalConfig(**entry["config"]), Path(entry["collection"])
    except (TypeError, KeyError, InputError) as exc:
        raise InputError(f"{run_dir}/last.pt: does not record its training options ({exc})") from None


def _restore(path: Path, config: ConditionalConfig, collection: Collection, model, optimizer,
             history: list[EpochMetrics]) -> int:
    """Load ``last.pt`` into the live objects; returns the steps taken."""
    state = read_torch_file(path, legacy=True, allowed=NUMPY_GLOBALS)
    entry = state.get(OCCNET_ENTRY, {})
    recorded = ConditionalConfig(**{**entry.get("config", {}), "epochs": config.epochs})
    if recorded != config:
        raise InputError(f"{path}: was trained with other options; resume with the same ones")
    if Path(entry.get("collection", "")) != collection.root:
        raise InputError(f"{path}: was trained on the collection {entry.get('collection')}, not {collection.root}")
    if config.epochs <= state["epoch_it"]:
        raise InputError(f"{path}: the run has finished {state['epoch_it']} epochs already; --epochs must be "
                         "larger to extend it")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    history.extend(EpochMetrics(**m) for m in entry["history"])
    return int(state["it"])


def _checkpoint(model, optimizer, step: int, val_loss: float, config: ConditionalConfig, collection: Collection,
                history: list[EpochMetrics]) -> bytes:
    """ONet's checkpoint, with an ``occnet`` entry: the threshold and cloud size export needs, and what a
    resume needs (the options, the collection, the history)."""
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch_it": len(history),
                "it": step, "loss_val_best": np.float64(val_loss),
                OCCNET_ENTRY: {"threshold": config.threshold, "cloud_points": config.cloud_points,
                               "config": asdict(config), "collection": str(collection.root),
                               "history": [asdict(m) for m in history]}},
               buffer)
    return buffer.getvalue()
