"""The training loop: fit an :class:`OccNet` to labelled points, keep the best checkpoint by validation loss.

Everything lives in memory as tensors: each epoch shuffles the training tensors once and takes batches as
slices, which is several times faster than a per-sample ``DataLoader``. Each epoch writes ``last.pt``
(everything needed to resume), ``metrics.csv`` and, when validation loss improves, ``best.pt``; every
file is replaced atomically, so killing the run at any moment loses at most the epoch in progress.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import math
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from occnet.runtime.contract import LEARNED_IOU, installed_version
from occnet.runtime.errors import InputError, OccNetError
from occnet.runtime.files import check_writable, claimed_folder, write_bytes_atomic
from occnet.runtime.machine import available_cores
from occnet.runtime.points import PointSet, iou
from occnet.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from occnet.train.config import TrainConfig
from occnet.train.model import OccNet
from occnet.train.plot import plot_history


@dataclass(frozen=True)
class EpochMetrics:
    """One row of ``metrics.csv``."""

    epoch: int
    train_loss: float
    val_loss: float
    val_iou: float
    val_accuracy: float
    lr: float
    seconds: float


@dataclass(frozen=True)
class RunFiles:
    """The files a run writes into its output folder; :meth:`in_folder` names them."""

    out_dir: Path
    best: Path
    last: Path
    metrics: Path
    plot: Path

    @classmethod
    def in_folder(cls, out_dir: Path) -> RunFiles:
        folder = Path(out_dir)
        return cls(folder, folder / "best.pt", folder / "last.pt", folder / "metrics.csv", folder / "loss.png")


@dataclass(frozen=True)
class TrainResult:
    """The finished run: every epoch's metrics, the best one, where the files are, why it stopped, and
    ``held_out``, ``(V,) int64`` indices of the data's points that validation used and training never saw
    (so that a caller scores the model on exactly those, whatever rule drew them)."""

    history: list[EpochMetrics]
    best: EpochMetrics
    files: RunFiles
    seconds: float
    stopped: str
    held_out: np.ndarray


class DivergedError(OccNetError):
    """The loss became NaN or infinite; the files of the last finite epoch are kept."""


class UntrainedError(OccNetError):
    """The run finished but best.pt has not learned the shape (see :func:`_check_learned`); ``result`` is the
    run, whose files are kept."""

    def __init__(self, message: str, result: TrainResult) -> None:
        super().__init__(message)
        self.result = result


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when PyTorch sees a GPU, else CPU; ``cuda`` without one is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: PyTorch sees no CUDA GPU here")
    return torch.device("cuda" if name in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def claim_run(out_dir: Path, resume: bool, force: bool) -> Iterator[RunFiles]:
    """The run folder for the duration of a run: checked before any work (creatable, writable, not holding
    another run unless ``resume`` or ``force``), created if needed and locked, so a second run into the same
    folder is refused while this one lives. A folder created here and left empty by a failure is removed."""
    files = RunFiles.in_folder(out_dir)
    with claimed_folder(files.out_dir, "occ-train"):
        check_writable(files.best)
        if resume and not files.last.is_file():
            raise InputError(f"nothing to resume: {files.last} does not exist")
        if not resume and not force and (files.best.exists() or files.last.exists()):
            raise InputError(f"{files.out_dir} already holds a run ({files.best.name}); continue it with "
                             f"--resume {files.out_dir} or replace it with --force")
        yield files


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """PyTorch's intra-op CPU threads set to ``count`` for the block, and the caller's count restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random train/validation index split of ``n`` points, fixed by ``seed``."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(n * val_fraction)))
    if n_val >= n:
        raise InputError(f"val fraction {val_fraction} leaves no training points")
    return order[n_val:], order[:n_val]


@torch.no_grad()
def evaluate(model: OccNet, points: torch.Tensor, labels: torch.Tensor, batch_size: int = 65536):
    """Mean BCE loss, IoU and accuracy of ``model`` on labelled points (prediction: logit > 0)."""
    model.eval()
    loss, intersection, union, correct = 0.0, 0, 0, 0
    for start in range(0, len(points), batch_size):
        logits = model(points[start:start + batch_size])
        target = labels[start:start + batch_size]
        loss += F.binary_cross_entropy_with_logits(logits, target, reduction="sum").item()
        predicted, actual = logits > 0, target > 0.5
        intersection += int((predicted & actual).sum())
        union += int((predicted | actual).sum())
        correct += int((predicted == actual).sum())
    return loss / len(points), iou(intersection, union), correct / len(points)


def train(data: PointSet, config: TrainConfig, out_dir: Path, *, resume: bool = False, force: bool = False,
          extra: dict | None = None, on_epoch: Callable[[EpochMetrics], None] | None = None,
          started: float | None = None) -> TrainResult:
    """Fit the network to ``data`` in the run folder ``out_dir`` (claimed for the duration, see
    :func:`claim_run`); returns the history. ``resume`` continues from ``last.pt`` (``config.epochs`` may
    extend the run); ``extra`` is recorded in every checkpoint (e.g. the sampling options), ``on_epoch`` is
    called after each epoch; the time budget counts from ``started`` (see :func:`fit`)."""
    with claim_run(out_dir, resume, force) as files:
        return fit(data, config, files, resume=resume, extra=extra, on_epoch=on_epoch, started=started)


def fit(data: PointSet, config: TrainConfig, files: RunFiles, *, resume: bool = False, extra: dict | None = None,
        on_epoch: Callable[[EpochMetrics], None] | None = None, started: float | None = None) -> TrainResult:
    """The training loop of :func:`train`, in a run folder already claimed. The run is a function of the data,
    the options and the seed: the same ones give the same weights however busy the machine is. A finite
    ``config.time_budget`` (counted from ``started``, a ``time.perf_counter()`` reading taken e.g. before
    sampling; default: now) only chooses the number of epochs, once, before training (see
    :func:`plan_epochs`); the run then is, and records itself as, a run of that many epochs.

    Raises :class:`DivergedError` (keeping the files of the last good epoch) when the loss stops being finite,
    and :class:`UntrainedError` (keeping every file) when best.pt has not learned the shape."""
    started = time.perf_counter() if started is None else started
    device = resolve_device(config.device)
    cores = available_cores()
    if config.threads > cores:
        raise InputError(f"threads {config.threads} is more than the {cores} cores this process may use")
    with torch_threads(config.threads):
        return _fit(data, config, files, device, resume, extra, on_epoch, started)


def _fit(data: PointSet, config: TrainConfig, files: RunFiles, device: torch.device, resume: bool,
         extra: dict | None, on_epoch: Callable[[EpochMetrics], None] | None, started: float) -> TrainResult:
    """:func:`fit` once its thread count is set."""

    origin = tuple(float(v) for v in (np.asarray(data.bounds_min) + np.asarray(data.bounds_max)) / 2)
    points = torch.from_numpy((data.points - np.asarray(origin)).astype(np.float32))   # float64 subtraction
    labels = torch.from_numpy(data.labels)
    train_idx, val_idx = split(len(points), config.val_fraction, config.seed)
    x_train, y_train = points[train_idx].to(device), labels[train_idx].to(device)
    x_val, y_val = points[val_idx].to(device), labels[val_idx].to(device)

    with torch.random.fork_rng(devices=[]):         # the seed fixes the initial weights, not the caller's RNG
        torch.manual_seed(config.seed)
        model = OccNet(config.architecture, data.bounds_min, data.bounds_max, origin, config.seed).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
    budget = None
    if not resume and math.isfinite(config.time_budget):
        budget = config.time_budget
        config = replace(config, epochs=plan_epochs(config, model, x_train, y_train, x_val, y_val, started),
                         time_budget=math.inf)
    steps_per_epoch = math.ceil(len(x_train) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(config.epochs * steps_per_epoch))
    shuffler = torch.Generator().manual_seed(config.seed + 1)
    history: list[EpochMetrics] = []
    first_epoch = 1
    if resume:
        first_epoch = _restore(files.last, config, data, model, optimizer, scheduler, shuffler, history)

    record = {"config": config.to_dict(), "data_source": data.source, "data_sha256": data.sha256,
              "architecture": config.architecture.to_dict(), "bounds_min": list(data.bounds_min),
              "bounds_max": list(data.bounds_max), "origin": list(origin), "versions": versions(),
              **({"time_budget": budget} if budget is not None else {}), **(extra or {})}
    # a resumed run whose best.pt is gone writes a new one at its next epoch
    best_loss = min((m.val_loss for m in history), default=math.inf) if files.best.exists() else math.inf
    stopped = f"{config.epochs} epochs"
    for epoch in range(first_epoch, config.epochs + 1):
        tick = time.perf_counter()
        model.train()
        order = torch.randperm(len(x_train), generator=shuffler).to(device)
        xs, ys = x_train[order], y_train[order]
        total = torch.zeros((), device=device)
        for start in range(0, len(xs), config.batch_size):
            logits = model(xs[start:start + config.batch_size])
            loss = F.binary_cross_entropy_with_logits(logits, ys[start:start + config.batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total.add_(loss.detach(), alpha=len(logits))
        val_loss, val_iou, val_acc = evaluate(model, x_val, y_val)
        row = EpochMetrics(epoch, float(total) / len(xs), val_loss, val_iou, val_acc,
                           optimizer.param_groups[0]["lr"], round(time.perf_counter() - tick, 4))
        if not (math.isfinite(row.train_loss) and math.isfinite(row.val_loss)):
            if history:
                plot_history(history, files.plot)
            raise DivergedError(f"training diverged at epoch {epoch} (loss is "
                                f"{row.train_loss if not math.isfinite(row.train_loss) else row.val_loss}); "
                                "lower --lr" + (f"; the files of epoch {history[-1].epoch} are kept" if history
                                                else ""))
        history.append(row)

        weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        metrics = asdict(row)
        if val_loss < best_loss:
            best_loss = val_loss
            save_checkpoint(files.best, {**record, "model": weights, "epoch": epoch, "metrics": metrics})
        save_checkpoint(files.last, {
            **record, "model": weights, "epoch": epoch, "metrics": metrics,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "shuffler": shuffler.get_state(), "history": [asdict(m) for m in history],
        })
        write_metrics(history, files.metrics)
        if on_epoch:
            on_epoch(row)
        if _out_of_patience(config, history):
            stopped = f"no better validation loss for {config.patience} epochs"
            break

    plot_history(history, files.plot)
    best = min(history, key=lambda m: m.val_loss)
    if budget is not None:
        stopped += f"; {config.epochs} epochs planned by the time budget ({budget:g} s): --epochs {config.epochs} " \
                   "repeats this run"
    result = TrainResult(history, best, files, time.perf_counter() - started, stopped, val_idx.numpy())
    _check_learned(result, float(y_val.float().mean()))
    return result


def plan_epochs(config: TrainConfig, model: OccNet, x_train: torch.Tensor, y_train: torch.Tensor,
                x_val: torch.Tensor, y_val: torch.Tensor, started: float) -> int:
    """The epochs that fit what is left of ``config.time_budget`` (at least 1, at most ``config.epochs``),
    from the time of one trial epoch (training, validation and serialising its two checkpoints) on a copy of
    the model, which is then thrown away: the run itself starts from the untouched weights with its schedule
    fitted to the plan, exactly as a run given ``--epochs`` of the plan would."""
    trial = copy.deepcopy(model)
    optimizer = torch.optim.Adam(trial.parameters(), lr=config.lr, fused=True)
    tick = time.perf_counter()
    trial.train()
    for start in range(0, len(x_train), config.batch_size):
        loss = F.binary_cross_entropy_with_logits(trial(x_train[start:start + config.batch_size]),
                                                  y_train[start:start + config.batch_size])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    evaluate(trial, x_val, y_val)
    for _ in range(2):                                        # best.pt and last.pt
        torch.save({"model": trial.state_dict(), "optimizer": optimizer.state_dict()}, io.BytesIO())
    now = time.perf_counter()
    left = config.time_budget - (now - started)
    return int(max(1, min(config.epochs, left // (now - tick))))


def _out_of_patience(config: TrainConfig, history: list[EpochMetrics]) -> bool:
    """Whether ``patience`` epochs (when set) in the second half of the schedule brought no better validation
    loss (in the first half the learning rate is still high and the loss noisy)."""
    if config.patience is None:
        return False
    epoch = history[-1].epoch
    best = min(history, key=lambda m: m.val_loss).epoch
    return epoch < config.epochs and epoch - best >= config.patience and 2 * epoch >= config.epochs


def _check_learned(result: TrainResult, inside_share: float) -> None:
    """Raise :class:`UntrainedError` when best.pt has not learned the shape: its validation IoU is below
    :data:`~occnet.runtime.contract.LEARNED_IOU`, or it classifies the validation points no better than
    calling them all inside or all outside (the larger of ``inside_share`` and its complement)."""
    best, trivial = result.best, max(inside_share, 1.0 - inside_share)
    if best.val_iou >= LEARNED_IOU and best.val_accuracy > trivial:
        return
    why = (f"validation IoU {best.val_iou:.3f} (at least {LEARNED_IOU:g} needed)" if best.val_iou < LEARNED_IOU
           else f"validation accuracy {best.val_accuracy:.3f}, no better than calling every point "
                f"{'inside' if inside_share > 0.5 else 'outside'} ({trivial:.3f})")
    raise UntrainedError(f"the model did not learn the shape: best.pt (epoch {best.epoch} of "
                         f"{len(result.history)}) has {why}; train longer (--epochs) or at another --lr, or check that "
                         f"the data's labels mark the inside; the run's files are kept in {result.files.out_dir}",
                         result)


def run_options(run_dir: Path) -> dict:
    """What ``last.pt`` in ``run_dir`` recorded about its run: ``config`` (a TrainConfig), ``sampling`` and
    ``data_path`` (None for the demo), so that ``--resume`` needs nothing but the folder."""
    state = load_checkpoint(RunFiles.in_folder(run_dir).last).state
    try:
        config = TrainConfig.from_dict(state["config"])
    except (KeyError, TypeError, ValueError, InputError) as exc:
        raise CheckpointError(f"{run_dir}/last.pt: does not record its training options ({exc})") from None
    return {"config": config, "sampling": state.get("sampling", {}), "data_path": state.get("data_path")}


class WarmupCosine:
    """LR factor per step: linear warm-up over ``warmup`` of ``total_steps``, then cosine decay to ``floor``.
    An object rather than a closure so that ``LambdaLR`` saves its ``__dict__`` with the scheduler's state;
    a run extended by ``--resume --epochs`` refits ``total_steps`` to its new total."""

    def __init__(self, total_steps: int, warmup: float = 0.05, floor: float = 0.01) -> None:
        self.total_steps, self.warmup, self.floor = total_steps, warmup, floor

    def __call__(self, step: int) -> float:
        ramp = max(1, int(self.total_steps * self.warmup))
        if step < ramp:
            return (step + 1) / ramp
        progress = min(1.0, (step - ramp) / max(1, self.total_steps - ramp))
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


def _restore(path: Path, config: TrainConfig, data: PointSet, model, optimizer, scheduler, shuffler,
             history: list[EpochMetrics]) -> int:
    """Load ``last.pt`` into the live objects; returns the epoch to continue from. An extended run (a larger
    ``config.epochs`` than recorded) fits its schedule to the new total; an interrupted one keeps its own."""
    state = load_checkpoint(path).state
    if "optimizer" not in state:
        raise CheckpointError(f"{path}: has no optimiser state to resume from")
    if TrainConfig.from_dict({**state["config"], "epochs": config.epochs}) != config:
        raise InputError(f"{path}: was trained with other options; resume with the same ones")
    if config.epochs <= state["epoch"]:
        raise InputError(f"{path}: the run has finished {state['epoch']} epochs already; --epochs must be "
                         "larger to extend it")
    if state["data_sha256"] != data.sha256:
        raise InputError(f"{path}: was trained on other data ({state['data_source']})")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    total_steps = scheduler.lr_lambdas[0].total_steps          # fitted to config.epochs
    scheduler.load_state_dict(state["scheduler"])              # the recorded schedule, total_steps included
    if config.epochs != state["config"]["epochs"]:
        scheduler.lr_lambdas[0].total_steps = total_steps
    shuffler.set_state(state["shuffler"])
    history.extend(EpochMetrics(**m) for m in state["history"])
    return int(state["epoch"]) + 1


def write_metrics(history: list[EpochMetrics], path: Path) -> None:
    """``metrics.csv``: one row per epoch, replaced atomically."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([f.name for f in fields(EpochMetrics)])
    for m in history:
        writer.writerow([m.epoch, f"{m.train_loss:.6f}", f"{m.val_loss:.6f}", f"{m.val_iou:.6f}",
                         f"{m.val_accuracy:.6f}", f"{m.lr:.6g}", f"{m.seconds:.3f}"])
    write_bytes_atomic(path, out.getvalue().encode())


def versions() -> dict:
    """Versions of what produced a checkpoint."""
    return {"occnet": installed_version("occnet"), "torch": str(torch.__version__), "numpy": np.__version__,
            "python": platform.python_version()}
