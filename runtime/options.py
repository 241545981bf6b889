"""Command-line options declared once, on the typed records they fill.

A record's field holds an option's type, default and (in ``__post_init__``) validation; :func:`option` adds
its help and, for a choice, the allowed values. :func:`with_options` turns record fields into a typer
command's options and :func:`make_record` turns the command's values back into records, so ``occ-train``,
``occ-batch`` and ``occ-mesh`` share each option's declaration with each other and with the Python API,
which builds the records directly.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Annotated, Any

_HELP, _CHOICES, _FLAG, _CLI_DEFAULT = "help", "choices", "flag", "cli_default"


def option(default: Any, help: str, *, choices: tuple[str, ...] | None = None, flag: str | None = None,
           cli_default: Any = dataclasses.MISSING) -> Any:
    """A record field that is also a command-line option: ``help`` for ``--help``, ``choices`` for a string
    that must be one of them (validated by the record), ``flag`` where the option's name is not the field's
    (``--format`` for ``mesh_format``), ``cli_default`` where the command's default is not the record's."""
    return dataclasses.field(default=default, metadata={_HELP: help, _CHOICES: choices, _FLAG: flag,
                                                        _CLI_DEFAULT: cli_default})


def with_options(*records: type, only: Iterable[str] | None = None,
                 exclude: Iterable[str] = ()) -> Callable[[Callable], Callable]:
    """Decorate a typer command whose signature ends in ``**options``: one option per field of ``records``
    declared with :func:`option` (those named in ``only`` where given, none named in ``exclude``), in the
    records' order, each passed in ``options`` under its field's name, prefixed by the record's
    ``option_prefix`` where it has one (``fourier_features``, ``--fourier-features``)."""
    only, exclude = (None if only is None else set(only)), set(exclude)

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)
        params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        for record in records:
            hints = typing.get_type_hints(record)
            for f in dataclasses.fields(record):
                if _HELP in f.metadata and (only is None or f.name in only) and f.name not in exclude:
                    params.append(_parameter(f, hints[f.name], _prefix(record)))
        command.__signature__ = signature.replace(parameters=params)
        return command

    return decorate


def make_record(record: type, values: dict, only: Iterable[str] | None = None, **given: Any) -> Any:
    """A ``record`` from a command's option values (``typer.Context.params``, under the names
    :func:`with_options` gave them; choices arrive as members of an Enum), those named in ``only`` where
    given, and ``given`` fields; a field the command has no option for keeps the record's default."""
    prefix = _prefix(record)
    plain = {name: value.value if isinstance(value, Enum) else value for name, value in values.items()}
    names = {f.name for f in dataclasses.fields(record)} - set(given)
    names &= {name for name in names if prefix + name in plain} if only is None else set(only)
    return record(**{name: plain[prefix + name] for name in names}, **given)


def _prefix(record: type) -> str:
    prefix = getattr(record, "option_prefix", "")
    return prefix + "_" if prefix else ""


def _parameter(f: dataclasses.Field, kind: Any, prefix: str) -> inspect.Parameter:
    import typer  # here, not at the top: the records import this module, the library too

    meta = f.metadata
    default = f.default if meta[_CLI_DEFAULT] is dataclasses.MISSING else meta[_CLI_DEFAULT]
    if meta[_CHOICES]:                        # typer lists and checks the values of an Enum
        kind = Enum(f.name.title().replace("_", ""), {name: name for name in meta[_CHOICES]}, type=str)
        default = kind(getattr(default, "name", default))   # a record chosen by name (an encoding) or a name
    decls = (meta[_FLAG],) if meta[_FLAG] else ()
    return inspect.Parameter(prefix + f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[kind, typer.Option(*decls, help=meta[_HELP])])
