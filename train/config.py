"""Training and sampling options as typed, validated records; light to import (no torch), so ``occ-train
--help`` and the CLI's defaults come from here."""

from __future__ import annotations

import math
from dataclasses import dataclass

from occnet.runtime.contract import DEVICES, Architecture
from occnet.runtime.errors import InputError

DEFAULT_EPOCHS = 200
"""Epochs of a default run: counted work, so the same inputs give the same model on any machine. Chosen on the
quality suite by its worst shape (benchmarks/bench_quality.py; the README has the table)."""


@dataclass(frozen=True)
class TrainConfig:
    """Training options. The network defaults to the seed's (64 wide, 4 hidden layers). A run is a function
    of its data, these options and the seed, never of the machine's load: it trains ``epochs`` epochs (the
    learning-rate schedule fitted to them). ``patience`` (off by default) stops it sooner after that many
    epochs without a better validation loss in the second half of the schedule: on the quality suite a
    patience of 15 ended the runs measured at epoch 102-104 of 200, before the learning rate had decayed,
    and left floaters (5 components instead of 1 on the embossed letters). A finite
    ``time_budget`` (seconds, sampling included) is opt-in: it lowers ``epochs`` once, before training, to
    what fits (see :func:`~occnet.train.trainer.plan_epochs`). ``threads`` are
    PyTorch's CPU threads: the weights depend on their number (float sums split differently), so it is an
    option of the run. One is the fastest for the seed's network on 2 cores, quiet (0.27 s an epoch against
    0.49 s for two sleeping threads) or beside 4 busy processes (0.75 s against 3.0 s); wider networks gain
    from more (256 wide: 2.65 s against 1.8 s for two)."""

    epochs: int = DEFAULT_EPOCHS
    batch_size: int = 1024
    lr: float = 3e-3
    hidden_size: int = 64
    hidden_layers: int = 4
    encoding: str = "none"
    fourier_features: int = 0
    fourier_scale: float = 0.0
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    time_budget: float = math.inf
    patience: int | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise InputError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"learning rate must be a positive number, got {self.lr}")
        if not 0.0 < self.val_fraction < 1.0:
            raise InputError(f"val fraction must lie strictly between 0 and 1, got {self.val_fraction}")
        if self.device not in DEVICES:
            raise InputError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if not self.time_budget > 0:                # inf: no budget; NaN is refused too
            raise InputError(f"time budget must be a positive number of seconds, got {self.time_budget}")
        if self.patience is not None and self.patience < 1:
            raise InputError(f"patience must be >= 1, got {self.patience}")
        if self.threads < 1:
            raise InputError(f"threads must be >= 1, got {self.threads}")
        if not 0 <= self.seed < 2**63:
            raise InputError(f"seed must lie in 0..2**63-1, got {self.seed}")
        try:
            _ = self.architecture
        except ValueError as exc:
            raise InputError(str(exc)) from None

    @property
    def architecture(self) -> Architecture:
        return Architecture(self.hidden_size, self.hidden_layers, self.encoding, self.fourier_features,
                            self.fourier_scale)


@dataclass(frozen=True)
class SamplingConfig:
    """How many points to draw and where. ``padding`` and ``near_sigma`` are fractions of the longest side."""

    num_points: int = 100_000
    near_fraction: float = 0.5
    near_sigma: float = 0.01
    padding: float = 0.05

    def __post_init__(self) -> None:
        if self.num_points < 100:
            raise InputError(f"num points must be >= 100, got {self.num_points}")
        if not 0.0 <= self.near_fraction <= 1.0:
            raise InputError(f"near fraction must lie in [0, 1], got {self.near_fraction}")
        if not (0 < self.near_sigma < math.inf and 0 <= self.padding < math.inf):
            raise InputError(f"near sigma must be a finite number > 0 and padding one >= 0, got "
                             f"{self.near_sigma} and {self.padding}")


TRAIN_DEFAULTS = TrainConfig()
SAMPLING_DEFAULTS = SamplingConfig()
