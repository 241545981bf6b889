"""Ctrl-C and SIGTERM as one event: the commands install the handlers; atomic writes refuse to commit after one.

Libraries in the call stack (the ONNX exporter, onnxruntime, typer) sometimes catch ``KeyboardInterrupt``
and turn it into an error of their own, or swallow it. Recording the signal here lets the command report an
interruption as one whatever came out of the stack, and lets :func:`occnet.runtime.files.atomic_path` refuse
to rename a file into place after one.
"""

from __future__ import annotations

import signal

HANDLED = (signal.SIGINT, signal.SIGTERM)
_received: int | None = None


def install() -> None:
    """Make SIGINT and SIGTERM raise ``KeyboardInterrupt`` once (cleanup runs) and remember which came."""
    global _received
    _received = None
    for signum in HANDLED:
        signal.signal(signum, _handle)


def received() -> int | None:
    """The first signal received since :func:`install`, or None."""
    return _received


def raise_if_received() -> None:
    """Raise ``KeyboardInterrupt`` if a signal came, even if someone swallowed the first one."""
    if _received is not None:
        raise KeyboardInterrupt


def _handle(signum: int, frame) -> None:
    global _received
    if _received is None:              # a second signal during cleanup must not cut the cleanup short
        _received = signum
        raise KeyboardInterrupt
