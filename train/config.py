"""Training and sampling options as typed, validated records; light to import (no torch), so ``occ-train
--help`` and the CLI's defaults come from here."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from occnet.runtime.checks import check_choice, check_instance, check_integer, check_real
from occnet.runtime.contract import DEVICES, Architecture
from occnet.runtime.errors import InputError
from occnet.runtime.options import make_record, option
from occnet.train.encodings import ENCODINGS, Encoding, Plain, make_encoding

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

    epochs: int = option(DEFAULT_EPOCHS, "Passes over the training points (the schedule is fitted to them); "
                         "with --resume, the total to extend the run to.")
    batch_size: int = option(1024, "Points per optimiser step.")
    lr: float = option(3e-3, "Peak learning rate (warm-up, then cosine decay).")
    hidden_size: int = option(64, "Width of the hidden layers.")
    hidden_layers: int = option(4, "Hidden layers after the input layer.")
    encoding: Encoding = option(Plain(), "Input encoding of the points; each takes its own --ENCODING-* options.",
                                choices=tuple(ENCODINGS))
    val_fraction: float = option(0.2, "Share of points held out for validation.")
    seed: int = option(0, "Seed for sampling, split, initialisation and shuffling (>= 0).")
    device: str = option("auto", "auto uses CUDA when PyTorch sees a GPU.", choices=DEVICES)
    time_budget: float = option(math.inf, "Seconds for sampling and training (default inf: none): lowers "
                                "--epochs, before training, to the epochs that fit; the run reports them, so "
                                "--epochs repeats it on any machine.")
    patience: int | None = option(None, "Stop after this many epochs without a better validation loss, in the "
                                  "schedule's second half (default: off).")
    threads: int = option(1, "PyTorch CPU threads, at most the cores this process may use; the weights depend "
                          "on the number (1 is fastest for the default network).")

    def __post_init__(self) -> None:
        checked = {
            "epochs": check_integer("epochs", self.epochs, 1),
            "batch_size": check_integer("batch size", self.batch_size, 1),
            "lr": check_real("learning rate", self.lr, above=0),
            "hidden_size": check_integer("hidden size", self.hidden_size, 1),
            "hidden_layers": check_integer("hidden layers", self.hidden_layers, 1),
            "encoding": check_instance("encoding", self.encoding, Encoding),
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
        return Architecture(self.hidden_size, self.hidden_layers, self.encoding.name, self.encoding.options())

    def to_dict(self) -> dict:
        """The options as plain values, as checkpoints record them: the encoding as its name and its options
        prefixed with it (``"encoding": "fourier", "fourier_features": 32``), as in the architecture's record."""
        record = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "encoding"}
        return {**record, **self.architecture.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output (format 1's too); ``ValueError`` or ``InputError`` naming an
        unknown or bad field."""
        own = {f.name for f in fields(cls)} - {"hidden_size", "hidden_layers", "encoding"}
        arch = Architecture.from_dict({key: value for key, value in data.items() if key not in own})
        return cls(**{key: value for key, value in data.items() if key in own}, hidden_size=arch.hidden_size,
                   hidden_layers=arch.hidden_layers, encoding=make_encoding(arch.encoding, arch.encoding_options))


@dataclass(frozen=True)
class SamplingConfig:
    """How many points to draw and where. ``padding`` and ``near_sigma`` are fractions of the longest side."""

    num_points: int = option(100_000, "Points to sample from a mesh or the demo.")
    near_fraction: float = option(0.5, "Share of sampled points drawn near the surface.")
    near_sigma: float = option(0.01, "Spread of near-surface points, x longest side.")
    padding: float = option(0.05, "Margin of the sampled box around a mesh, x longest side.")

    def __post_init__(self) -> None:
        checked = {"num_points": check_integer("num points", self.num_points, 100),
                   "near_fraction": check_real("near fraction", self.near_fraction, at_least=0),
                   "near_sigma": check_real("near sigma", self.near_sigma, above=0),
                   "padding": check_real("padding", self.padding, at_least=0)}
        if checked["near_fraction"] > 1:
            raise InputError(f"near fraction must lie in [0, 1], got {self.near_fraction!r}")
        for name, value in checked.items():
            object.__setattr__(self, name, value)


CONDITIONAL_SIZES = {"small": (64, 64, 64), "onet": (512, 512, 256)}
"""A conditional network's sizes by name, ``(c_dim, encoder width, decoder width)``: ``small`` trains on a CPU
(about 2 steps a second on one core); ``onet`` is ONet's released point-cloud model (10.4 M parameters: a
GPU's work). The voxel condition takes the voxel encoder at the same code and decoder sizes."""


@dataclass(frozen=True)
class ConditionalConfig:
    """Training a conditional model on a collection (:mod:`occnet.train.conditional`): ONet's recipe at a CPU's
    size by default. ``epochs``, ``lr``, ``seed`` and ``threads`` are occ-train's own options (their defaults
    here are this recipe's). The learning rate is 1e-3, not ONet's 1e-4 (its GPU-sized model's), decaying
    along half a cosine over the epochs (:func:`~occnet.train.conditional.learning_rate`): on the synthetic
    collection the small model reached test IoU 0.674 in 30 minutes at a constant 1e-4, 0.796 at a constant
    1e-3 and 0.828 with the decay (``benchmarks/bench_conditional.py``)."""

    condition: str = option("pointcloud", "Collections: what the model reconstructs from.",
                            choices=("pointcloud", "voxels"))
    size: str = option("small", "Collections: small (CPU) or onet (ONet's 10.4 M, a GPU's work).",
                       choices=tuple(CONDITIONAL_SIZES))
    epochs: int = 50
    steps_per_epoch: int = option(50, "Collections: optimiser steps between validations.")
    batch_shapes: int = option(16, "Collections: shapes per step.")
    points_per_shape: int = option(2048, "Collections: query points per shape and step (ONet: 2048).")
    cloud_points: int = option(300, "Collections: points of an input cloud (ONet: 300).")
    cloud_noise: float = option(0.005, "Collections: noise of an input cloud (ONet: 0.005).")
    lr: float = 1e-3
    threshold: float = option(0.2, "Collections: probability of the surface, for selection and meshing.")
    val_points: int = option(4096, "Collections: query points per validation shape.")
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        check_choice("condition", self.condition, ("pointcloud", "voxels"))
        check_choice("size", self.size, tuple(CONDITIONAL_SIZES))
        for name in ("epochs", "steps_per_epoch", "batch_shapes", "points_per_shape", "cloud_points", "val_points",
                     "threads"):
            object.__setattr__(self, name, check_integer(name.replace("_", " "), getattr(self, name), 1))
        object.__setattr__(self, "seed", check_integer("seed", self.seed, 0, 2**63 - 1))
        object.__setattr__(self, "cloud_noise", check_real("cloud noise", self.cloud_noise, at_least=0))
        object.__setattr__(self, "lr", check_real("learning rate", self.lr, above=0))
        object.__setattr__(self, "threshold", check_real("threshold", self.threshold, above=0, below=1))

    @property
    def architecture(self):
        """The network's :class:`~occnet.train.onet.OnetArchitecture` (imported here: this module stays light)."""
        from occnet.train.onet import OnetArchitecture

        c_dim, width, hidden = CONDITIONAL_SIZES[self.size]
        if self.condition == "voxels":
            return OnetArchitecture("voxel_simple", c_dim, 512, hidden)
        return OnetArchitecture("pointnet_resnet", c_dim, width, hidden)


def training_records(values: dict) -> tuple[TrainConfig, SamplingConfig]:
    """The training and sampling records from a command's option values (see :func:`encoding_options`); only
    the chosen encoding's options count."""
    kind = ENCODINGS[getattr(values["encoding"], "value", values["encoding"])]      # an Enum member from typer
    return make_record(TrainConfig, values, encoding=make_record(kind, values)), make_record(SamplingConfig, values)


def encoding_options() -> tuple[type, ...]:
    """The registered encodings' records, whose options ``occ-train`` and ``occ-batch`` take as
    ``--NAME-OPTION`` (:func:`~occnet.runtime.options.with_options`)."""
    return tuple(ENCODINGS.values())


TRAIN_DEFAULTS = TrainConfig()
SAMPLING_DEFAULTS = SamplingConfig()
