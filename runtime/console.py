"""Command-line plumbing shared by occnet's commands: one-line errors, exit codes, progress on stderr."""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from enum import Enum

import typer

from occnet.runtime import signals
from occnet.runtime.contract import DEVICES
from occnet.runtime.errors import OccNetError
from occnet.runtime.machine import thread_environment

Device = Enum("Device", {name: name for name in DEVICES}, type=str)
"""``--device`` choices for every command."""

EXIT_ERROR = 1
EXIT_USAGE = 2
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# Newer typer vendors click (typer._click), older typer uses click itself: reach its ClickException
# (usage errors, bad option values) through a public name either way.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class Interrupted(Exception):
    """Raised by a command that caught an interruption and has something to add (e.g. how to resume).

    Not a ``KeyboardInterrupt``: typer would turn that into a bare exit status and drop the message.
    """


def fail(prog: str, message: str, code: int = EXIT_ERROR) -> None:
    """Print ``prog: error: message`` as one line on stderr (no colour codes) and exit with ``code``."""
    first = " ".join(_ANSI.sub("", str(message)).split()) or "unknown error"
    sys.stderr.write(f"{prog}: error: {first}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def run_app(app: typer.Typer, prog: str, args: list[str] | None = None, extra: str = "",
            needs: tuple[str, ...] = ()) -> None:
    """Run a typer app so that every error a user can cause ends as one line and a non-zero exit, and an
    interruption (Ctrl-C, SIGTERM) as ``interrupted`` with 128 + the signal number, whatever the libraries
    in between made of it.

    ``needs`` are modules of the optional ``extra`` the command cannot start without; they are imported
    here, after the signal handlers, so that a missing one is one line naming the extra and a Ctrl-C during
    their (seconds-long) import is an interruption like any other. Before any of them loads, the process
    takes :func:`~occnet.runtime.machine.thread_environment`: thread pools that sleep when idle, sized to the
    cores it may use, so a busy machine slows the command by its fair share and no more.
    """
    os.environ.update(thread_environment())
    with signals.handled():
        _run(app, prog, args, extra, needs)


def _run(app: typer.Typer, prog: str, args: list[str] | None, extra: str, needs: tuple[str, ...]) -> None:
    """:func:`run_app` with the signal handlers in place."""
    detail, error, code, interrupted = "", None, EXIT_ERROR, False
    try:
        command = typer.main.get_command(app)          # inside: a Ctrl-C can land while typer builds it
        for module in needs:
            importlib.import_module(module)
        # typer turns a KeyboardInterrupt into a returned 130 under standalone_mode=False
        returned = command.main(args=args, prog_name=prog, standalone_mode=False)
        interrupted = returned == signals.EXIT_SIGNAL_BASE + signal.SIGINT
    except Interrupted as exc:
        detail, interrupted = str(exc), True
    except KeyboardInterrupt:
        interrupted = True
    except OccNetError as exc:
        error = str(exc)
    except ModuleNotFoundError as exc:
        if exc.name not in needs:
            raise
        error = f"{exc.name} is not installed; {prog} needs the {extra} extra: pip install 'occnet[{extra}]'"
    except _ClickException as exc:
        error, code = exc.format_message(), EXIT_USAGE
    except MemoryError:
        error = "out of memory; try a smaller size"
    received = signals.received()
    if interrupted or received is not None:
        signum = received if received is not None else signal.SIGINT
        fail(prog, "interrupted" + (f"; {detail}" if detail else ""), signals.EXIT_SIGNAL_BASE + signum)
    if error is not None:
        fail(prog, error, code)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr; yields ``update(completed)``. Silent when stderr is not a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    stderr = Console(stderr=True, highlight=False)
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,}"),
               TimeElapsedColumn()]
    with Progress(*columns, console=stderr, transient=True, disable=not stderr.is_terminal) as bar:
        task = bar.add_task(description, total=total)
        yield lambda completed: bar.update(task, completed=completed)
