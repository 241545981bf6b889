"""Input encodings of the occupancy MLP, registered by name.

An encoding is one record class here: its fields are its options (declared with
:func:`~occnet.runtime.options.option`, so ``occ-train`` and ``occ-batch`` get ``--NAME-FIELD`` options), its
``__post_init__`` validates them, and :meth:`Encoding.buffers` and :meth:`Encoding.encode` compute it.
``@register`` adds it to :data:`ENCODINGS`; the command line's ``--encoding`` choices, the checkpoint, the ONNX
metadata and rebuilding a network from either follow from the registry.

Light to import (PyTorch is imported where features are computed), so ``--help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from occnet.runtime.checks import check_integer, check_real
from occnet.runtime.errors import InputError
from occnet.runtime.options import option

if TYPE_CHECKING:
    import torch


class Encoding:
    """Base of the encodings: maps points normalised to the cube ``[-1, 1]`` to the MLP's input features."""

    name: ClassVar[str]
    option_prefix: ClassVar[str]
    """Prefix of the command-line options (``fourier`` for ``--fourier-features``): the encoding's name."""

    def width(self) -> int:
        """Features per point, the 3 coordinates included."""
        return 3

    def buffers(self, seed: int) -> dict[str, torch.Tensor]:
        """Fixed tensors the encoding needs, made from ``seed``; saved with the weights as buffers named
        ``{name}_{key}`` and exported as constants."""
        return {}

    def encode(self, x: torch.Tensor, buffers: dict[str, torch.Tensor]) -> torch.Tensor:
        """``x (N, 3) float32`` normalised points -> ``(N, width) float32`` features."""
        return x

    def options(self) -> dict[str, int | float]:
        """The options by field name, as :class:`~occnet.runtime.contract.Architecture` records them."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


ENCODINGS: dict[str, type[Encoding]] = {}
"""Every encoding by name, in the order registered (the first is the default)."""


def register(cls: type[Encoding]) -> type[Encoding]:
    """Class decorator adding a frozen dataclass ``cls`` to :data:`ENCODINGS` under ``cls.name``."""
    if not cls.name.isidentifier() or cls.name in ENCODINGS:
        raise ValueError(f"encoding name {cls.name!r} is not a new identifier")
    cls.option_prefix = cls.name
    ENCODINGS[cls.name] = cls
    return cls


def make_encoding(name: str, options: dict) -> Encoding:
    """The encoding ``name`` with ``options`` (field name -> value), validated; ``InputError`` naming an
    unknown encoding or option."""
    kind = ENCODINGS.get(name)
    if kind is None:
        raise InputError(f"unknown encoding {name!r}; expected one of {', '.join(ENCODINGS)}")
    unknown = set(options) - {f.name for f in dataclasses.fields(kind)}
    if unknown:
        raise InputError(f"encoding {name} has no option {', '.join(sorted(unknown))}")
    return kind(**options)


@register
@dataclass(frozen=True)
class Plain(Encoding):
    """The coordinates as they are: the seed's network."""

    name = "none"


@register
@dataclass(frozen=True)
class Fourier(Encoding):
    """The coordinates and ``sin``/``cos`` of ``features`` random projections of them (Tancik et al. 2020,
    "Fourier features let networks learn high frequency functions"): frequencies drawn from a normal
    distribution of standard deviation ``scale`` cycles across the normalised box (side 2), fixed by the seed."""

    name = "fourier"
    features: int = option(32, "fourier: number of random frequencies.")
    scale: float = option(2.0, "fourier: frequency spread (cycles per box).")

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", check_integer("fourier features", self.features, 1, 1024))
        object.__setattr__(self, "scale", check_real("fourier scale", self.scale, above=0))

    def width(self) -> int:
        return 3 + 2 * self.features

    def buffers(self, seed: int) -> dict[str, torch.Tensor]:
        import torch

        generator = torch.Generator().manual_seed(seed)
        basis = torch.randn(3, self.features, generator=generator) * self.scale
        return {"basis": basis * (2 * math.pi)}

    def encode(self, x: torch.Tensor, buffers: dict[str, torch.Tensor]) -> torch.Tensor:
        import torch

        projected = x @ buffers["basis"]
        return torch.cat([x, torch.sin(projected), torch.cos(projected)], dim=1)
