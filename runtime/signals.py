"""Ctrl-C and SIGTERM as one event: the commands install the handlers; atomic writes refuse to commit after one.

Libraries in the call stack (the ONNX exporter, onnxruntime, typer) sometimes catch ``KeyboardInterrupt``
and turn it into an error of their own, or swallow it. Recording the signal here lets the command report an
interruption as one whatever came out of the stack, and lets :func:`occnet.runtime.files.atomic_path` refuse
to rename a file into place after one.

A signal that arrives while a module is being imported is held until the import is over: an exception
raised inside an import leaves half-initialised modules behind (numpy's then recursed forever in its own
``__getattr__``; onnxruntime's extension failed with "initialization failed"), and the traceback that
followed replaced the one-line "interrupted". Imports take seconds at most, so the command still stops.
One that lands where Python cannot raise (a finaliser) is raised again a moment later.

A signal the process was started with ignored (``cmd &`` in a script, ``trap '' INT``) stays ignored: the
parent asked for that, and the process would otherwise obey it before the handlers are in place and not after.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM)
EXIT_SIGNAL_BASE = 128
"""An interrupted command exits with 128 + the signal number: 130 for Ctrl-C, 143 for SIGTERM."""
POLL_SECONDS = 0.05
"""How often a signal held during an import looks again whether the import is over, should the profile hook
that watches for its end miss it."""
IMPORT_MACHINERY = ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>")
_received: int | None = None
_ignored: tuple[int, ...] = ()
"""The signals the outermost :func:`handled` block found ignored: they stay so in every block."""
_depth = 0
_holding = 0
"""Depth of :func:`uninterrupted` blocks running: a signal then is recorded and raised when they end."""
_returned = None
"""The import frame whose return the profile hook saw: over, although still on the stack for a moment."""


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """For the block: SIGINT and SIGTERM raise ``KeyboardInterrupt`` once (cleanup runs; held during imports)
    and are remembered. The handlers and the record are the process's own again after the block: a library
    call after an interrupted command starts clean. Nested blocks share the outermost one's record. A signal
    ignored when the outermost block starts stays ignored."""
    global _received, _ignored, _depth, _returned
    saved = {signum: signal.getsignal(signum) for signum in (*HANDLED, signal.SIGALRM)}
    saved_hook, saved_profile = sys.unraisablehook, sys.getprofile()
    if _depth == 0:
        _received = None
        _ignored = tuple(signum for signum in HANDLED if saved[signum] == signal.SIG_IGN)
    _depth += 1
    try:
        for signum in HANDLED:
            signal.signal(signum, signal.SIG_IGN if signum in _ignored else _handle)
        signal.signal(signal.SIGALRM, _retry)
        sys.unraisablehook = _unraisable(saved_hook)
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            signal.setitimer(signal.ITIMER_REAL, 0)
            _received, _returned = None, None
        sys.unraisablehook = saved_hook
        sys.setprofile(saved_profile)
        for signum, handler in saved.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Run the block to its end: a SIGINT or SIGTERM that arrives during it is raised as ``KeyboardInterrupt``
    when it ends. For C code that works on threads of its own behind an interruptible join (scipy's KD-tree
    query with ``workers``): an interrupt in the join let the main thread free the arrays those threads were
    still reading, and occ-eval died by SIGSEGV. Outside a command it installs the handlers for the block;
    off the main thread, where no signal is raised, it does nothing."""
    global _holding
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with handled():
        _holding += 1
        try:
            yield
        finally:
            _holding -= 1
        if _holding == 0 and _received is not None:
            raise KeyboardInterrupt


def received() -> int | None:
    """The first signal received in the outermost :func:`handled` block running, or None."""
    return _received


def raise_if_received() -> None:
    """Raise ``KeyboardInterrupt`` if a signal came, even if someone swallowed the first one."""
    if _received is not None:
        raise KeyboardInterrupt


def _handle(signum: int, frame) -> None:
    global _received
    if _received is None:              # a second signal during cleanup must not cut the cleanup short
        _received = signum
        if not _holding:
            _raise_unless_importing(frame)


def _retry(signum: int, frame) -> None:
    """SIGALRM, armed by a signal held during an import or swallowed where it landed: raise it again."""
    if _received is not None and not _holding:
        _raise_unless_importing(frame)


def _unraisable(default):
    """A ``sys.unraisablehook`` for the block: our ``KeyboardInterrupt`` raised where Python cannot let an
    exception out (a finaliser, a callback from C) would be printed as "Exception ignored" and lost; it is
    raised again a moment later instead. Anything else goes to ``default``."""

    def hook(unraisable) -> None:
        if _received is not None and isinstance(unraisable.exc_value, KeyboardInterrupt):
            signal.setitimer(signal.ITIMER_REAL, POLL_SECONDS)
        else:
            default(unraisable)

    return hook


def _raise_unless_importing(frame) -> None:
    """Raise ``KeyboardInterrupt`` in the interrupted code, or, while a frame of the interrupted stack belongs
    to the import machinery, raise it as the outermost import returns (a profile hook watches for that
    return, and a timer looks again every ``POLL_SECONDS`` should the hook miss it)."""
    outermost = None
    while frame is not None:
        if frame.f_code.co_filename in IMPORT_MACHINERY and frame is not _returned:
            outermost = frame
        frame = frame.f_back
    if outermost is None:
        raise KeyboardInterrupt
    sys.setprofile(_on_return_from(outermost))
    signal.setitimer(signal.ITIMER_REAL, POLL_SECONDS)


def _on_return_from(import_frame):
    """A profile hook that fires the SIGALRM timer at once when ``import_frame`` returns, then removes itself.
    The frame is still on the stack while it returns, so it is marked as over (``_returned``)."""

    def hook(frame, event, arg) -> None:
        global _returned
        if frame is import_frame and event == "return":
            sys.setprofile(None)
            _returned = import_frame
            signal.setitimer(signal.ITIMER_REAL, 1e-6)

    return hook
