"""An onnxruntime session over an occnet model: validated on load, batched evaluation, CPU or CUDA."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort

from occnet.runtime.checks import check_integer
from occnet.runtime.contract import (
    CODE_NAME,
    DEVICES,
    INPUT_NAME,
    OBSERVATION_NAME,
    OUTPUT_NAME,
    Condition,
    MetaKey,
    ModelInfo,
)
from occnet.runtime.errors import DeviceError, InputError, ModelError, first_line
from occnet.runtime.files import input_file
from occnet.runtime.graph import CONTROL_FLOW, op_types
from occnet.runtime.machine import available_cores

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class OccupancyModel:
    """A loaded occnet ONNX model; call :meth:`logits` on world-coordinate points.

    ``device='auto'`` takes CUDA when onnxruntime has it and it starts, else the CPU (``fallback`` says
    so when an installed CUDA provider failed to start); ``'cuda'`` that cannot be honoured raises
    :class:`DeviceError`. ``threads=0`` takes every core this process may use (:func:`available_cores`,
    which heeds a container's CPU quota; onnxruntime's own choice counts the host's cores). Idle threads
    sleep instead of spinning, so a busy machine slows the model by its fair share, not many times that.
    """

    def __init__(self, path: str | Path, device: str = "auto", threads: int = 0) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise InputError(f"model path must be a str or a path, got {type(path).__name__}")
        self.path = Path(path)
        if not isinstance(device, str) or device not in DEVICES:
            raise InputError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
        cores = available_cores()
        check_integer("threads", threads, 0)
        if threads > cores:
            raise InputError(f"threads must lie in 0..{cores} (the cores this process may use; 0: all of them), "
                             f"got {threads}")
        input_file(self.path, "model file")
        self.fallback: str | None = None
        data = self._check_graph(self.path.read_bytes, str(self.path))   # before onnxruntime builds a session
        self._digest = hashlib.sha256(data).hexdigest()                 # what bounds() must read again
        self._session = self._open(_model_source(self.path), device, threads)
        self.provider: str = self._session.get_providers()[0]
        props = self._session.get_modelmeta().custom_metadata_map
        self.info: ModelInfo = ModelInfo.from_metadata(props)
        self._encoder = self._open_encoder(props[MetaKey.ENCODER], threads) if self.info.condition else None
        self._check_signature()

    def _open_encoder(self, text: str, threads: int) -> ort.InferenceSession:
        """The encoder graph a conditional model carries in its metadata, on the device of the model's own."""
        try:
            data = base64.b64decode(text, validate=True)
        except ValueError:
            raise ModelError(f"{self.path}: its encoder graph (metadata {MetaKey.ENCODER}) is not base64") from None
        self._check_graph(lambda: data, f"{self.path}: its encoder graph")
        device = "cuda" if self.provider == CUDA else "cpu"
        return self._open(data, device, threads, what=f"{self.path}: its encoder graph")

    def _open(self, source: str | bytes, device: str, threads: int, what: str = "") -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or available_cores()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = 3
        want_cuda = device == "cuda" or (device == "auto" and CUDA in ort.get_available_providers())
        if device == "cuda" and CUDA not in ort.get_available_providers():
            raise DeviceError("--device cuda: this onnxruntime has no CUDA provider "
                              "(install onnxruntime-gpu on a machine with an NVIDIA GPU)")
        providers = [CUDA, CPU] if want_cuda else [CPU]
        try:
            session = ort.InferenceSession(source, options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors for unreadable models
            raise ModelError(f"{what or self.path} is not a usable ONNX model: {first_line(exc, 300)}") from None
        if want_cuda and session.get_providers()[0] != CUDA:
            if device == "cuda":
                raise DeviceError("--device cuda: the CUDA provider failed to start (no GPU or "
                                  "missing CUDA libraries)")
            self.fallback = "CUDA provider is installed but did not start; using the CPU"
        return session

    def _check_signature(self) -> None:
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        wanted = [INPUT_NAME, CODE_NAME] if self.info.condition else [INPUT_NAME]
        if [i.name for i in inputs] != wanted:
            raise ModelError(f"model must have the inputs {wanted}, has {[i.name for i in inputs]}")
        if self.info.condition:
            self._check_encoder(inputs[1])
        shape = inputs[0].shape
        if inputs[0].type != "tensor(float)" or len(shape) != 2 or shape[1] != 3 or isinstance(shape[0], int):
            raise ModelError(f"input {INPUT_NAME!r} must be float32 [N, 3] with dynamic N, "
                             f"is {inputs[0].type} {shape}")
        if len(outputs) != 1 or outputs[0].name != OUTPUT_NAME:
            raise ModelError(f"model must have one output {OUTPUT_NAME!r}, has {[o.name for o in outputs]}")
        if outputs[0].type != "tensor(float)" or len(outputs[0].shape) != 1:
            raise ModelError(f"output {OUTPUT_NAME!r} must be float32 [N], is {outputs[0].type} "
                             f"{outputs[0].shape}")

    def _check_encoder(self, code_input) -> None:
        """The encoder graph reads one observation and writes the code the per-point graph reads."""
        condition = self.info.condition
        inputs, outputs = self._encoder.get_inputs(), self._encoder.get_outputs()
        rank = 2 if condition.observation == "pointcloud" else 3
        if [i.name for i in inputs] != [OBSERVATION_NAME] or len(inputs[0].shape) != rank:
            raise ModelError(f"{self.path}: its encoder graph must read one {OBSERVATION_NAME!r} of rank {rank}, "
                             f"reads {[(i.name, i.shape) for i in inputs]}")
        code = list(condition.code_shape)
        if [o.name for o in outputs] != [CODE_NAME] or outputs[0].shape != code or code_input.shape != code:
            raise ModelError(f"{self.path}: its encoder graph must write the {CODE_NAME!r} {code} its per-point "
                             f"graph reads; writes {[(o.name, o.shape) for o in outputs]}, read as "
                             f"{code_input.shape}")

    def _check_graph(self, read, what: str) -> bytes:
        """Refuse a graph with control flow; returns the bytes ``read()`` gave."""
        try:
            data = read()
            found = sorted(op_types(data) & set(CONTROL_FLOW))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{what} is not a usable ONNX model: {exc}") from None
        if found:
            raise ModelError(f"{what}: holds {', '.join(found)} nodes; an occnet model is a feed-forward "
                             "network without control flow (a Loop may never end)")
        return data

    def bounds(self, constants: dict[str, np.ndarray] | None = None):
        """Sound bounds of the logit over boxes (:class:`~occnet.runtime.bounds.NetworkBounds`, in coordinates
        less ``info.origin``), from the model file as loaded; None where its graph holds operators the range
        analysis does not take. ``constants``: the other inputs' values (a conditional model's code)."""
        from occnet.runtime.bounds import network_bounds

        data = self.path.read_bytes()
        if hashlib.sha256(data).hexdigest() != self._digest:
            raise ModelError(f"{self.path} changed on disk since it was loaded; load it again")
        return network_bounds(data, constants)

    def logits(self, points: np.ndarray) -> np.ndarray:
        """Occupancy logits of world-coordinate points: ``(N, 3) float64 (or float32) -> (N,) float32``, one
        run. The model's ``origin`` is subtracted in float64 before the network's float32, so coordinates far
        from zero keep their precision. A conditional model needs an observation first (:meth:`given`)."""
        if self.info.condition is not None:
            raise InputError(f"{self.path} is a conditional model: it reconstructs a shape from an observation "
                             f"(a {self.info.condition.observation}); give one (occ-mesh --input, or "
                             "model.given(observation))")
        return self._logits(points, {})

    def given(self, observation: np.ndarray) -> ConditionedModel:
        """This conditional model with ``observation`` encoded (once): a point cloud ``(T, 3)`` in the model's
        frame (more points than the model was trained on are subsampled, by a fixed seed) or a voxel grid
        ``(R, R, R)`` of 0/1 or bools indexed ``[x, y, z]`` (see :class:`~occnet.runtime.contract.Condition`)."""
        condition = self.info.condition
        if condition is None:
            raise InputError(f"{self.path} is not a conditional model: it holds one shape and takes no observation")
        observation = check_observation(observation, condition)
        try:
            code = self._run(self._encoder, CODE_NAME, {OBSERVATION_NAME: observation})
        except Exception as exc:  # onnxruntime's untyped run-time errors
            raise ModelError(f"{self.path}: onnxruntime failed to encode the observation: "
                             f"{first_line(exc, 300)}") from None
        if not np.all(np.isfinite(code)):
            raise ModelError(f"{self.path}: the encoder returned NaN or infinite values for this observation")
        return ConditionedModel(self, code)

    def _logits(self, points: np.ndarray, feeds: dict[str, np.ndarray]) -> np.ndarray:
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] != 3:
            raise InputError(f"points must have shape (N, 3), got {points.shape}")
        if points.dtype.kind not in "iuf":
            raise InputError(f"points must be real numbers, got dtype {points.dtype}")
        if not np.all(np.isfinite(points)):
            raise InputError("points must be finite; NaN or infinite coordinates have no occupancy")
        points = np.ascontiguousarray(points - np.asarray(self.info.origin), dtype=np.float32)
        if len(points) == 0:
            return np.zeros(0, np.float32)
        try:
            logits = self._run(self._session, OUTPUT_NAME, {INPUT_NAME: points, **feeds})
        except Exception as exc:  # onnxruntime's untyped run-time errors: a shape, a kernel, an allocation
            raise ModelError(f"{self.path}: onnxruntime failed to evaluate the model on {len(points):,} points: "
                             f"{first_line(exc, 300)}") from None
        if logits.shape != (len(points),):
            raise ModelError(f"the model returned logits of shape {logits.shape} for {len(points)} points; "
                             f"an occnet model returns one logit per point")
        bad = np.count_nonzero(~np.isfinite(logits))
        if bad:
            raise ModelError(f"the model returned NaN or infinite logits for {bad:,} of {len(points):,} points")
        return logits


    @staticmethod
    def _run(session: ort.InferenceSession, output: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """One onnxruntime run, on a thread of its own so that it can be stopped: Python raises Ctrl-C and
        SIGTERM in the main thread between bytecodes, never inside a C call, so a run on the main thread ran
        to its end (a crafted graph's, never). The main thread waits; an interrupt there sets the run's
        terminate flag, which onnxruntime checks between nodes (and a Loop's iterations), and goes on once
        the run has stopped."""
        options = ort.RunOptions()
        options.log_severity_level = 4              # its failures become ModelError; no log lines besides
        outcome: list = []

        def run() -> None:
            try:
                outcome.append(session.run([output], feeds, options)[0])
            except Exception as exc:                  # handed to the caller's thread
                outcome.append(exc)

        worker = threading.Thread(target=run, name="occnet-onnxruntime", daemon=True)
        worker.start()
        try:
            worker.join()
        except BaseException:
            options.terminate = True
            worker.join()
            raise
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]


class ConditionedModel:
    """A conditional model with one observation encoded: :meth:`logits` as an unconditional model's, so the
    meshing API (:func:`~occnet.runtime.mesher.mesh_model`) takes it as it takes one."""

    def __init__(self, model: OccupancyModel, code: np.ndarray) -> None:
        self.model, self.code = model, code
        self.info, self.provider, self.path = model.info, model.provider, model.path

    def bounds(self):
        """As :meth:`OccupancyModel.bounds`, for the shape of the observation given."""
        return self.model.bounds({CODE_NAME: self.code})

    def logits(self, points: np.ndarray) -> np.ndarray:
        """As :meth:`OccupancyModel.logits`, for the shape of the observation given."""
        return self.model._logits(points, {CODE_NAME: self.code})


def check_observation(observation: np.ndarray, condition: Condition) -> np.ndarray:
    """``observation`` as the encoder reads it (float32, contiguous), checked against ``condition``; a cloud of
    more points than the model was trained on subsampled to that many, by a fixed seed."""
    observation = np.asarray(observation)
    if observation.dtype.kind not in "biuf":
        raise InputError(f"an observation must be numbers, got dtype {observation.dtype}")
    given = "pointcloud" if observation.ndim == 2 else "voxels" if observation.ndim == 3 else None
    if given is not None and given != condition.observation:
        wanted = (f"voxel grids ({condition.resolution}^3)" if condition.observation == "voxels" else
                  "point clouds")
        raise InputError(f"this model reconstructs shapes from {wanted}, not from a "
                         f"{'point cloud' if given == 'pointcloud' else 'voxel grid'}")
    if condition.observation == "pointcloud":
        if observation.ndim != 2 or observation.shape[1] != 3 or len(observation) == 0:
            raise InputError(f"a point cloud must have shape (T, 3) with T >= 1, got {observation.shape}")
        if not np.all(np.isfinite(observation)):
            raise InputError("a point cloud must be finite; it holds NaN or infinite coordinates")
        if len(observation) > condition.points:
            keep = np.random.default_rng(0).choice(len(observation), condition.points, replace=False)
            observation = observation[np.sort(keep)]
    else:
        side = condition.resolution
        if observation.shape != (side,) * 3:
            raise InputError(f"a voxel grid must have shape ({side}, {side}, {side}), got {observation.shape}")
        if not np.all((observation == 0) | (observation == 1)):
            raise InputError("a voxel grid must hold occupancies 0 and 1 (or booleans)")
    return np.ascontiguousarray(observation, dtype=np.float32)


def _model_source(path: Path) -> str | bytes:
    """What to hand onnxruntime: the path, or the file's bytes when the path is not valid UTF-8 (onnxruntime
    cannot encode it; a model loaded from bytes cannot use external data files)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return path.read_bytes()
    return str(path)
