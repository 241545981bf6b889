"""Shared fixtures: analytic fields, a small trained run, the repository's demo model."""

from __future__ import annotations

import contextlib
import io
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO_ONNX = ROOT / "models" / "demo.onnx"
BIN = Path(sys.executable).parent

for _signum in (signal.SIGINT, signal.SIGTERM):
    # pytest started as ``cmd &`` from a script inherits SIGINT ignored, and so would every command the tests
    # start (they keep an inherited SIG_IGN): the interruption tests need the defaults a terminal gives
    if signal.getsignal(_signum) == signal.SIG_IGN:
        signal.signal(_signum, signal.default_int_handler if _signum == signal.SIGINT else signal.SIG_DFL)


def wait_for_handlers(proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Wait until a started command catches SIGTERM: its signal handlers are in place (Python's start-up
    before them, 40 ms quiet and over 100 ms on a busy machine, dies by the signal as any Python program)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{proc.pid}/status").read_text()
            caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
            if caught >> (signal.SIGTERM - 1) & 1:
                return
        time.sleep(0.005)
    raise AssertionError(f"{proc.args[0]} did not install its signal handlers within {timeout:.0f} s")


def sphere_logits(centre, radius, sharpness=50.0):
    """Logit field of a sphere: positive inside. ``(N, 3) -> (N,) float32``."""
    centre = np.asarray(centre, np.float64)

    def fn(points: np.ndarray) -> np.ndarray:
        return ((radius - np.linalg.norm(points - centre, axis=1)) * sharpness).astype(np.float32)

    return fn


LEARNS = ["--batch-size", "32", "--lr", "0.01"]
"""occ-train options under which a test's run of a few thousand points learns a ball in an epoch or two (the
default batch of 1,024 takes a few steps an epoch there, too few to learn anything)."""


def ball_points(n: int = 4000, seed: int = 0):
    """``(points (n, 3) float64, occupancies (n,) uint8)``: uniform in [-1, 1]^3, inside a ball of radius 0.6
    (11% inside)."""
    points = np.random.default_rng(seed).uniform(-1, 1, (n, 3))
    return points, (np.linalg.norm(points, axis=1) < 0.6).astype(np.uint8)


@contextlib.contextmanager
def cpu_hogs(count: int):
    """``count`` busy processes for the block, as other users' work on a shared machine."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True:\n    pass\n"]) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run a command's entry point (``occ-train`` ...) in this process, as its console script does, and
    capture exit status, stdout and stderr. An uncaught exception propagates: it would be a traceback."""
    from occnet.export.cli import export_main
    from occnet.runtime.cli import mesh_main
    from occnet.runtime.evalcli import eval_main
    from occnet.train.cli import train_main

    main = {"occ-train": train_main, "occ-export": export_main, "occ-mesh": mesh_main, "occ-eval": eval_main}[args[0]]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args[1:]))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def run_installed(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run an installed console script in a new process."""
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A small demo run (few points, few epochs, yet it learned the shape: validation IoU 0.55): its folder
    holds best.pt and last.pt."""
    from occnet.train.sampling import SamplingConfig, load_points
    from occnet.train.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("run")
    data = load_points(None, SamplingConfig(num_points=20_000), seed=0)
    train(data, TrainConfig(epochs=8, batch_size=64, device="cpu"), out)
    return out


@pytest.fixture(scope="session")
def trained_onnx(trained_run: Path, tmp_path_factory) -> Path:
    """``trained_run``'s best.pt exported to ONNX."""
    from occnet.export.onnx_export import export_checkpoint

    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_checkpoint(trained_run / "best.pt", out, verify_points=10_000)
    return out


def mesh_difference(a, b, atol=1e-5):
    """(faces of ``a`` not in ``b``, faces of ``b`` not in ``a``): each vertex of ``a`` is matched to ``b``'s
    nearest within ``atol`` (brick-local and whole-volume marching cubes may round a coordinate one float32
    step apart), each face taken as its three positions, rotated to start at the smallest. (0, 0) for the
    same mesh, however its arrays are ordered or its vertices numbered."""
    from scipy.spatial import cKDTree

    positions, inverse = np.unique(np.asarray(b.vertices, np.float64), axis=0, return_inverse=True)
    distance, index = cKDTree(positions).query(a.vertices)
    unmatched = distance >= atol                                  # a vertex of its own, in no face of b
    ids_a = np.where(unmatched, len(positions) + np.cumsum(unmatched) - 1, index)
    assert len(positions) + unmatched.sum() < 2**21             # three ids in one int64 below

    def faces(ids):
        start = np.argmin(ids, axis=1)[:, None]                   # rotate to the smallest, keep the winding
        ids = np.take_along_axis(ids, (start + np.arange(3)) % 3, axis=1).astype(np.int64)
        return np.unique((ids[:, 0] << 42) | (ids[:, 1] << 21) | ids[:, 2])

    fa, fb = faces(ids_a[np.asarray(a.faces)]), faces(inverse.reshape(-1)[np.asarray(b.faces)])
    return len(np.setdiff1d(fa, fb, assume_unique=True)), len(np.setdiff1d(fb, fa, assume_unique=True))


def processes_named(prefix: bytes) -> list[int]:
    """Ids of the processes whose command line starts with ``prefix`` (Ray names its workers after what they
    run: ``ray::run_shape``, ``ray::RayTrainWorker``)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(prefix):
                found.append(int(entry.name))
        except OSError:
            continue
    return sorted(found)
