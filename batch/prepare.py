"""A folder of meshes prepared as a collection on Ray (:func:`~occnet.train.collection.prepare_meshes` with
:func:`ray_mapper`): one task a mesh, the mesh's bytes in and its shape's files out, so the workers need not
see the driver's disk; the driver writes each shape as it arrives."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

from occnet.batch.runner import start_ray
from occnet.runtime import signals
from occnet.runtime.errors import OccNetError, first_line
from occnet.train.collection import Mapper

IN_FLIGHT_PER_CPU = 2
"""Tasks queued per CPU of the cluster: the workers stay busy while only these meshes' bytes are held."""


class PreparationError(OccNetError):
    """A worker died preparing a mesh, or Ray gave up on its task."""


def ray_mapper(address: str | None = None) -> Mapper:
    """A :data:`~occnet.train.collection.Mapper` that runs each job as a Ray task (one CPU each) on a private
    Ray on this machine (``address`` None, or the one this process already started) or on the cluster at
    ``address``; results come back in the jobs' order. An error the function raises (an unreadable mesh) comes
    back as itself."""

    def mapper(function: Callable, jobs: Iterable[tuple]) -> Iterator:
        import ray

        own = not ray.is_initialized()
        with contextlib.ExitStack() as stack:
            if own:
                start_ray(ray, address)
                stack.callback(ray.shutdown)
                stack.enter_context(signals.handled())     # ray.init replaced the SIGTERM handler with its own
            task = ray.remote(function).options(num_cpus=1)
            window = max(1, IN_FLIGHT_PER_CPU * int(ray.cluster_resources().get("CPU", 1)))
            pending: list = []
            stack.callback(lambda: [ray.cancel(ref, force=True) for ref in pending])
            for job in jobs:
                pending.append(task.remote(*job))
                if len(pending) >= window:
                    yield _get(ray, pending.pop(0))
            while pending:
                yield _get(ray, pending.pop(0))

    return mapper


def _get(ray, ref):
    """A task's result; the function's own error raised as itself, a lost worker as one line."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, OccNetError):
            raise exc.cause from None
        signals.raise_if_received()
        raise PreparationError(f"preparing a mesh failed on a Ray worker: {first_line(exc.cause or exc)}") from None
    except ray.exceptions.RayError as exc:
        signals.raise_if_received()
        raise PreparationError(f"preparing a mesh failed on a Ray worker: {first_line(exc)}") from None
