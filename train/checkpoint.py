"""Checkpoints: plain dicts of tensors and primitives, written atomically, read with ``weights_only=True``.

A checkpoint is untrusted input: ``weights_only`` loading never runs code from the file, and anything it
would need to run is refused with :class:`CheckpointError`.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from occnet.runtime.contract import Architecture, check_bounds
from occnet.runtime.errors import InputError, ResourceError, first_line
from occnet.runtime.files import check_archive_sizes, write_bytes_atomic
from occnet.train.encodings import make_encoding
from occnet.train.model import OccNet

FORMAT = "occnet.checkpoint"
VERSION = 1
LEGACY_MAGIC = b"\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"
"""How a file in PyTorch's pre-1.6 format begins, within its first bytes: the pickled magic number
0x1950a86a20f9469cfc6c, which ``torch.load`` checks only after unpickling whatever comes first."""


class CheckpointError(InputError):
    """A file that is not a usable occnet checkpoint."""


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint holds. ``state`` is the dict on disk; the rest are its parsed, validated parts."""

    state: dict
    architecture: Architecture
    bounds_min: tuple[float, float, float]
    bounds_max: tuple[float, float, float]
    origin: tuple[float, float, float]

    @property
    def model_state(self) -> dict:
        return self.state["model"]

    @property
    def metrics(self) -> dict:
        return self.state["metrics"]

    def network(self) -> OccNet:
        """The network this checkpoint describes, weights loaded, in evaluation mode; raises
        :class:`CheckpointError` when the weights do not fit the architecture it records."""
        try:
            model = OccNet(self.architecture, self.bounds_min, self.bounds_max, self.origin)
        except (RuntimeError, MemoryError) as exc:     # the allocator's RuntimeError: not enough memory
            raise ResourceError(f"not enough memory to build the network it records ({first_line(exc)})") from None
        mismatch = weight_mismatch(model.state_dict(), self.model_state)
        if mismatch:
            raise CheckpointError(f"its weights do not fit the architecture it records: {mismatch}")
        try:
            model.load_state_dict(self.model_state)
        except RuntimeError as exc:                    # a value no tensor can take (a wrong dtype)
            raise CheckpointError(f"its weights do not fit the architecture it records ({first_line(exc)})") from None
        return model.eval()


def weight_mismatch(expected: dict, found: dict, shown: int = 3) -> str:
    """What keeps ``found`` (a state dict) from loading into a network whose state dict is ``expected``, in
    one line (missing and unexpected names, shapes that differ; the first ``shown`` of each), or ``""``.
    PyTorch's own message puts each kind on its own line, so a one-line report of it said only that there
    were errors."""

    def listed(kind: str, items: list[str]) -> str:
        more = f" and {len(items) - shown} more" if len(items) > shown else ""
        return f"{kind} {', '.join(items[:shown])}{more}"

    missing = [name for name in expected if name not in found]
    unexpected = [str(name) for name in found if name not in expected]
    shapes = [f"{name} is {_shape(found[name])}, not {_shape(tensor)}" for name, tensor in expected.items()
              if name in found and _shape(found[name]) != _shape(tensor)]
    parts = [listed(kind, items) for kind, items in (("missing", missing), ("unexpected", unexpected),
                                                     ("shapes:", shapes)) if items]
    return "; ".join(parts)


def _shape(value) -> str:
    """A tensor's shape as ``(64, 3)``, or the type of a value that is no tensor."""
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` (tagged with the format and version here) to ``path`` atomically."""
    buffer = io.BytesIO()                 # torch.save reports a full disk as a bare RuntimeError: write here
    torch.save({"format": FORMAT, "version": VERSION, **state}, buffer)
    write_bytes_atomic(Path(path), buffer.getvalue())


def read_torch_file(path: Path, legacy: bool = False, allowed: tuple = ()) -> object:
    """What ``torch.save`` wrote to ``path``, read safely: ``weights_only`` (no code from the file runs; the
    globals in ``allowed``, in ``torch.serialization.safe_globals``' form, are the only classes it may name),
    tensors mapped to the CPU wherever they were saved, zip archives' declared sizes checked before inflating.
    ``legacy``: PyTorch's pre-1.6 format (not a zip archive) is read too. :class:`CheckpointError` naming what
    is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if zipfile.is_zipfile(path):
        check_archive_sizes(path, "tensors")
    elif not legacy:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (not the zip archive torch.save writes)")
    else:
        with open(path, "rb") as handle:
            if LEGACY_MAGIC not in handle.read(32):
                raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor the format "
                                      "before PyTorch 1.6)")
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL [\w.]+|Unsupported operand \d+", str(exc))
        blocked = found[0] if found else "unsafe pickle"
        raise CheckpointError(f"{path}: refused: it holds objects that safe (weights_only) loading does "
                              f"not allow, so it could run code ({blocked})") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__})") from None


def load_checkpoint(path: Path) -> Checkpoint:
    """Read and validate a checkpoint; raises :class:`CheckpointError` naming what is wrong."""
    return checkpoint_from_state(Path(path), read_torch_file(path))


def checkpoint_from_state(path: Path, state: object) -> Checkpoint:
    """Validate ``state``, as loaded from ``path``, as an occnet checkpoint (see :func:`load_checkpoint`)."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an occnet checkpoint (no '{FORMAT}' tag)")
    version = state.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path}: malformed occnet checkpoint (format version {version!r} is not a "
                              "positive integer)")
    if version > VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version} is newer than this occnet "
                              f"reads ({VERSION}); upgrade occnet")
    try:
        arch = Architecture.from_dict(state["architecture"])
        make_encoding(arch.encoding, arch.encoding_options)
        lo = tuple(float(v) for v in state["bounds_min"])
        hi = tuple(float(v) for v in state["bounds_max"])
        origin = tuple(float(v) for v in state.get("origin", (0.0, 0.0, 0.0)))   # older checkpoints: zero
        if len(lo) != 3 or len(hi) != 3 or len(origin) != 3 or not isinstance(state["model"], dict):
            raise ValueError("bounds and origin must have 3 values and the model must be a state dict")
        if not isinstance(state["metrics"], dict):
            raise ValueError(f"metrics must be a dict of figures, not {type(state['metrics']).__name__}")
        check_bounds(lo, hi, origin)
    except KeyError as exc:
        raise CheckpointError(f"{path}: malformed occnet checkpoint (no {exc} entry)") from None
    except (TypeError, ValueError, InputError) as exc:
        raise CheckpointError(f"{path}: malformed occnet checkpoint ({exc})") from None
    return Checkpoint(state, arch, lo, hi, origin)
