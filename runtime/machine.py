"""What this machine can give a command: memory still available and cores this process may use.

Commands check their estimated needs against these before any work, so an impossible request is refused in
one line instead of being killed by the kernel or oversubscribing the CPU.
"""

from __future__ import annotations

import os


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
    """Cores this process may run on (its CPU affinity where the OS tells, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
