"""The ONNX model contract shared by export (writer) and runtime (reader): names, metadata, architecture.

Defined here, torch-free, so that the runtime owns what it reads and the exporter imports it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version

from occnet.runtime.errors import ModelError

FORMAT_VERSION = 1
INPUT_NAME = "points"
OUTPUT_NAME = "logits"
ENCODINGS = ("none", "fourier")
DEVICES = ("auto", "cpu", "cuda")
"""Where the commands run: ``auto`` takes CUDA when it is there and says when it falls back."""


class MetaKey:
    """Keys of the ONNX ``metadata_props`` that occnet writes."""

    FORMAT_VERSION = "occnet.format_version"
    BOUNDS_MIN = "occnet.bounds_min"
    BOUNDS_MAX = "occnet.bounds_max"
    ARCHITECTURE = "occnet.architecture"
    METRICS = "occnet.metrics"
    CHECKPOINT_SHA256 = "occnet.checkpoint_sha256"
    PRODUCER = "occnet.producer"


@dataclass(frozen=True)
class Architecture:
    """The network's shape: enough to rebuild it. ``encoding='fourier'`` adds sin/cos input features."""

    hidden_size: int = 64
    hidden_layers: int = 4
    encoding: str = "none"
    fourier_features: int = 0
    fourier_scale: float = 0.0

    def __post_init__(self) -> None:
        if self.hidden_size < 1 or self.hidden_layers < 1:
            raise ValueError("hidden size and hidden layers must be at least 1")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {self.encoding!r}; expected one of {ENCODINGS}")
        if self.encoding == "fourier" and (self.fourier_features < 1 or self.fourier_scale <= 0):
            raise ValueError("fourier encoding needs fourier_features >= 1 and fourier_scale > 0")

    @classmethod
    def from_dict(cls, data: dict) -> Architecture:
        """Rebuild from :func:`dataclasses.asdict` output; raises ``ValueError`` on unknown or bad fields."""
        if not isinstance(data, dict):
            raise ValueError("architecture is not a mapping")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown architecture fields {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class ModelInfo:
    """Everything the metadata of an occnet ONNX model says. Bounds are world coordinates."""

    bounds_min: tuple[float, float, float]
    bounds_max: tuple[float, float, float]
    architecture: Architecture
    metrics: dict = field(default_factory=dict)
    checkpoint_sha256: str = ""
    producer: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_metadata(self) -> dict[str, str]:
        """Metadata props as strings, ready for ``onnx.helper.set_model_props``."""
        return {
            MetaKey.FORMAT_VERSION: str(self.format_version),
            MetaKey.BOUNDS_MIN: json.dumps(list(self.bounds_min)),
            MetaKey.BOUNDS_MAX: json.dumps(list(self.bounds_max)),
            MetaKey.ARCHITECTURE: json.dumps(asdict(self.architecture), sort_keys=True),
            MetaKey.METRICS: json.dumps(self.metrics, sort_keys=True),
            MetaKey.CHECKPOINT_SHA256: self.checkpoint_sha256,
            MetaKey.PRODUCER: json.dumps(self.producer, sort_keys=True),
        }

    @classmethod
    def from_metadata(cls, props: dict[str, str]) -> ModelInfo:
        """Parse and validate metadata props; raises :class:`ModelError` naming what is wrong."""
        missing = [k for k in (MetaKey.FORMAT_VERSION, MetaKey.BOUNDS_MIN, MetaKey.BOUNDS_MAX,
                               MetaKey.ARCHITECTURE) if k not in props]
        if missing:
            raise ModelError(f"not an occnet model: metadata lacks {', '.join(missing)}")
        try:
            version = int(props[MetaKey.FORMAT_VERSION])
            lo = _vector(json.loads(props[MetaKey.BOUNDS_MIN]))
            hi = _vector(json.loads(props[MetaKey.BOUNDS_MAX]))
            arch = Architecture.from_dict(json.loads(props[MetaKey.ARCHITECTURE]))
            metrics = json.loads(props.get(MetaKey.METRICS, "{}"))
            producer = json.loads(props.get(MetaKey.PRODUCER, "{}"))
        except (ValueError, TypeError) as exc:
            raise ModelError(f"occnet metadata is malformed: {exc}") from None
        if version > FORMAT_VERSION:
            raise ModelError(f"model format version {version} is newer than this occnet reads "
                             f"({FORMAT_VERSION}); upgrade occnet")
        if not all(h > low for low, h in zip(lo, hi)):
            raise ModelError(f"model bounds are empty: min {lo}, max {hi}")
        return cls(lo, hi, arch, metrics, props.get(MetaKey.CHECKPOINT_SHA256, ""), producer, version)


def installed_version(distribution: str) -> str:
    """The installed version of a distribution, for the producer records of checkpoints and models."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


def _vector(value) -> tuple[float, float, float]:
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError("bounds must be a list of 3 numbers")
    out = tuple(float(v) for v in value)
    if not all(math.isfinite(v) for v in out):
        raise ValueError("bounds must be finite")
    return out
