"""The batch on Ray: every shape not already finished becomes a task (:func:`~occnet.batch.job.run_shape`);
results come back through Ray's object store and the driver writes them, atomically, into ``DIR/NAME/``.

Ray schedules and retries: a worker that dies (SIGKILL, out of memory, a lost node) has its task run again
(``MAX_RETRIES`` times); a shape that fails is a row of the summary, not the end of the batch. The summary is
rewritten after every shape, so an interrupted batch keeps what finished and a rerun redoes only the rest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from occnet.batch.job import EVAL_FILE, BatchSettings, ShapeResult, Stage, run_shape
from occnet.batch.sources import Shape, sha256
from occnet.batch.summary import plot_summary, read_summary, write_summary
from occnet.runtime import signals
from occnet.runtime.errors import InputError, OutputError, first_line
from occnet.runtime.files import check_writable, claimed_folder, write_bytes_atomic
from occnet.runtime.machine import QUIET_THREADS

MAX_RETRIES = 3
"""Times Ray runs a task again whose worker died."""
QUEUED_PER_SLOT = 2
"""Tasks submitted per slot that can run one (the rest wait in the driver, their inputs unread)."""


@dataclass(frozen=True)
class BatchProgress:
    """Where the batch stands: shapes finished in this run (done, failed), reused from an earlier one
    (skipped), in the cluster's hands (running), and the time left at the pace so far (None before the
    first result)."""

    total: int
    done: int
    failed: int
    skipped: int
    running: int
    eta_seconds: float | None


@dataclass(frozen=True)
class BatchReport:
    """The finished batch: its summary rows by name and the counts of :class:`BatchProgress`."""

    rows: dict[str, dict]
    done: int
    failed: int
    skipped: int
    seconds: float


def run_batch(shapes: list[Shape], settings: BatchSettings, out_dir: str | Path, address: str | None = None,
              on_progress: Callable[[BatchProgress], None] | None = None, model: bytes = b"") -> BatchReport:
    """Run the pipeline on ``shapes`` with Ray and write ``out_dir/NAME/...``, ``summary.csv`` and
    ``summary.png``. ``address``: None starts Ray on this machine (or uses the one this process already
    started), ``"auto"`` or ``"ray://HOST:PORT"`` joins a cluster. Shapes whose outputs are complete for the
    same input and options are skipped. ``model``: the bytes of the conditional model that reconstructs the
    sources (observations), whose digest ``settings.model_sha256`` is; put in Ray's object store once."""
    import ray

    from occnet.runtime.evaluate import check_samples_memory
    from occnet.train.sampling import check_memory

    started = time.perf_counter()
    out_dir = Path(out_dir)
    _check_names([shape.name for shape in shapes], settings.outputs)
    if (sha256(model) if model else "") != settings.model_sha256:
        raise InputError("the model given does not match settings.model_sha256, the digest of the model the "
                         "batch reconstructs with (both or neither)")
    if not model:
        check_memory(settings.sampling)                     # as occ-train would, before any shape is trained
        check_samples_memory(settings.eval_samples, "--eval-samples")
    with claimed_folder(out_dir, "occ-batch"), contextlib.ExitStack() as stack:
        summary = check_writable(out_dir / "summary.csv")
        rows = read_summary(summary)
        fingerprint = settings.fingerprint()
        todo, skipped = [], 0
        for shape in shapes:
            try:
                digest = sha256(shape.read())
            except InputError:                   # gone or unreadable: it fails as its turn comes
                todo.append(shape)
                continue
            if _complete(rows.get(shape.name), digest, fingerprint, out_dir / shape.name, settings.outputs):
                skipped += 1
            else:
                todo.append(shape)
        counts = {"done": 0, "failed": 0}

        def finish(result: ShapeResult, shape: Shape, digest: str) -> None:
            """A shape's end, worked or failed: its files and row written, counted, the summary rewritten."""
            rows[shape.name] = _record(result, shape, digest, fingerprint, out_dir, settings.outputs,
                                       settings.stages)
            counts["done" if result.ok else "failed"] += 1
            write_summary(rows, summary)

        own_ray = not ray.is_initialized()
        pending: dict = {}                      # task reference -> (shape, input digest)
        try:
            if todo:
                if own_ray:
                    start_ray(ray, address)
                    # ray.init replaced our SIGTERM handler with its own sys.exit, which ended the process by
                    # SIGABRT and a stack dump; ours come back for the batch (and Ray's after it)
                    stack.enter_context(signals.handled())
                _check_fits(ray, settings)
                task = ray.remote(run_shape).options(num_cpus=settings.threads_per_shape,
                                                     num_gpus=settings.gpus_per_shape, max_retries=MAX_RETRIES)
                slots = max(1, int(ray.cluster_resources().get("CPU", 1) // settings.threads_per_shape))
                shared = ray.put(model) if model else b""          # the model travels to each node once
                while todo or pending:
                    while todo and len(pending) < QUEUED_PER_SLOT * slots:
                        shape = todo.pop(0)
                        try:
                            data = shape.read()             # read again: only the tasks in flight hold bytes
                        except InputError as exc:           # deleted or unreadable since: its row, not the end
                            finish(ShapeResult(shape.name, f"read: {exc}", {}, {}, {}, time.time()), shape, "")
                            continue
                        ref = task.remote(shape.name, shape.source.suffix.lower(), data, settings, shared)
                        pending[ref] = (shape, sha256(data))   # the digest of what was trained on
                    ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                    for ref in ready:
                        shape, digest = pending.pop(ref)
                        finish(_result(ray, ref, shape), shape, digest)
                    if on_progress:
                        finished = counts["done"] + counts["failed"]
                        pace = (time.perf_counter() - started) / finished if finished else None
                        on_progress(BatchProgress(len(shapes), counts["done"], counts["failed"], skipped,
                                                  min(len(pending), slots),
                                                  pace * (len(todo) + len(pending)) if pace else None))
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            if own_ray and ray.is_initialized():
                ray.shutdown()
            if rows:                            # summary.csv is rewritten after each shape already
                plot_summary(rows, out_dir / "summary.png")
    return BatchReport(rows, counts["done"], counts["failed"], skipped, time.perf_counter() - started)


SUMMARY_FILES = ("summary.csv", "summary.png")
"""The files of the output folder itself."""


def _check_names(names: list[str], outputs: tuple[str, ...]) -> None:
    """Refuse, before any work, shapes whose folders would be the output folder's own files or another
    shape's files (a shape ``summary.csv`` from ``summary.csv.stl``, or ``x/eval.json`` beside shape ``x``):
    their outputs and the summary would overwrite each other and break the folder for good."""
    taken = {*SUMMARY_FILES, *(f"{name}/{output}" for name in names for output in outputs)}
    clash = sorted(name for name in names if name in taken)
    if clash:
        raise InputError(f"shape name {clash[0]!r} would be the output folder's own file "
                         f"({'summary' if clash[0] in SUMMARY_FILES else 'another shape'}'s); rename its source "
                         "or put it in a folder of its own")


def start_ray(ray, address: str | None) -> None:
    """Start a private Ray on this machine (``address`` None) or join the cluster at ``address``; its failure is
    one line. Without an address Ray would join any cluster it finds (``RAY_ADDRESS``, or the last one
    ``ray start`` left on this machine): someone else's, whose workers would then read the inputs and choose
    what comes back. ``"local"`` starts a new one whatever runs already. Every worker's thread pools sleep
    when idle (:data:`~occnet.runtime.machine.QUIET_THREADS`): a task's torch must not spin against the other
    tasks on its machine."""
    # a cluster's own settings are its own; a private Ray's workers run at the driver's priority (Ray's
    # default niceness of 15 starved them beside other work: 2% of a core each with 4 CPU hogs running)
    local = {} if address else {"include_dashboard": False, "_system_config": {"worker_niceness": 0}}
    try:
        ray.init(address=address or "local", logging_level=logging.ERROR, log_to_driver=False,
                 runtime_env={"env_vars": dict(QUIET_THREADS)}, **local)
    except Exception as exc:                # ConnectionError, RuntimeError, ValueError, ray's own errors
        where = f"reach the Ray cluster at {address}" if address else "start Ray on this machine"
        raise InputError(f"cannot {where}: {' '.join(str(exc).split())[:300]}") from None


def _check_fits(ray, settings: BatchSettings) -> None:
    """Refuse a task no machine of the cluster can run (Ray would wait for one forever)."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    for key, need, option in (("CPU", settings.threads_per_shape, "--threads-per-shape"),
                              ("GPU", settings.gpus_per_shape, "--gpus-per-shape")):
        most = max((node.get(key, 0) for node in nodes), default=0)
        if need > most:
            raise InputError(f"{option} {need:g} is more than any machine of the Ray cluster has ({most:g} {key}s)")


def _result(ray, ref, shape: Shape) -> ShapeResult:
    """The task's result; a task Ray gave up on (its worker died ``MAX_RETRIES + 1`` times) is a failed shape."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        signals.raise_if_received()             # a worker stopped by the user's Ctrl-C is no failure of the shape
        return ShapeResult(shape.name, f"worker: {first_line(exc)}", {}, {}, {}, 0.0)


def _record(result: ShapeResult, shape: Shape, digest: str, fingerprint: str, out_dir: Path,
            outputs: tuple[str, ...], stages: tuple[Stage, ...]) -> dict:
    """Write a finished shape's files into ``out_dir/NAME/`` (``eval.json`` last: it marks the folder complete)
    and return its summary row. Only the file names the job declares (``outputs``) are written: a result
    naming any other (a worker that is not ours) fails the shape instead."""
    unexpected = sorted(set(result.files) - set(outputs))
    if unexpected:
        result = replace(result, error=f"worker: returned files the job does not write: "
                                       f"{', '.join(map(repr, unexpected))[:200]}", files={})
    row = {"name": shape.name, "source": str(shape.source), "status": "done" if result.ok else "failed",
           "error": result.error, "input_sha256": digest, "settings": fingerprint,
           **{f"seconds_{stage.name}": result.seconds.get(stage.name) for stage in stages}, **result.scores}
    if result.ok:
        folder = out_dir / shape.name
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {folder}: {exc.strerror}") from None
        for name, data in result.files.items():
            write_bytes_atomic(folder / name, data)
        row["seconds_overhead"] = round(time.time() - result.started - sum(result.seconds.values()), 3)
        write_bytes_atomic(folder / EVAL_FILE, json.dumps(row, indent=1).encode())
    return row


def _complete(row: dict | None, digest: str, fingerprint: str, folder: Path, outputs: tuple[str, ...]) -> bool:
    """Whether an earlier run finished this shape from the same input with the same options, files intact."""
    return (row is not None and row.get("status") == "done" and row.get("input_sha256") == digest
            and row.get("settings") == fingerprint
            and all((folder / name).is_file() for name in outputs if name != "loss.png"))
