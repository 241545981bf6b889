"""The training options of the command line, shared by ``occ-train`` and ``occ-batch``: one typed alias per
option (help text in one place) and :func:`configs`, which turns a command's values into the typed records."""

from __future__ import annotations

from dataclasses import fields
from enum import Enum
from typing import Annotated, Optional

import typer

from occnet.runtime.console import Device
from occnet.runtime.contract import ENCODINGS
from occnet.train.config import SamplingConfig, TrainConfig

Encoding = Enum("Encoding", {name: name for name in ENCODINGS}, type=str)

Epochs = Annotated[int, typer.Option(help="Passes over the training points (the schedule is fitted to them); "
                                     "with --resume, the total to extend the run to.")]
BatchSize = Annotated[int, typer.Option(help="Points per optimiser step.")]
LearningRate = Annotated[float, typer.Option(help="Peak learning rate (warm-up, then cosine decay).")]
HiddenSize = Annotated[int, typer.Option(help="Width of the hidden layers.")]
HiddenLayers = Annotated[int, typer.Option(help="Hidden layers after the input layer.")]
EncodingOption = Annotated[Encoding, typer.Option(help="Input encoding: none, or fourier features.")]
FourierFeatures = Annotated[int, typer.Option(help="fourier: number of random frequencies.")]
FourierScale = Annotated[float, typer.Option(help="fourier: frequency spread (cycles per box).")]
ValFraction = Annotated[float, typer.Option(help="Share of points held out for validation.")]
NumPoints = Annotated[int, typer.Option(help="Points to sample from a mesh or the demo.")]
NearFraction = Annotated[float, typer.Option(help="Share of sampled points drawn near the surface.")]
NearSigma = Annotated[float, typer.Option(help="Spread of near-surface points, x longest side.")]
Seed = Annotated[int, typer.Option(help="Seed for sampling, split, initialisation and shuffling (>= 0).")]
TrainDevice = Annotated[Device, typer.Option(help="auto uses CUDA when PyTorch sees a GPU.")]
TimeBudget = Annotated[float, typer.Option(help="Seconds for sampling and training (default inf: none): "
                                           "lowers --epochs, before training, to the epochs that fit; the run "
                                           "reports them, so --epochs repeats it on any machine.")]
Threads = Annotated[int, typer.Option(help="PyTorch CPU threads, at most the cores this process may use; the "
                                      "weights depend on the number (1 is fastest for the default network).")]
Patience = Annotated[Optional[int], typer.Option(help="Stop after this many epochs without a better validation "
                                                 "loss, in the schedule's second half (default: off).")]


def configs(values: dict) -> tuple[TrainConfig, SamplingConfig]:
    """The training and sampling records from a command's option values (``typer.Context.params``; a field
    the command has no option for keeps its default); the Fourier options count only with ``--encoding
    fourier``."""
    plain = {name: value.value if isinstance(value, Enum) else value for name, value in values.items()}
    if plain["encoding"] != "fourier":
        plain["fourier_features"], plain["fourier_scale"] = 0, 0.0
    return (TrainConfig(**{f.name: plain[f.name] for f in fields(TrainConfig) if f.name in plain}),
            SamplingConfig(**{f.name: plain[f.name] for f in fields(SamplingConfig) if f.name in plain}))
