"""Checks of option values for the typed records (``MeshSettings``, ``TrainConfig``, ``BatchSettings``): a
wrong type or range is one :class:`InputError` line naming the field, raised where the record is made, not
later by whatever code first trips on the value (numpy, onnxruntime, PyTorch). Each returns the value as a
plain Python number, so that numpy scalars pass and records print and serialise plainly."""

from __future__ import annotations

import math
import numbers

from occnet.runtime.errors import InputError


def check_integer(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an ``int``: an integer (Python's or numpy's; not a bool, not a whole float) in
    ``minimum..maximum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum or \
            (maximum is not None and value > maximum):
        wanted = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise InputError(f"{name} must be an integer {wanted}, got {value!r}")
    return int(value)


def check_real(name: str, value: object, *, above: float | None = None, at_least: float | None = None,
               below: float | None = None, finite: bool = True) -> float:
    """``value`` as a ``float``: a real number (not a bool, not a string), finite unless ``finite=False``
    (infinity allowed, NaN never), ``> above``, ``>= at_least`` and ``< below`` where given."""
    wanted = [f"{relation} {bound:g}" for relation, bound in ((">", above), (">=", at_least), ("<", below))
              if bound is not None]
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and not math.isnan(value) and \
        (math.isfinite(value) or not finite) and (above is None or value > above) and \
        (at_least is None or value >= at_least) and (below is None or value < below)
    if not ok:
        raise InputError(f"{name} must be a {'finite ' if finite else ''}number {' and '.join(wanted)}".rstrip()
                         + f", got {value!r}")
    return float(value)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """``value``, one of the strings ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_instance(name: str, value: object, kind: type):
    """``value``, an instance of ``kind``."""
    if not isinstance(value, kind):
        article = "an" if kind.__name__[0] in "AEIOU" else "a"
        raise InputError(f"{name} must be {article} {kind.__name__}, got {type(value).__name__}")
    return value
