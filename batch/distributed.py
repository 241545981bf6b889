"""Data-parallel training of a conditional model on Ray Train: PyTorch DDP underneath (gloo on CPUs, NCCL on
GPUs), the same loop as one process (:func:`~occnet.train.conditional.fit`), the same checkpoints.

``workers`` processes each draw ``batch_shapes / workers`` shapes a step, so a step sees as many samples as one
process's; DDP averages their gradients. Rank 0 validates and writes ``best.pt``, ``last.pt``,
``metrics.csv`` and ``loss.png`` into the run folder, which every worker must reach (this machine's disk, or
storage the cluster shares). A worker that dies is restarted by Ray Train (``MAX_FAILURES`` times) and the
run continues from ``last.pt``, its last finished epoch.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

from occnet.batch.runner import start_ray
from occnet.runtime.collection import Collection
from occnet.runtime.errors import InputError, OccNetError, first_line
from occnet.train.checkpoint import read_torch_file
from occnet.train.conditional import World, fit
from occnet.train.config import ConditionalConfig
from occnet.train.onet_checkpoint import NUMPY_GLOBALS, OCCNET_ENTRY
from occnet.train.trainer import EpochMetrics, RunFiles, claim_run

MAX_FAILURES = 3
"""Times Ray Train restarts the workers after one dies."""


class DistributedError(OccNetError):
    """Ray Train ended the run without finishing it."""


def train_distributed(collection: Collection, config: ConditionalConfig, out_dir: str | Path, workers: int, *,
                      address: str | None = None, gpus_per_worker: float = 0.0, resume: bool = False,
                      force: bool = False) -> list[EpochMetrics]:
    """Train as :func:`~occnet.train.conditional.train_conditional` does, on ``workers`` Ray Train workers of
    ``config.threads`` CPUs (and ``gpus_per_worker`` GPUs) each: a private Ray on this machine, or the cluster
    at ``address``. Returns the history."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    check_workers(workers, config)
    with claim_run(Path(out_dir), resume, force) as files:
        if not resume:                                    # a replaced run's files must not be resumed from
            for path in (files.best, files.last, files.metrics, files.plot):
                path.unlink(missing_ok=True)
        own = not ray.is_initialized()
        if own:
            start_ray(ray, address)
        try:
            trainer = TorchTrainer(
                _worker, train_loop_config={"root": str(collection.root.resolve()), "config": asdict(config),
                                            "out_dir": str(files.out_dir.resolve()), "resume": resume},
                scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0,
                                             resources_per_worker={"CPU": config.threads,
                                                                   **({"GPU": gpus_per_worker}
                                                                      if gpus_per_worker else {})}),
                run_config=RunConfig(storage_path=str((files.out_dir / "ray").resolve()), name="train",
                                     failure_config=FailureConfig(max_failures=MAX_FAILURES)))
            result = trainer.fit()
        except Exception as exc:                          # Ray Train's TrainingFailedError and the like
            raise DistributedError(f"distributed training failed: {first_line(exc)}") from None
        finally:
            if own:
                ray.shutdown()
            shutil.rmtree(files.out_dir / "ray", ignore_errors=True)
        if result.error:
            raise DistributedError(f"distributed training failed: {first_line(result.error)}")
        return _history(files)


def check_workers(workers: int, config: ConditionalConfig) -> None:
    """Refuse a worker count that does not divide the shapes of a step among the workers."""
    if workers < 1 or config.batch_shapes % workers:
        raise InputError(f"--workers {workers} must be at least 1 and divide --batch-shapes {config.batch_shapes}")


def _worker(loop: dict) -> None:
    """One Ray Train worker: the loop as rank ``r`` of the run, the network wrapped for DDP. A worker that
    starts where ``last.pt`` exists (Ray Train's restart after a failure) continues from it."""
    import ray.train
    from ray.train.torch import prepare_model

    context = ray.train.get_context()
    files = RunFiles.in_folder(Path(loop["out_dir"]))
    config = ConditionalConfig(**loop["config"])
    fit(Collection(loop["root"]), config, files, loop["resume"] or files.last.is_file(),
        world=World(context.get_world_rank(), context.get_world_size()), wrap=prepare_model)


def _history(files: RunFiles) -> list[EpochMetrics]:
    """The run's history, as rank 0 recorded it in ``last.pt``."""
    state = read_torch_file(files.last, legacy=True, allowed=NUMPY_GLOBALS)
    return [EpochMetrics(**m) for m in state[OCCNET_ENTRY]["history"]]
