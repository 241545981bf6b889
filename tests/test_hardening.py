"""Faults and hostile input: killed runs lose nothing, nothing is executed, results repeat exactly."""

import hashlib
import shutil
import signal
import subprocess
import time

import numpy as np
import onnx
import pytest
import torch
from conftest import BIN, DEMO_ONNX, cpu_hogs, run_installed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from occnet.runtime.errors import InputError, ModelError
from occnet.runtime.points import load_npz, make_point_set
from occnet.runtime.session import OccupancyModel
from occnet.train.checkpoint import load_checkpoint

TRAIN = ["--num-points", "3000", "--epochs", "30", "--batch-size", "256", "--device", "cpu", "--seed", "3"]


def rows(path):
    try:
        return len(path.read_text().splitlines()) - 1
    except FileNotFoundError:
        return 0


def start_and_wait(out, epochs_done):
    proc = subprocess.Popen([str(BIN / "occ-train"), "--out-dir", str(out), *TRAIN], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while rows(out / "metrics.csv") < epochs_done and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    return proc


def weights(path):
    return load_checkpoint(path).model_state


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    result = run_installed("occ-train", "--out-dir", str(out), *TRAIN)
    assert result.returncode == 0, result.stderr
    return out


def test_sigkill_loses_nothing_and_resume_ends_where_an_uninterrupted_run_ends(tmp_path, uninterrupted):
    proc = start_and_wait(tmp_path, 3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    last = load_checkpoint(tmp_path / "last.pt")
    load_checkpoint(tmp_path / "best.pt")
    assert 3 <= last.state["epoch"] < 30
    resumed = run_installed("occ-train", "--resume", str(tmp_path))
    assert resumed.returncode == 0, resumed.stderr
    a, b = weights(uninterrupted / "best.pt"), weights(tmp_path / "best.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (uninterrupted / "metrics.csv").read_text().splitlines()[-1].split(",")[:6] == \
        (tmp_path / "metrics.csv").read_text().splitlines()[-1].split(",")[:6]


def test_ctrl_c_stops_cleanly_with_one_line(tmp_path):
    proc = start_and_wait(tmp_path, 2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    lines = [line for line in err.splitlines() if not line.startswith("data:")]
    assert len(lines) == 1 and "interrupted" in lines[0] and "--resume" in lines[0], err
    assert "Traceback" not in err
    load_checkpoint(tmp_path / "best.pt")
    load_checkpoint(tmp_path / "last.pt")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_same_inputs_same_best_pt_weights_on_a_busy_machine(tmp_path, uninterrupted):
    with cpu_hogs(2):
        again = run_installed("occ-train", "--out-dir", str(tmp_path), *TRAIN)
    assert again.returncode == 0, again.stderr
    a, b = weights(uninterrupted / "best.pt"), weights(tmp_path / "best.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_occ_mesh_is_repeatable_to_the_byte(tmp_path):
    digests = set()
    for name in ("a.ply", "b.ply"):
        result = run_installed("occ-mesh", str(DEMO_ONNX), "--resolution", "80", "-o", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
        digests.add(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert len(digests) == 1


def external_copy(folder, location):
    """The demo model with its weights in a separate file named by ``location`` (relative to the model)."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(onnx.load(DEMO_ONNX), folder / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=1000)
    proto = onnx.load(folder / "m.onnx", load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    (folder / "m.onnx").write_bytes(proto.SerializeToString())
    return folder / "m.onnx"


def test_external_data_outside_the_models_folder_is_refused(tmp_path):
    inside = external_copy(tmp_path / "ok", "weights.bin")
    assert OccupancyModel(inside, device="cpu").logits(np.zeros((2, 3), np.float32)).shape == (2,)
    evil = external_copy(tmp_path / "sub", "../secret.bin")
    shutil.copy(tmp_path / "sub" / "weights.bin", tmp_path / "secret.bin")
    with pytest.raises(ModelError, match="escapes"):
        OccupancyModel(evil, device="cpu")


arrays = hnp.arrays(dtype=st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_, np.float16]),
                    shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=200),
                    elements=None)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(points=arrays, labels=arrays)
def test_point_validation_accepts_or_raises_input_error(points, labels):
    try:
        data = make_point_set(points, labels, "fuzz")
    except InputError:
        return
    assert data.points.shape == (len(data.labels), 3) and np.isfinite(data.points).all()
    assert set(np.unique(data.labels)) == {0.0, 1.0}


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=4000))
def test_npz_loader_on_arbitrary_bytes(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("fuzz") / "d.npz"
    path.write_bytes(content)
    with pytest.raises(InputError):
        load_npz(path)
