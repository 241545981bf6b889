"""Training and sampling options as typed, validated records; light to import (no torch), so ``occ-train
--help`` and the CLI's defaults come from here."""

from __future__ import annotations

import math
from dataclasses import dataclass

from occnet.runtime.checks import check_choice, check_integer, check_real
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
        checked = {
            "epochs": check_integer("epochs", self.epochs, 1),
            "batch_size": check_integer("batch size", self.batch_size, 1),
            "lr": check_real("learning rate", self.lr, above=0),
            "hidden_size": check_integer("hidden size", self.hidden_size, 1),
            "hidden_layers": check_integer("hidden layers", self.hidden_layers, 1),
            "fourier_features": check_integer("fourier features", self.fourier_features, 0),
            "fourier_scale": check_real("fourier scale", self.fourier_scale, at_least=0),
            "val_fraction": check_real("val fraction", self.val_fraction, above=0, below=1),
            "seed": check_integer("seed", self.seed, 0, 2**63 - 1),
            "device": check_choice("device", self.device, DEVICES),
            "time_budget": check_real("time budget in seconds", self.time_budget, above=0, finite=False),
            "patience": None if self.patience is None else check_integer("patience", self.patience, 1),
            "threads": check_integer("threads", self.threads, 1),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)
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
        checked = {"num_points": check_integer("num points", self.num_points, 100),
                   "near_fraction": check_real("near fraction", self.near_fraction, at_least=0),
                   "near_sigma": check_real("near sigma", self.near_sigma, above=0),
                   "padding": check_real("padding", self.padding, at_least=0)}
        if checked["near_fraction"] > 1:
            raise InputError(f"near fraction must lie in [0, 1], got {self.near_fraction!r}")
        for name, value in checked.items():
            object.__setattr__(self, name, value)


TRAIN_DEFAULTS = TrainConfig()
SAMPLING_DEFAULTS = SamplingConfig()
