"""ONet's checkpoints and config files, read as untrusted input, with the architecture they hold.

ONet's training code saves ``{'model': state_dict, 'optimizer': ..., 'epoch_it', 'it', 'loss_val_best'}``
with ``torch.save``; ``loss_val_best`` is a numpy float64, and the released models were saved on GPUs by
PyTorch 1.0 (the format before 1.6, tensors on CUDA). Such a file is read with ``weights_only`` loading,
allowing the two numpy globals a pickled float64 names and nothing else, its tensors mapped to the CPU; the
architecture is read from the state dict's names and shapes, and checked against ONet's config file when one
is given (which also gives the threshold and the cloud's size).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from occnet.runtime.errors import InputError, first_line
from occnet.train.checkpoint import CheckpointError, read_torch_file, weight_mismatch
from occnet.train.onet import BLOCKS, ENCODERS, ConditionalOccNet, OnetArchitecture

ONET_KEYS = ("model", "optimizer", "epoch_it", "it", "loss_val_best")
"""What ONet's ``CheckpointIO`` saves: the weights under ``model``, the rest training state."""
OCCNET_ENTRY = "occnet"
"""The entry occnet's own training adds (:mod:`occnet.train.conditional`): what ONet keeps in its config file
(``threshold``, ``cloud_points``) beside the run's record."""
DEFAULT_THRESHOLD = 0.2
"""ONet's ``test.threshold`` for its point-cloud and voxel models: the probability the surface is meshed at."""
DEFAULT_CLOUD_POINTS = 300
"""ONet's ``data.pointcloud_n`` for its point-cloud model: the points of an input cloud."""
BOX = 0.55
"""ONet meshes in the box ``[-BOX, BOX]^3``: the unit cube its shapes are normalised into, padded by 0.1."""
ONET_DEFAULTS = {"method": "onet", "data": {"pointcloud_n": 256},
                 "model": {"decoder": "simple", "encoder": "resnet18", "c_dim": 512, "z_dim": 64},
                 "test": {"threshold": 0.5}}
"""The values of ONet's ``configs/default.yaml`` read here: ONet's training and generation scripts lay every
config over that file, so a config that leaves a key out means its value there."""
_SCALAR = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
NUMPY_GLOBALS = (np.dtype, np.dtypes.Float64DType, (_SCALAR, "numpy.core.multiarray.scalar"),
                 (_SCALAR, "numpy._core.multiarray.scalar"))
"""What a pickled numpy float64 needs: its constructor (under numpy 1's module name or numpy 2's), ``np.dtype``
and the class of the dtype it builds."""


@dataclass(frozen=True)
class OnetConfig:
    """What of ONet's config file matters here: the architecture, ``test.threshold`` and ``data.pointcloud_n``."""

    architecture: OnetArchitecture
    threshold: float = DEFAULT_THRESHOLD
    cloud_points: int = DEFAULT_CLOUD_POINTS


@dataclass(frozen=True)
class OnetCheckpoint:
    """An ONet checkpoint's weights (``encoder.*``, ``decoder.*``), architecture and meshing settings."""

    path: Path
    weights: dict[str, torch.Tensor]
    config: OnetConfig

    @property
    def architecture(self) -> OnetArchitecture:
        return self.config.architecture

    def network(self) -> ConditionalOccNet:
        """The network with its weights, in evaluation mode."""
        model = ConditionalOccNet(self.architecture)
        model.load_state_dict(self.weights, strict=False)       # checked in full by load_onet_checkpoint
        return model.eval()


def is_onet_state(state: object) -> bool:
    """Whether a loaded checkpoint is ONet's (a dict with ``model`` and only ONet's keys), not occnet's."""
    return isinstance(state, dict) and "model" in state and "format" not in state


def load_onet_checkpoint(path: Path, config: Path | None = None) -> OnetCheckpoint:
    """Read ONet's checkpoint at ``path`` (zip or pre-1.6 format) and, if given, its ``config`` (YAML);
    :class:`CheckpointError` naming what is wrong."""
    state = read_torch_file(path, legacy=True, allowed=NUMPY_GLOBALS)
    return onet_checkpoint(Path(path), state, config)


def onet_checkpoint(path: Path, state: object, config: Path | None = None) -> OnetCheckpoint:
    """Validate ``state``, as loaded from ``path``, as ONet's checkpoint (see :func:`load_onet_checkpoint`)."""
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not an ONet checkpoint (no 'model' entry with the weights)")
    other = sorted(str(key) for key in state if key not in (*ONET_KEYS, OCCNET_ENTRY))
    if other:
        raise CheckpointError(f"{path}: not an ONet checkpoint: unexpected entries {', '.join(other)}")
    weights = state["model"]
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path}: its 'model' entry is not a state dict of tensors")
    try:
        arch = infer_architecture(weights)
    except InputError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    settings = read_onet_config(config) if config is not None else \
        _recorded(path, state[OCCNET_ENTRY], arch) if OCCNET_ENTRY in state else OnetConfig(arch)
    if settings.architecture != arch:
        raise CheckpointError(f"{path}: its weights are for {describe(arch)}, but {config} describes "
                              f"{describe(settings.architecture)}")
    expected = ConditionalOccNet(arch).state_dict()
    mismatch = weight_mismatch({k: v for k, v in expected.items() if not k.endswith("num_batches_tracked")},
                               {k: v for k, v in weights.items() if not k.endswith("num_batches_tracked")})
    if mismatch:
        raise CheckpointError(f"{path}: its weights do not fit {describe(arch)}: {mismatch}")
    if not all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()):
        raise CheckpointError(f"{path}: its weights hold NaN or infinite values")
    return OnetCheckpoint(path, {k: v.float() if v.is_floating_point() else v for k, v in weights.items()},
                          settings)


def _recorded(path: Path, entry: object, arch: OnetArchitecture) -> OnetConfig:
    """The settings occnet's training recorded in its checkpoint's ``occnet`` entry."""
    threshold = entry.get("threshold") if isinstance(entry, dict) else None
    points = entry.get("cloud_points") if isinstance(entry, dict) else None
    if isinstance(threshold, bool) or not isinstance(threshold, float) or not 0 < threshold < 1 or \
            isinstance(points, bool) or not isinstance(points, int) or points < 1:
        raise CheckpointError(f"{path}: its occnet entry must hold a threshold in (0, 1) and a positive "
                              f"cloud_points, got {threshold!r} and {points!r}")
    return OnetConfig(arch, threshold, points)


def describe(arch: OnetArchitecture) -> str:
    """One phrase naming an architecture's parts and sizes."""
    width = "" if arch.encoder == "voxel_simple" else f" {arch.encoder_hidden} wide"
    legacy = " (legacy)" if arch.legacy else ""
    return f"encoder {arch.encoder}{width}, c_dim {arch.c_dim}, decoder cbatchnorm{legacy} {arch.hidden_size} wide"


def infer_architecture(weights: dict[str, torch.Tensor]) -> OnetArchitecture:
    """The architecture of ONet's state dict ``weights``, from its names and shapes; ``InputError`` for a
    model this project does not rebuild (a latent code z, another encoder or decoder)."""
    def shape(name: str) -> tuple[int, ...]:
        if name not in weights:
            raise InputError(f"its weights lack {name}")
        return tuple(weights[name].shape)

    prefixes = sorted({name.split(".")[0] for name in weights})
    if "encoder_latent" in prefixes or "decoder.fc_z.weight" in weights:
        raise InputError("it has a latent code z (z_dim > 0: ONet's generative model); only conditional models "
                         "with z_dim 0 are supported")
    if prefixes != ["decoder", "encoder"]:
        raise InputError(f"its weights are not ONet's encoder and decoder (top-level names: {', '.join(prefixes)})")
    if "encoder.block_0.fc_0.weight" in weights:
        encoder = "pointnet_resnet"
    elif "encoder.fc_0.weight" in weights and "encoder.fc_pos.weight" in weights:
        encoder = "pointnet_simple"
    elif "encoder.conv_in.weight" in weights:
        encoder = "voxel_simple"
    else:
        first = next(name for name in weights if name.startswith("encoder."))
        raise InputError(f"its encoder is none of ONet's point-cloud or voxel encoders ({', '.join(ENCODERS)}; "
                         f"its first weight is {first})")
    if "decoder.block0.bn_0.conv_gamma.weight" in weights:
        legacy = False
    elif "decoder.block0.bn_0.fc_gamma.weight" in weights:
        legacy = True
    else:
        raise InputError("its decoder is not ONet's cbatchnorm decoder (no decoder.block0.bn_0.conv_gamma or "
                         "fc_gamma weights)")
    hidden = shape("decoder.fc_p.weight")[0]
    c_dim = shape("decoder.block0.bn_0.fc_gamma.weight" if legacy else "decoder.block0.bn_0.conv_gamma.weight")[1]
    encoder_hidden = 512 if encoder == "voxel_simple" else shape("encoder.fc_pos.weight")[0] // 2
    if any(f"decoder.block{index}.fc_0.weight" not in weights for index in range(BLOCKS)):
        raise InputError(f"its decoder does not have the {BLOCKS} blocks of ONet's cbatchnorm decoder")
    return OnetArchitecture(encoder, c_dim, encoder_hidden, hidden, legacy)


def read_onet_config(path: Path) -> OnetConfig:
    """ONet's YAML config at ``path`` (its ``inherit_from`` chain followed, relative to the current folder or a
    folder above the file, as ONet runs from its repository's root, all laid over :data:`ONET_DEFAULTS`);
    ``CheckpointError`` naming what is wrong."""
    data = _merged(ONET_DEFAULTS, _config_chain(Path(path), []))
    model, test, data_section = (data.get(key) or {} for key in ("model", "test", "data"))
    try:
        if data.get("method") != "onet":
            raise InputError(f"method is {data['method']!r}, not onet")
        if model.get("decoder") != "cbatchnorm":
            raise InputError(f"model.decoder is {model.get('decoder')!r}; only cbatchnorm is supported")
        if model.get("z_dim") != 0:
            raise InputError(f"model.z_dim is {model['z_dim']}; only conditional models with z_dim 0 are supported")
        encoder = model.get("encoder")
        if encoder not in ENCODERS:
            raise InputError(f"model.encoder is {encoder!r}; expected one of {', '.join(ENCODERS)}")
        encoder_kwargs, decoder_kwargs = model.get("encoder_kwargs") or {}, model.get("decoder_kwargs") or {}
        arch = OnetArchitecture(encoder, model.get("c_dim"),
                                512 if encoder == "voxel_simple" else encoder_kwargs.get("hidden_dim", 128),
                                decoder_kwargs.get("hidden_size", 256), decoder_kwargs.get("legacy", False))
        threshold = test.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
            raise InputError(f"test.threshold must be a probability between 0 and 1, got {threshold!r}")
        points = data_section.get("pointcloud_n")
        if isinstance(points, bool) or not isinstance(points, int) or points < 1:
            raise InputError(f"data.pointcloud_n must be a positive integer, got {points!r}")
    except (InputError, AttributeError) as exc:
        raise CheckpointError(f"{path}: {first_line(exc)}") from None
    return replace(OnetConfig(arch), threshold=float(threshold), cloud_points=points)


def _config_chain(path: Path, seen: list[Path]) -> dict:
    """The config at ``path`` merged over the ones it inherits from (nested sections merged key by key)."""
    import yaml

    if path.resolve() in seen:
        raise CheckpointError(f"{seen[0]}: its inherit_from chain loops back to {path}")
    if not path.is_file():
        raise CheckpointError(f"config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a YAML config ({first_line(exc)})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a YAML config (a {type(data).__name__}, not a mapping)")
    parent = data.pop("inherit_from", None)
    if parent is None:
        return data
    candidates = [Path(parent), *(folder / parent for folder in path.resolve().parents)]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise CheckpointError(f"{path}: inherits from {parent}, found neither next to it nor in a folder above")
    return _merged(_config_chain(found, [*seen, path.resolve()]), data)


def _merged(base: dict, update: dict) -> dict:
    """``base`` with ``update``'s keys, nested mappings merged rather than replaced (as ONet merges configs)."""
    out = dict(base)
    for key, value in update.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
