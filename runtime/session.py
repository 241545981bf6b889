"""An onnxruntime session over an occnet model: validated on load, batched evaluation, CPU or CUDA."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort

from occnet.runtime.checks import check_integer
from occnet.runtime.contract import DEVICES, INPUT_NAME, OUTPUT_NAME, ModelInfo
from occnet.runtime.errors import DeviceError, InputError, ModelError, first_line
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
        if self.path.is_dir():
            raise InputError(f"{self.path} is a folder, not a model file")
        if not self.path.is_file():
            raise InputError(f"model file not found: {self.path}")
        self.fallback: str | None = None
        self._check_graph()                           # before onnxruntime builds a session for a graph refused
        self._session = self._open(device, threads)
        self.provider: str = self._session.get_providers()[0]
        self._check_signature()
        props = self._session.get_modelmeta().custom_metadata_map
        self.info: ModelInfo = ModelInfo.from_metadata(props)

    def _open(self, device: str, threads: int) -> ort.InferenceSession:
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
            session = ort.InferenceSession(_model_source(self.path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors for unreadable models
            raise ModelError(f"{self.path} is not a usable ONNX model: {first_line(exc, 300)}") from None
        if want_cuda and session.get_providers()[0] != CUDA:
            if device == "cuda":
                raise DeviceError("--device cuda: the CUDA provider failed to start (no GPU or "
                                  "missing CUDA libraries)")
            self.fallback = "CUDA provider is installed but did not start; using the CPU"
        return session

    def _check_signature(self) -> None:
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
            names = [i.name for i in inputs]
            raise ModelError(f"model must have one input {INPUT_NAME!r}, has {names}")
        shape = inputs[0].shape
        if inputs[0].type != "tensor(float)" or len(shape) != 2 or shape[1] != 3 or isinstance(shape[0], int):
            raise ModelError(f"input {INPUT_NAME!r} must be float32 [N, 3] with dynamic N, "
                             f"is {inputs[0].type} {shape}")
        if len(outputs) != 1 or outputs[0].name != OUTPUT_NAME:
            raise ModelError(f"model must have one output {OUTPUT_NAME!r}, has {[o.name for o in outputs]}")
        if outputs[0].type != "tensor(float)" or len(outputs[0].shape) != 1:
            raise ModelError(f"output {OUTPUT_NAME!r} must be float32 [N], is {outputs[0].type} "
                             f"{outputs[0].shape}")

    def _check_graph(self) -> None:
        try:
            found = sorted(op_types(self.path.read_bytes()) & set(CONTROL_FLOW))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{self.path} is not a usable ONNX model: {exc}") from None
        if found:
            raise ModelError(f"{self.path}: holds {', '.join(found)} nodes; an occnet model is a feed-forward "
                             "network without control flow (a Loop may never end)")

    def logits(self, points: np.ndarray) -> np.ndarray:
        """Occupancy logits of world-coordinate points: ``(N, 3) float64 (or float32) -> (N,) float32``, one
        run. The model's ``origin`` is subtracted in float64 before the network's float32, so coordinates far
        from zero keep their precision."""
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
            logits = self._run(points)
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


    def _run(self, points: np.ndarray) -> np.ndarray:
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
                outcome.append(self._session.run([OUTPUT_NAME], {INPUT_NAME: points}, options)[0])
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


def _model_source(path: Path) -> str | bytes:
    """What to hand onnxruntime: the path, or the file's bytes when the path is not valid UTF-8 (onnxruntime
    cannot encode it; a model loaded from bytes cannot use external data files)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return path.read_bytes()
    return str(path)
