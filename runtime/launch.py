"""The console scripts' entry points: Ctrl-C and SIGTERM are handled from the first moment, then the command's
module is loaded and run.

The command modules import typer, and their commands import PyTorch, onnx or onnxruntime: a signal during
those imports, before :func:`~occnet.runtime.console.run_app` had installed its handlers, was a traceback.
Here the handlers come first (this module imports nothing heavy) and the command module is named by string,
so the torch-free runtime does not depend on the layers above it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys

from occnet.runtime import signals


def launch(prog: str, target: str) -> None:
    """Import ``target`` (``"module:function"``) with the signal handlers in place, call it, and end the
    process with its status while they are still in place. A signal during the import ends it as ``prog:
    error: interrupted`` with 128 + its number.

    The process ends by ``os._exit`` once the command is done and its output flushed: the interpreter's
    teardown (0.3 s with PyTorch loaded) had no handlers left, and a Ctrl-C landing there killed a
    command that had finished and reported its work, with no line. The commands write every file atomically
    and close what they open, so there is nothing left for the teardown to do."""
    module, function = target.split(":")
    with signals.handled():
        try:
            try:
                getattr(importlib.import_module(module), function)()
            except KeyboardInterrupt:                   # in the import, or anywhere the command let one out
                from occnet.runtime.console import fail

                fail(prog, "interrupted", signals.EXIT_SIGNAL_BASE + (signals.received() or signal.SIGINT))
            status = 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError):          # a reader that went away (| head) has all it wanted
                stream.flush()
        os._exit(status)


def occ_train() -> None:
    launch("occ-train", "occnet.train.cli:train_main")


def occ_export() -> None:
    launch("occ-export", "occnet.export.cli:export_main")


def occ_mesh() -> None:
    launch("occ-mesh", "occnet.runtime.cli:mesh_main")


def occ_eval() -> None:
    launch("occ-eval", "occnet.runtime.evalcli:eval_main")


def occ_batch() -> None:
    launch("occ-batch", "occnet.batch.cli:batch_main")
