"""What this machine can give a command: memory still available and cores this process may use, and the
thread policy that keeps a command's thread pools from fighting other work for them.

Commands check their estimated needs against these before any work, so an impossible request is refused in
one line instead of being killed by the kernel or oversubscribing the CPU.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
"""cgroup v2's CPU quota of this container: ``"QUOTA PERIOD"`` in microseconds, or ``"max PERIOD"``."""
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
CGROUP_MEMORY = Path("/sys/fs/cgroup")
"""cgroup v2's folder: ``memory.max`` (bytes or ``max``), ``memory.current``, ``memory.stat``."""
CGROUP_V1_MEMORY = Path("/sys/fs/cgroup/memory")
"""cgroup v1's memory controller: ``memory.limit_in_bytes``, ``memory.usage_in_bytes``, ``memory.stat``."""
PROC_STATUS = Path("/proc/self/status")
"""This process's mapped (``VmSize``) and data (``VmData``) sizes, what ``ulimit -v`` and ``-d`` cap."""

QUIET_THREADS = {"OMP_WAIT_POLICY": "PASSIVE"}
"""Environment for the OpenMP runtime under PyTorch (GNU libgomp; MKL and oneDNN run on it): idle threads
sleep instead of spinning. Spinning threads fight other busy processes for the cores they wait on: with 4
CPU hogs on 2 cores an epoch took 20-38 s spinning against 0.55-1.0 s passive (a fair share is ~3x the quiet
0.3 s). Read once, when the library loads, so it must be set before ``import torch``."""


@dataclass(frozen=True)
class Memory:
    """Memory this process can still take (``nbytes``) and the limit that says so (``limit``, for messages:
    a refusal that blamed free memory under ``ulimit -v`` would send the user looking in the wrong place)."""

    nbytes: int
    limit: str

    def __str__(self) -> str:
        return f"{self.nbytes / 2**30:.1f} GiB ({self.limit})"


def available_memory() -> Memory | None:
    """The least of the machine's available memory (Linux ``MemAvailable``), the container's memory limit less
    its use (cgroup v2 or v1; reclaimable file cache is not use) and the process's own limits (``ulimit -v``
    and ``-d``) less what it has mapped; None where none is known. A command that heeded only the first was
    killed by the container, or died of a bare MemoryError under ``ulimit -v``, instead of being refused with
    the size that fits."""
    known = [Memory(max(0, left), limit) for left, limit in
             ((_machine_available(), "the machine's available memory"),
              (_cgroup_memory_left(), "the container's memory limit"), *_rlimits_left()) if left is not None]
    return min(known, key=lambda memory: memory.nbytes) if known else None


def _machine_available() -> int | None:
    """Memory the machine can still give without swapping (``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_memory_left() -> int | None:
    """The container's memory limit less its use, where it has a limit (cgroup v2, else v1)."""
    for folder, limit, usage, cache in ((CGROUP_MEMORY, "memory.max", "memory.current", "inactive_file"),
                                        (CGROUP_V1_MEMORY, "memory.limit_in_bytes", "memory.usage_in_bytes",
                                         "total_inactive_file")):
        try:
            text = (folder / limit).read_text().strip()
            if text == "max" or int(text) >= 2**60:     # v1 writes "no limit" as a page-rounded 2**63 - 1
                return None
            used = int((folder / usage).read_text()) - _stat(folder / "memory.stat").get(cache, 0)
            return int(text) - max(0, used)
        except (OSError, ValueError):
            continue
    return None


def _stat(path: Path) -> dict[str, int]:
    """A ``key value`` per line file (cgroup's ``memory.stat``) as a dict; empty where it cannot be read."""
    try:
        rows = [line.split() for line in path.read_text().splitlines()]
        return {row[0]: int(row[1]) for row in rows if len(row) >= 2}
    except (OSError, ValueError):
        return {}


def _rlimits_left() -> list[tuple[int, str]]:
    """What ``ulimit -v`` (address space) and ``ulimit -d`` (data) leave this process, for each that is set."""
    try:
        import resource
    except ImportError:                                  # not on this platform (Windows): no such limits
        return []
    status = {}
    try:
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith(("VmSize:", "VmData:")):
                status[line.split(":")[0]] = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    left = []
    for limit, mapped, name in ((resource.RLIMIT_AS, "VmSize", "ulimit -v"), (resource.RLIMIT_DATA, "VmData",
                                                                              "ulimit -d")):
        soft = resource.getrlimit(limit)[0]
        if soft != resource.RLIM_INFINITY:
            left.append((soft - status.get(mapped, 0), f"this process's {name}"))
    return left


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity where the OS tells (else the machine's count), capped
    by the container's CPU quota (cgroup v2 or v1), rounded up. A container limited to 2 CPUs of a 64-core host
    sees 64 in its affinity; 64 threads sharing 2 CPUs' time would spend it waiting for each other."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, math.ceil(quota))) if quota is not None else cores


def _cgroup_quota() -> float | None:
    """The container's CPU quota in CPUs (e.g. 1.5), or None where there is none or it cannot be read."""
    try:
        if CGROUP_CPU_MAX.is_file():
            quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        if CGROUP_V1_QUOTA.is_file():
            quota, period = int(CGROUP_V1_QUOTA.read_text()), int(CGROUP_V1_PERIOD.read_text())
            return None if quota <= 0 else quota / period
    except (OSError, ValueError, ZeroDivisionError):
        pass
    return None


def thread_environment() -> dict[str, str]:
    """The variables a command process (or a worker it starts) sets before PyTorch loads: idle threads that
    sleep (:data:`QUIET_THREADS`) and as many as :func:`available_cores`. A value the user set is kept."""
    wanted = {**QUIET_THREADS, "OMP_NUM_THREADS": str(available_cores())}
    return {name: os.environ.get(name, value) for name, value in wanted.items()}
