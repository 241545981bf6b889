"""Data-parallel training of a conditional model on Ray Train, with 2 CPU workers on this machine."""

import os
import signal
import subprocess
import time

import pytest
import torch
from conftest import BIN, processes_named, run_cli
from test_cli import assert_clean_failure

from occnet.train.collection import synthetic_collection

pytest.importorskip("ray.train")

RUN = ["--steps-per-epoch", "4", "--batch-shapes", "4", "--points-per-shape", "256", "--val-points", "512",
       "--cloud-points", "100", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return synthetic_collection(tmp_path_factory.mktemp("synthetic"), per_class=3, seed=0)


def test_two_workers_see_as_many_samples_as_one_process_and_write_the_same_checkpoint(tmp_path):
    """A folder of meshes: prepared in this process for one, as Ray tasks for two workers (the same bytes), then
    trained."""
    from test_collection import mesh_folder

    source = mesh_folder(tmp_path / "src")
    one = run_cli("occ-train", str(source), "--out-dir", str(tmp_path / "one"), "--epochs", "3", *RUN)
    two = run_cli("occ-train", str(source), "--out-dir", str(tmp_path / "two"), "--epochs", "3", *RUN,
                  "--workers", "2")
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    assert "training on 2 Ray Train workers" in two.stderr
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["best.pt", "collection", "last.pt", "loss.png",
                                                                     "metrics.csv"]
    prepared = [p.relative_to(tmp_path / "one") for p in (tmp_path / "one" / "collection").rglob("*") if p.is_file()]
    assert len(prepared) == 8 * 3 + 2 * 3 + 1                     # 8 shapes' files, 2 classes' lists, the record
    for name in prepared:
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    single = torch.load(tmp_path / "one" / "last.pt", weights_only=False)
    parallel = torch.load(tmp_path / "two" / "last.pt", weights_only=False)
    assert single["it"] == parallel["it"] == 12 and parallel["epoch_it"] == 3      # steps of 4 shapes each
    assert single["model"].keys() == parallel["model"].keys()                      # no DDP "module." prefix
    history = parallel["occnet"]["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    exported = run_cli("occ-export", str(tmp_path / "two" / "best.pt"), str(tmp_path / "m.onnx"))
    assert exported.returncode == 0, exported.stderr


def test_a_killed_worker_does_not_lose_the_run(collection, tmp_path):
    """SIGKILL to one Ray Train worker once the first epoch is written: the workers restart and continue from
    last.pt; every epoch is in the history and the command exits 0."""
    out = tmp_path / "run"
    proc = subprocess.Popen([str(BIN / "occ-train"), str(collection.root), "--out-dir", str(out), "--epochs", "12",
                             *RUN, "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not (out / "last.pt").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    workers = train_workers()
    assert len(workers) == 2, "the workers were not found running"
    os.kill(workers[1], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    state = torch.load(out / "last.pt", weights_only=False)
    assert [m["epoch"] for m in state["occnet"]["history"]] == list(range(1, 13))


def train_workers() -> list[int]:
    """Processes of Ray Train workers."""
    return processes_named(b"ray::RayTrainWorker")


@pytest.mark.parametrize("args,match", [
    (["--workers", "3"], "--workers 3 must be at least 1 and divide --batch-shapes 4"),
])
def test_workers_that_do_not_divide_the_batch_are_refused(collection, tmp_path, args, match):
    result = run_cli("occ-train", str(collection.root), "--out-dir", str(tmp_path / "run"), *RUN, *args)
    assert_clean_failure(result, "occ-train", match)


def test_workers_for_a_single_shape_are_refused(tmp_path):
    result = run_cli("occ-train", "--out-dir", str(tmp_path / "run"), "--workers", "2")
    assert_clean_failure(result, "occ-train", "--workers, --address and --gpus-per-worker train a collection")
    assert not (tmp_path / "run").exists()



def test_a_mesh_that_cannot_be_read_comes_back_from_its_ray_worker_as_one_line(tmp_path):
    from test_collection import mesh_folder

    from occnet.batch.prepare import ray_mapper
    from occnet.runtime.errors import InputError
    from occnet.train.collection import prepare_meshes

    source = mesh_folder(tmp_path / "src")
    (source / "balls" / "ball9.stl").write_bytes(b"solid nothing\nendsolid nothing\n" * 3)
    with pytest.raises(InputError, match="^balls/ball9: contains no triangles$"):
        prepare_meshes(source, tmp_path / "prepared", mapper=ray_mapper())
