"""The ONNX model contract shared by export (writer) and runtime (reader): names, metadata, architecture.

Defined here, torch-free, so that the runtime owns what it reads and the exporter imports it.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

from occnet.runtime.errors import ModelError

FORMAT_VERSION = 2
"""Format 2 adds conditional models (``occnet.condition``, ``occnet.encoder``); unconditional models are written
as format 1, which they still are, so that older runtimes read them."""
UNCONDITIONAL_FORMAT = 1
INPUT_NAME = "points"
OUTPUT_NAME = "logits"
CODE_NAME = "code"
"""A conditional model's second input and its encoder's output: the per-shape code ``[rows, width]`` float32."""
OBSERVATION_NAME = "observation"
"""A conditional model's encoder input: a point cloud ``[T, 3]`` or a voxel grid ``[R, R, R]``, float32."""
OBSERVATIONS = ("pointcloud", "voxels")
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
    ORIGIN = "occnet.origin"
    CONDITION = "occnet.condition"
    ENCODER = "occnet.encoder"


LIMITS = {"hidden_size": 1024, "hidden_layers": 32}
"""Upper bounds of the architecture's integer fields: far above any useful occupancy MLP, far below sizes
that would exhaust memory when a crafted file asks for them."""
OBSERVATION_LIMITS = {"points": 1 << 20, "resolution": 256}
"""Largest cloud a conditional model may expect and largest voxel grid it may read, per side."""
FORMAT1_FIELDS = {"fourier_features": 0, "fourier_scale": 0.0}
"""Fields format 1 wrote for every model, zero where the encoding was not Fourier's; read and dropped."""
MAX_COORDINATE = 1e30
"""Largest |bound| accepted: grid coordinates must stay finite in float32 (max 3.4e38) with room to spare."""
MIN_EXTENT = 1e-30
"""Smallest longest side of a box accepted: the network's float32 keeps full precision down to 1.2e-38, and a
box's finest cells are thousands of times smaller than the box (a part 1e-35 across trained and meshed
right; 1e-41 diverged)."""
LEARNED_IOU = 0.5
"""Validation IoU below which a trained model has not learned its shape: occ-train fails such a run and
occ-export warns on its checkpoint. Every shape of the quality suite scores 0.9 or more after training; an
untrained network scores 0 (all outside) or the inside share of the points (all inside)."""


@dataclass(frozen=True)
class Architecture:
    """The network's shape: enough to rebuild it. ``encoding`` names an input encoding of
    :mod:`occnet.train.encodings` and ``encoding_options`` its options (numbers by name); the runtime needs
    neither (the ONNX graph computes the encoding), so only their form is checked here and the encoding
    itself when a network is built from them.

    In files (checkpoint, ONNX metadata) the options are flat fields prefixed with the encoding's name,
    ``{"encoding": "fourier", "fourier_features": 32, "fourier_scale": 2.0, ...}``, as format 1 wrote them."""

    hidden_size: int = 64
    hidden_layers: int = 4
    encoding: str = "none"
    encoding_options: dict[str, int | float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, top in LIMITS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
            if not 1 <= value <= top:
                raise ValueError(f"{name} must lie in 1..{top}, got {value}")
        if not isinstance(self.encoding, str) or not self.encoding.isidentifier():
            raise ValueError(f"encoding must be a name, got {self.encoding!r}")
        if not isinstance(self.encoding_options, dict):
            raise ValueError("encoding options are not a mapping")
        for key, value in self.encoding_options.items():
            if not isinstance(key, str) or not key.isidentifier():
                raise ValueError(f"encoding option names must be names, got {key!r}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{self.encoding}_{key} must be a finite number, got {value!r}")

    def to_dict(self) -> dict:
        """The flat record files hold (see the class)."""
        return {"hidden_size": self.hidden_size, "hidden_layers": self.hidden_layers, "encoding": self.encoding,
                **{f"{self.encoding}_{key}": value for key, value in self.encoding_options.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> Architecture:
        """Rebuild from :meth:`to_dict` output; raises ``ValueError`` on unknown or bad fields."""
        if not isinstance(data, dict):
            raise ValueError("architecture is not a mapping")
        data = dict(data)
        encoding = data.pop("encoding", "none")
        prefix = f"{encoding}_" if isinstance(encoding, str) else None
        options = {key[len(prefix):]: data.pop(key) for key in list(data)
                   if prefix and key.startswith(prefix) and key not in LIMITS}
        for key, zero in FORMAT1_FIELDS.items():
            if key in data and data[key] == zero:
                del data[key]
        unknown = set(data) - {"hidden_size", "hidden_layers"}
        if unknown:
            raise ValueError(f"unknown architecture fields {sorted(unknown)}")
        return cls(**data, encoding=encoding, encoding_options=options)


@dataclass(frozen=True)
class Condition:
    """What a conditional model f(p, x) is conditioned on, and how it is meshed.

    ``observation``: ``pointcloud`` (``points``: how many a cloud is expected to hold, as the model was
    trained; more are subsampled) or ``voxels`` (``resolution`` per side; voxel ``i`` along an axis is centred
    at ``(i + 0.5) / resolution - 0.5`` in the model's frame, indexed ``[x, y, z]``, as ONet's grids are).
    ``code_shape``: the per-shape code the encoder graph (``occnet.encoder``: a serialized ONNX model, base64)
    computes from an observation once, and the per-point graph reads beside the points. ``threshold``: the
    probability meshed by default. ``network``: the architecture's names and sizes, for people and tools."""

    observation: str
    code_shape: tuple[int, int]
    threshold: float
    points: int = 0
    resolution: int = 0
    network: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.observation not in OBSERVATIONS:
            raise ValueError(f"unknown observation {self.observation!r}; expected one of {OBSERVATIONS}")
        shape = tuple(self.code_shape)
        if len(shape) != 2 or not all(_count(v, 1, 1 << 20) for v in shape):
            raise ValueError(f"code_shape must be two positive integers, got {self.code_shape!r}")
        object.__setattr__(self, "code_shape", shape)
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                or not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be a probability between 0 and 1, got {self.threshold!r}")
        wanted = ("points", self.points) if self.observation == "pointcloud" else ("resolution", self.resolution)
        if not _count(wanted[1], 1, OBSERVATION_LIMITS[wanted[0]]):
            raise ValueError(f"{self.observation} needs {wanted[0]} in 1..{OBSERVATION_LIMITS[wanted[0]]}, "
                             f"got {wanted[1]!r}")
        if not isinstance(self.network, dict):
            raise ValueError("network is not a mapping")

    def to_json(self) -> str:
        return json.dumps({"observation": self.observation, "code_shape": list(self.code_shape),
                           "threshold": self.threshold, "points": self.points, "resolution": self.resolution,
                           "network": self.network}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Condition:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("condition is not a mapping")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown condition fields {sorted(unknown)}")
        return cls(**data)


def _count(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


@dataclass(frozen=True)
class ModelInfo:
    """Everything the metadata of an occnet ONNX model says. Bounds and ``origin`` are world coordinates
    (float64); the network's input is points relative to ``origin`` (0 for models that do not record one).
    An unconditional model f(p) has an ``architecture``; a conditional one f(p, x) a ``condition`` instead.
    ``format_version`` defaults to the oldest format that holds the model."""

    bounds_min: tuple[float, float, float]
    bounds_max: tuple[float, float, float]
    architecture: Architecture | None
    metrics: dict = field(default_factory=dict)
    checkpoint_sha256: str = ""
    producer: dict = field(default_factory=dict)
    format_version: int | None = None
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    condition: Condition | None = None

    def __post_init__(self) -> None:
        if (self.architecture is None) == (self.condition is None):
            raise ValueError("a model has either an architecture (f(p)) or a condition (f(p, x))")
        if self.format_version is None:
            object.__setattr__(self, "format_version", UNCONDITIONAL_FORMAT if self.condition is None
                               else FORMAT_VERSION)

    def to_metadata(self) -> dict[str, str]:
        """Metadata props as strings, ready for ``onnx.helper.set_model_props`` (a conditional model's encoder
        graph, ``occnet.encoder``, is added by the exporter)."""
        props = {
            MetaKey.FORMAT_VERSION: str(self.format_version),
            MetaKey.BOUNDS_MIN: json.dumps(list(self.bounds_min)),
            MetaKey.BOUNDS_MAX: json.dumps(list(self.bounds_max)),
            MetaKey.METRICS: json.dumps(self.metrics, sort_keys=True, allow_nan=False),   # strict JSON
            MetaKey.CHECKPOINT_SHA256: self.checkpoint_sha256,
            MetaKey.PRODUCER: json.dumps(self.producer, sort_keys=True),
            MetaKey.ORIGIN: json.dumps(list(self.origin)),       # repr of a float64: exact round trip
        }
        if self.architecture is not None:
            props[MetaKey.ARCHITECTURE] = json.dumps(self.architecture.to_dict(), sort_keys=True)
        if self.condition is not None:
            props[MetaKey.CONDITION] = self.condition.to_json()
        return props

    @classmethod
    def from_metadata(cls, props: dict[str, str]) -> ModelInfo:
        """Parse and validate metadata props; raises :class:`ModelError` naming what is wrong."""
        conditional = MetaKey.CONDITION in props
        missing = [k for k in (MetaKey.FORMAT_VERSION, MetaKey.BOUNDS_MIN, MetaKey.BOUNDS_MAX,
                               MetaKey.ENCODER if conditional else MetaKey.ARCHITECTURE) if k not in props]
        if missing:
            raise ModelError(f"not an occnet model: metadata lacks {', '.join(missing)}")
        try:
            version = int(props[MetaKey.FORMAT_VERSION])
            lo = _vector(json.loads(props[MetaKey.BOUNDS_MIN]))
            hi = _vector(json.loads(props[MetaKey.BOUNDS_MAX]))
            arch = None if conditional else Architecture.from_dict(json.loads(props[MetaKey.ARCHITECTURE]))
            condition = Condition.from_json(props[MetaKey.CONDITION]) if conditional else None
            metrics = json.loads(props.get(MetaKey.METRICS, "{}"))
            producer = json.loads(props.get(MetaKey.PRODUCER, "{}"))
            origin = _vector(json.loads(props.get(MetaKey.ORIGIN, "[0, 0, 0]")))
        except (ValueError, TypeError) as exc:
            raise ModelError(f"occnet metadata is malformed: {exc}") from None
        except RecursionError:
            raise ModelError("occnet metadata is malformed: nested too deeply to parse") from None
        if version > FORMAT_VERSION:
            raise ModelError(f"model format version {version} is newer than this occnet reads "
                             f"({FORMAT_VERSION}); upgrade occnet")
        try:
            check_bounds(lo, hi, origin)
        except ValueError as exc:
            raise ModelError(f"model bounds: {exc}") from None
        return cls(lo, hi, arch, metrics, props.get(MetaKey.CHECKPOINT_SHA256, ""), producer, version, origin,
                   condition)


def check_bounds(lo, hi, origin=(0.0, 0.0, 0.0)) -> None:
    """Raise ``ValueError`` unless the box ``lo``..``hi`` (3 numbers each) is finite, within
    ``MAX_COORDINATE`` and has volume in float32 relative to ``origin``, where the network computes."""
    values = [float(v) for v in (*lo, *hi, *origin)]
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"box must be finite, got min {tuple(lo)} max {tuple(hi)}")
    if max(abs(v) for v in values) > MAX_COORDINATE:
        raise ValueError(f"box coordinates must lie within +-{MAX_COORDINATE:g}, got min {tuple(lo)} max {tuple(hi)}")
    check_extent(max(h - low for low, h in zip(lo, hi)))
    if not all(_float32(h - o) > _float32(low - o) for low, h, o in zip(lo, hi, origin)):
        raise ValueError(f"box is empty in float32, got min {tuple(lo)} max {tuple(hi)}")


def check_extent(extent: float) -> None:
    """Raise ``ValueError`` for a box whose longest side, ``extent``, is under :data:`MIN_EXTENT`."""
    if extent < MIN_EXTENT:
        raise ValueError(f"the box is {extent:.3g} units across, less than the {MIN_EXTENT:g} whose cells float32 "
                         "resolves; scale the data up (e.g. to micrometres)")


def _float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


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
