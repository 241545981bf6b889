"""What this machine can give a command: memory still available and cores this process may use, and the
thread policy that keeps a command's thread pools from fighting other work for them.

Commands check their estimated needs against these before any work, so an impossible request is refused in
one line instead of being killed by the kernel or oversubscribing the CPU.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
"""cgroup v2's CPU quota of this container: ``"QUOTA PERIOD"`` in microseconds, or ``"max PERIOD"``."""
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")

QUIET_THREADS = {"OMP_WAIT_POLICY": "PASSIVE"}
"""Environment for the OpenMP runtime under PyTorch (GNU libgomp; MKL and oneDNN run on it): idle threads
sleep instead of spinning. Spinning threads fight other busy processes for the cores they wait on: with 4
CPU hogs on 2 cores an epoch took 20-38 s spinning against 0.55-1.0 s passive (a fair share is ~3x the quiet
0.3 s). Read once, when the library loads, so it must be set before ``import torch``."""


def available_bytes() -> int | None:
    """Memory the process can still take (Linux ``MemAvailable``), or None where unknown."""
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
