"""Command-line plumbing shared by occnet's commands: one-line errors, exit codes, progress on stderr."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from enum import Enum

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from occnet.runtime.contract import DEVICES
from occnet.runtime.errors import OccNetError

Device = Enum("Device", {name: name for name in DEVICES}, type=str)
"""``--device`` choices for every command."""

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

stderr = Console(stderr=True, highlight=False)

# Newer typer vendors click (typer._click), older typer uses click itself: reach its ClickException
# (usage errors, bad option values) through a public name either way.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def fail(prog: str, message: str, code: int = EXIT_ERROR) -> None:
    """Print ``prog: error: message`` as one line on stderr and exit with ``code``."""
    first = " ".join(str(message).split()) or "unknown error"
    sys.stderr.write(f"{prog}: error: {first}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def run_app(app: typer.Typer, prog: str, args: list[str] | None = None) -> None:
    """Run a typer app so that every error a user can cause ends as one line and a non-zero exit."""
    command = typer.main.get_command(app)
    try:
        command.main(args=args, prog_name=prog, standalone_mode=False)
    except OccNetError as exc:
        fail(prog, str(exc))
    except (typer.Abort, KeyboardInterrupt):
        fail(prog, "interrupted", EXIT_INTERRUPTED)
    except _ClickException as exc:
        fail(prog, exc.format_message(), EXIT_USAGE)
    except MemoryError:
        fail(prog, "out of memory; try a smaller size")


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr; yields ``update(completed)``. Silent when stderr is not a terminal."""
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,}"),
               TimeElapsedColumn()]
    with Progress(*columns, console=stderr, transient=True, disable=not stderr.is_terminal) as bar:
        task = bar.add_task(description, total=total)
        yield lambda completed: bar.update(task, completed=completed)
