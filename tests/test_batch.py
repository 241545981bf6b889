"""occ-batch against a real local Ray (started by the command, this machine's cores): a collection with a
broken file, a rerun that skips, a worker killed mid-task, Ctrl-C, the summary's columns and values."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from conftest import BIN, processes_named, run_installed
from test_cli import assert_clean_failure

from occnet.batch.sources import find_shapes
from occnet.batch.summary import COLUMNS
from occnet.runtime.errors import InputError, OccNetError, ResourceError
from occnet.runtime.evaluate import compare_meshes
from occnet.runtime.meshio import read_mesh
from occnet.train.config import SamplingConfig

pytest.importorskip("ray")

FAST = ["--epochs", "10", "--batch-size", "128", "--num-points", "10000", "--resolution", "32", "--eval-samples",
        "3000"]
"""Tiny runs that still learn their shape: a few seconds a shape."""


def make_collection(root: Path) -> Path:
    """Two meshes, a broken mesh and ONet's layout (points.npz beside a pointcloud.npz that is no shape)."""
    (root / "parts").mkdir(parents=True)
    trimesh.creation.icosphere(3, radius=0.4).export(root / "parts" / "ball.stl")
    trimesh.creation.box((1.0, 0.5, 0.3)).export(root / "parts" / "plate.obj")
    (root / "parts" / "broken.stl").write_text("solid nothing\nendsolid nothing\n")
    shape = root / "onet" / "02691156" / "1a2b"
    shape.mkdir(parents=True)
    points = np.random.default_rng(0).uniform(-0.5, 0.5, (20000, 3))
    inside = np.linalg.norm(points, axis=1) < 0.3
    np.savez(shape / "points.npz", points=points.astype(np.float16), occupancies=np.packbits(inside))
    np.savez(shape / "pointcloud.npz", points=points, normals=points)
    return root


def rows_of(out: Path) -> dict[str, dict]:
    with open(out / "summary.csv", newline="") as handle:
        return {row["name"]: row for row in csv.DictReader(handle)}


CLUSTER_ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_worker_niceness": "0"}   # the README's cluster notes
ADDRESS = "127.0.0.1:6389"


@pytest.fixture(scope="module")
def cluster():
    """A running cluster (`ray start --head`) for the tests that join one with `--address`: the batch of
    :func:`batch_run`, the rerun, the killed worker and SIGTERM (one Ray start for them all); the private-Ray
    test starts its own."""
    ray = [str(BIN / "ray")]
    started = subprocess.run([*ray, "start", "--head", "--num-cpus", "2", "--port", ADDRESS.split(":")[1],
                              "--include-dashboard", "false", "--disable-usage-stats"], capture_output=True,
                             text=True, env=CLUSTER_ENV, timeout=120)
    assert started.returncode == 0, started.stderr
    try:
        yield ["--address", ADDRESS]
    finally:
        subprocess.run([*ray, "stop", "--force"], capture_output=True, env=CLUSTER_ENV, timeout=120)


def on_cluster(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, env=CLUSTER_ENV,
                          timeout=timeout)


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory, cluster):
    """One batch over the collection on the running cluster: (collection, output folder, the command's result,
    `ray status` after it)."""
    root = make_collection(tmp_path_factory.mktemp("collection"))
    out = tmp_path_factory.mktemp("batch") / "out"
    result = on_cluster("occ-batch", str(root / "parts"), str(root / "onet"), "--out-dir", str(out), *cluster, *FAST)
    status = on_cluster("ray", "status", "--address", ADDRESS, timeout=60)
    return root, out, result, status


def test_the_cluster_outlives_the_batch(batch_run):
    assert batch_run[3].returncode == 0, batch_run[3].stderr


def test_names_of_files_folders_and_globs(tmp_path):
    root = make_collection(tmp_path)
    assert [s.name for s in find_shapes([root])] == ["onet/02691156/1a2b", "parts/ball", "parts/broken",
                                                     "parts/plate"]
    assert [s.name for s in find_shapes([str(root / "parts" / "*.stl")])] == ["ball", "broken"]
    assert [s.name for s in find_shapes([str(root / "*" / "02691156" / "*" / "points.npz")])] == [
        "onet/02691156/1a2b"]
    assert [s.name for s in find_shapes([root / "onet" / "02691156" / "1a2b" / "points.npz"])] == ["1a2b"]
    assert [s.name for s in find_shapes([root], exclude=root / "parts")] == ["onet/02691156/1a2b"]


@pytest.mark.parametrize("sources,message", [(["missing"], "does not exist"), (["*.nothing"], "no file matches"),
                                             (["notes.txt"], "unknown data format"), (["empty"], "no shapes found"),
                                             (["a/ball.stl", "b/ball.stl"], "would both be shape 'ball'")])
def test_bad_sources_are_refused(tmp_path, sources, message):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        trimesh.creation.box().export(tmp_path / folder / "ball.stl")
    with pytest.raises(InputError, match=message):
        find_shapes([str(tmp_path / s) for s in sources])


def test_a_broken_file_fails_alone(batch_run):
    root, out, result, _ = batch_run
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"occ-batch: error: 1 of 4 shapes failed (first: broken: train: broken: contains no "
        f"triangles); see {out / 'summary.csv'}")
    rows = rows_of(out)
    assert {name: row["status"] for name, row in rows.items()} == {
        "02691156/1a2b": "done", "ball": "done", "broken": "failed", "plate": "done"}
    assert not (out / "broken").exists()
    assert "shapes 4/4: 3 done, 1 failed, 0 skipped, 0 running" in result.stderr      # plain progress lines


def test_summary_columns_and_values(batch_run):
    root, out, _, _ = batch_run
    with open(out / "summary.csv", newline="") as handle:
        assert tuple(next(csv.reader(handle))) == COLUMNS
    rows = rows_of(out)
    for name in ("ball", "plate", "02691156/1a2b"):
        row, folder = rows[name], out / name
        assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "eval.json", "last.pt", "loss.png", "mesh.ply",
                                                           "metrics.csv", "model.onnx"]
        assert json.loads((folder / "eval.json").read_text())["input_sha256"] == row["input_sha256"]
        checkpoint = torch.load(folder / "best.pt", weights_only=True)
        assert float(row["val_iou"]) == pytest.approx(checkpoint["metrics"]["val_iou"], rel=1e-5)
        mesh = trimesh.load(folder / "mesh.ply")
        assert int(row["faces"]) == len(mesh.faces) and row["watertight"] == "True" and mesh.is_watertight
        assert all(float(row[f"seconds_{stage}"]) > 0 for stage in ("train", "export", "mesh", "eval"))
    for name, source in (("ball", "ball.stl"), ("plate", "plate.obj")):
        again = compare_meshes(read_mesh(out / name / "mesh.ply"), read_mesh(root / "parts" / source), 3000)
        assert float(rows[name]["chamfer_l1"]) == pytest.approx(again.chamfer_l1, rel=1e-5)
        assert float(rows[name]["f_score"]) == pytest.approx(again.fscore[0.01], rel=1e-5)
    points = rows["02691156/1a2b"]             # onnxruntime on the held-out points gives what training measured
    assert rows["ball"]["accuracy"] == "" and float(points["accuracy"]) > 0.8
    assert float(points["iou"]) == pytest.approx(float(points["val_iou"]), abs=2e-3)
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_rerun_skips_finished_shapes_and_redoes_changed_ones(batch_run, cluster, tmp_path):
    root, out, _, _ = batch_run
    work = tmp_path / "out"
    subprocess.run(["cp", "-a", str(out), str(work)], check=True)
    (root / "parts" / "plate.obj").rename(tmp_path / "plate.obj")            # keep the fixture's collection intact
    trimesh.creation.box((0.8, 0.6, 0.3)).export(root / "parts" / "plate.obj")
    try:
        before = {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file() and "summary" not in p.name}
        result = on_cluster("occ-batch", str(root / "parts" / "ball.stl"), str(root / "parts" / "plate.obj"),
                            "--out-dir", str(work), *cluster, *FAST)
    finally:
        (tmp_path / "plate.obj").replace(root / "parts" / "plate.obj")
    assert result.returncode == 0, result.stderr
    assert "1 done, 0 failed, 1 skipped (finished before)" in result.stdout
    assert rows_of(work).keys() == rows_of(out).keys()           # the rows of shapes not named this time stay
    changed = sorted({p.parent.relative_to(work).as_posix() for p, t in before.items() if p.stat().st_mtime_ns != t})
    assert changed == ["plate"]


def test_a_killed_worker_is_retried(cluster, tmp_path):
    root = make_collection(tmp_path / "c")
    out = tmp_path / "out"
    proc = subprocess.Popen([str(BIN / "occ-batch"), str(root / "parts" / "ball.stl"), "--out-dir", str(out),
                             *cluster, *FAST, "--epochs", "25"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CLUSTER_ENV)
    worker = None
    for _ in range(600):
        worker = next((pid for pid in ray_tasks()), None)
        if worker or proc.poll() is not None:
            break
        time.sleep(0.1)
    assert worker is not None, "no task started"
    time.sleep(1.5)
    os.kill(worker, signal.SIGKILL)
    retried = set()
    while proc.poll() is None and not retried:              # Ray runs the task again in another worker
        retried = set(ray_tasks()) - {worker}
        time.sleep(0.1)
    _, err = proc.communicate(timeout=300)
    assert retried, "the task was not run again"
    assert proc.returncode == 0, err
    assert rows_of(out)["ball"]["status"] == "done" and (out / "ball" / "mesh.ply").is_file()


def ray_tasks() -> list[int]:
    """Processes running an occ-batch task."""
    return processes_named(b"ray::run_shape")


def test_sigterm_stops_the_batch_and_a_rerun_continues(cluster, tmp_path):
    """SIGTERM, not Ctrl-C: ray.init replaces the SIGTERM handler (its own ended the batch by SIGABRT and a
    stack dump); Ctrl-C takes the same way out as in every other command."""
    root = make_collection(tmp_path / "c")
    out = tmp_path / "out"
    command = [str(BIN / "occ-batch"), str(root / "parts"), "--out-dir", str(out), "--threads-per-shape", "2",
               *cluster, *FAST]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,   # one at a time
                            env=CLUSTER_ENV)
    for _ in range(1200):
        if (out / "summary.csv").exists() and any(r["status"] == "done" for r in rows_of(out).values()):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("occ-batch: error: interrupted; finished shapes are kept")
    assert "Traceback" not in err
    time.sleep(1.0)
    assert ray_tasks() == [], "the batch left Ray tasks running"
    assert {name for name, row in rows_of(out).items() if row["status"] == "done"} == {"ball"}
    command[1] = str(root / "parts" / "ball.stl")               # a rerun on the finished shape only redoes nothing
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=CLUSTER_ENV)
    assert result.returncode == 0 and "0 done, 0 failed, 1 skipped" in result.stdout, result.stderr


def test_without_ray_the_command_names_the_extra(tmp_path):
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "__init__.py").write_text("raise ModuleNotFoundError('no ray', name='ray')\n")
    result = subprocess.run([sys.executable, "-c", "from occnet.batch.cli import batch_main; batch_main()",
                             "x", "--out-dir", str(tmp_path / "o")], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert_clean_failure(result, "occ-batch", "pip install 'occnet[batch]'")
    assert not (tmp_path / "o").exists()


def test_a_result_naming_files_the_job_does_not_write_fails_the_shape(tmp_path):
    """Only a worker of ours names its files; anything else (a stranger's cluster) is not written."""
    from occnet.batch.job import BatchSettings, ShapeResult
    from occnet.batch.runner import _record
    from occnet.batch.sources import Shape

    result = ShapeResult("ball", "", {"train": 1.0}, {"iou": 1.0}, {"mesh.ply": b"ply", "../../evil.sh": b"x"}, 0.0)
    row = _record(result, Shape("ball", tmp_path / "ball.stl"), "digest", "settings", tmp_path / "out",
                  BatchSettings().outputs, BatchSettings().stages)
    assert row["status"] == "failed" and row["error"].startswith("worker: returned files the job does not write: "
                                                                 "'../../evil.sh'")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.sh").exists()



def test_a_shape_whose_model_learned_nothing_is_a_failed_row(tmp_path):
    from occnet.batch.job import BatchSettings, run_shape
    from occnet.train.config import TrainConfig

    trimesh.creation.icosphere(3, radius=0.4).export(tmp_path / "ball.stl")
    settings = BatchSettings(train=TrainConfig(epochs=1, lr=1e-30, device="cpu"),
                             sampling=SamplingConfig(num_points=5000))
    result = run_shape("ball", ".stl", (tmp_path / "ball.stl").read_bytes(), settings)
    assert not result.ok and result.files == {}
    assert result.error.startswith("train: the model did not learn the shape: best.pt (epoch 1 of 1) has "
                                   "validation IoU 0.")


@pytest.mark.parametrize("change,option", [({"eval_samples": 2_000_000_000}, "--eval-samples"),
                                           ({"sampling": SamplingConfig(num_points=2_000_000_000)}, "--num-points")])
def test_sizes_the_machine_cannot_hold_are_refused_before_any_work(tmp_path, change, option):
    """Before: the shapes trained, then Ray's out-of-memory killer ended the scoring, again and again."""
    from occnet.batch.job import BatchSettings
    from occnet.batch.runner import run_batch
    from occnet.batch.sources import Shape

    with pytest.raises(ResourceError, match=f"{option} 2,000,000,000 needs about .* would fit"):
        run_batch([Shape("ball", tmp_path / "ball.stl")], BatchSettings(**change), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_summary_resaved_by_a_spreadsheet_or_cut_short_still_reads(tmp_path):
    from occnet.batch.summary import read_summary, write_summary

    header = ",".join(COLUMNS)
    good = ",".join({"name": "a", "status": "done", "input_sha256": "x", "settings": "y"}.get(c, "") for c in COLUMNS)
    (tmp_path / "summary.csv").write_text("\ufeff" + "\n".join([header, good, "b,done", good.replace("a,", "c,", 1)
                                                                 + ",extra"]) + "\n", encoding="utf-8")
    rows = read_summary(tmp_path / "summary.csv")
    assert list(rows) == ["a"] and rows["a"]["status"] == "done"        # short and long rows: done again
    write_summary(rows, tmp_path / "again.csv")
    assert read_summary(tmp_path / "again.csv") == rows
    (tmp_path / "empty.csv").write_text("")
    assert read_summary(tmp_path / "empty.csv") == {}


def test_symlinked_shape_folders_are_followed_once_and_loops_end(tmp_path):
    from occnet.batch.sources import find_shapes

    store = tmp_path / "store"
    (store / "chair" / "a").mkdir(parents=True)
    trimesh.creation.box().export(store / "chair" / "a" / "model.stl")
    collection = tmp_path / "collection"
    collection.mkdir()
    (collection / "chair").symlink_to(store / "chair", target_is_directory=True)
    (store / "chair" / "a" / "up").symlink_to(collection, target_is_directory=True)     # a loop back up
    trimesh.creation.box().export(collection / "plain.obj")
    assert [(s.name, s.source.name) for s in find_shapes([collection])] == [("chair/a/model", "model.stl"),
                                                                            ("plain", "plain.obj")]


def test_a_private_ray_runs_workers_at_our_priority_and_an_input_gone_during_the_batch_is_its_row(tmp_path,
                                                                                                 monkeypatch):
    """Ray's workers run at niceness 15 by default: beside 4 CPU hogs a task got 2% of a core. An input
    deleted during a batch aborted the whole batch and cancelled its running shapes. RAY_ADDRESS naming a
    cluster nobody runs does not stop a private Ray. A GPU this machine does not have is refused (Ray would
    wait for one forever). A conditional model reconstructs a folder of observations on it. (One test: one
    Ray.)"""
    import ray

    from occnet.batch.job import BatchSettings
    from occnet.batch.runner import run_batch, start_ray
    from occnet.batch.sources import find_shapes

    trimesh.creation.icosphere(3, radius=0.4).export(tmp_path / "gone.stl")
    shapes = find_shapes([tmp_path / "gone.stl"])
    (tmp_path / "gone.stl").unlink()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    start_ray(ray, None)
    try:
        probe = ray.remote(lambda: (os.nice(0), os.environ.get("OMP_WAIT_POLICY")))
        assert ray.get(probe.remote()) == (0, "PASSIVE")
        report = run_batch(shapes, BatchSettings(), tmp_path / "out")          # on the Ray already running
        trimesh.creation.icosphere(2).export(tmp_path / "ball.stl")
        with pytest.raises(InputError, match="--gpus-per-shape 0.5 is more than any machine of the Ray cluster has "
                                             r"\(0 GPUs\)"):
            run_batch(find_shapes([tmp_path / "ball.stl"]), BatchSettings(gpus_per_shape=0.5), tmp_path / "gpu")
        reconstruct_observations(tmp_path / "observations")
    finally:
        ray.shutdown()
    assert (report.done, report.failed) == (0, 1)
    assert report.rows["gone"]["error"].startswith("read: cannot read ") and "gone.stl" in report.rows["gone"]["error"]
    assert rows_of(tmp_path / "out")["gone"]["status"] == "failed"


def conditional_model(folder: Path) -> tuple[Path, float]:
    """A small ONet point-cloud model exported to ``folder/onet.onnx``, and a threshold its field crosses."""
    from test_conditional import CLOUD, middle_threshold, torch_logits
    from test_onet import SMALL, onet_bytes, onet_model

    from occnet.export.onnx_export import export_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    network = onet_model(SMALL["pointnet_resnet"])
    (folder / "model_best.pt").write_bytes(onet_bytes(network))
    export_checkpoint(folder / "model_best.pt", folder / "onet.onnx", verify_points=1000)
    return folder / "onet.onnx", middle_threshold(torch_logits(network, CLOUD))


def reconstruct_observations(root: Path) -> None:
    """``occ-batch DATASET --model onet.onnx``: ONet's layout (each shape's pointcloud.npz reconstructed, its
    labelled points.npz passed over) and loose files; a broken one is its row; a rerun skips the rest."""
    import typer
    from test_conditional import CLOUD

    from occnet.batch.cli import batch_app

    model, threshold = conditional_model(root / "model")
    for index, shape in enumerate(("1a2b", "3c4d")):
        folder = root / "data" / "02691156" / shape
        folder.mkdir(parents=True)
        np.savez(folder / "pointcloud.npz", points=CLOUD * (1 + 0.1 * index), normals=CLOUD)
        np.savez(folder / "points.npz", points=CLOUD, occupancies=np.packbits(CLOUD[:, 0] > 0))
    np.savetxt(root / "data" / "scan.xyz", CLOUD * 100)
    (root / "data" / "broken.xyz").write_text("1 2\n")
    args = [str(root / "data"), "--model", str(model), "--out-dir", str(root / "out"), "--resolution", "24",
            "--threshold", str(threshold), "--normalize"]
    command = typer.main.get_command(batch_app)
    with pytest.raises(OccNetError, match=r"1 of 4 point clouds failed \(first: broken: reconstruct: "):
        command.main(args=args, standalone_mode=False)
    rows = rows_of(root / "out")
    assert sorted(rows) == ["02691156/1a2b", "02691156/3c4d", "broken", "scan"]
    assert rows["broken"]["status"] == "failed" and rows["broken"]["error"].startswith("reconstruct: ")
    for name in ("02691156/1a2b", "02691156/3c4d", "scan"):
        assert rows[name]["status"] == "done" and float(rows[name]["seconds_reconstruct"]) > 0
        mesh = trimesh.load(root / "out" / name / "mesh.ply")
        assert mesh.is_watertight and len(mesh.faces) == int(rows[name]["faces"]) > 100
    scan = trimesh.load(root / "out" / "scan" / "mesh.ply")                 # --normalize: back in its units
    assert np.abs(scan.bounds).max() > 20
    assert rows["scan"]["seconds_train"] == "" and rows["scan"]["val_iou"] == ""
    (root / "data" / "broken.xyz").unlink()
    command.main(args=args, standalone_mode=False)                         # the rest is finished: all skipped
    assert rows_of(root / "out")["scan"]["input_sha256"] == rows["scan"]["input_sha256"]


@pytest.mark.parametrize("args,match", [
    (["--epochs", "5"], "--epochs cannot be combined with --model: its observations are reconstructed"),
    (["--eval-samples", "10"], "--eval-samples cannot be combined with --model"),
])
def test_training_options_with_a_model_are_refused_by_name(tmp_path, args, match):
    """Refused before the model is read (any file will do)."""
    np.savetxt(tmp_path / "scan.xyz", np.zeros((5, 3)))
    result = run_installed("occ-batch", str(tmp_path / "scan.xyz"), "--model", str(tmp_path / "scan.xyz"),
                           "--out-dir", str(tmp_path / "out"), *args)
    assert_clean_failure(result, "occ-batch", match)
    assert not (tmp_path / "out").exists()


def test_a_model_that_is_not_conditional_and_normalize_without_one_are_refused(tmp_path):
    from conftest import DEMO_ONNX

    np.savetxt(tmp_path / "scan.xyz", np.zeros((5, 3)))
    for args, match in ((["--model", str(DEMO_ONNX)], "is not a conditional model: --model reconstructs observations"),
                        (["--normalize"], "--normalize maps observations into a conditional model's frame; give "
                                          "--model")):
        result = run_installed("occ-batch", str(tmp_path / "scan.xyz"), "--out-dir", str(tmp_path / "out"), *args)
        assert_clean_failure(result, "occ-batch", match)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("names,clash", [(["summary.csv", "a"], "summary.csv"), (["summary.png"], "summary.png"),
                                         (["x", "x/eval.json"], "x/eval.json"), (["x", "x/mesh.ply"], "x/mesh.ply")])
def test_shape_names_that_would_be_the_folders_own_files_are_refused_before_any_work(tmp_path, names, clash):
    from occnet.batch.job import BatchSettings
    from occnet.batch.runner import run_batch
    from occnet.batch.sources import Shape

    with pytest.raises(InputError, match=f"shape name '{clash}' would be the output folder's own file"):
        run_batch([Shape(name, tmp_path / f"{name}.stl") for name in names], BatchSettings(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_task_trains_on_the_threads_it_is_given():
    """The weights depend on the thread count, so it is the training option, set by the task's share."""
    from occnet.batch.job import BatchSettings

    assert BatchSettings(threads_per_shape=2).train.threads == 2
    assert BatchSettings(threads_per_shape=2).fingerprint() != BatchSettings().fingerprint()


def test_wildcard_characters_in_folder_names_are_those_characters(tmp_path):
    """A folder that exists is taken as named, ``[`` and ``*`` included; a glob below it keeps them too."""
    for folder in ("scans[1]", "scans1", "a*b"):
        (tmp_path / folder).mkdir()
    for path in ("scans[1]/ball.stl", "scans[1]/box.stl", "scans1/decoy.stl", "a*b/c.stl"):
        trimesh.creation.box().export(tmp_path / path)
    assert [s.name for s in find_shapes([tmp_path / "scans[1]"])] == ["ball", "box"]
    assert [s.name for s in find_shapes([str(tmp_path / "scans[1]" / "b*.stl")])] == ["ball", "box"]
    assert [s.name for s in find_shapes([str(tmp_path / "scans[1]" / "*")])] == ["ball", "box"]
    assert [s.name for s in find_shapes([tmp_path / "a*b"])] == ["c"]
    assert [s.name for s in find_shapes([str(tmp_path / "scans?")])] == ["decoy"]


def test_a_source_inside_the_output_folder_is_refused_by_name(tmp_path):
    """Results never count as shapes, so a source in ``--out-dir`` would be passed over in silence and the
    batch would say "no shapes found"."""
    out = tmp_path / "out"
    (out / "shapes").mkdir(parents=True)
    trimesh.creation.box().export(out / "shapes" / "ball.stl")
    result = subprocess.run([str(BIN / "occ-batch"), str(out / "shapes"), "--out-dir", str(out)],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": "x:1"})
    note, *rest = result.stderr.strip().splitlines()                  # RAY_ADDRESS is said unused at once
    assert note == "note: RAY_ADDRESS=x:1 is not used: without --address occ-batch starts a private Ray on this machine"
    assert_clean_failure(subprocess.CompletedProcess(result.args, result.returncode, result.stdout, "\n".join(rest)),
                         "occ-batch", f"{out / 'shapes'} lies in the output folder {out}, where occ-batch writes its "
                                      "results")
    assert sorted(p.name for p in out.rglob("*")) == ["ball.stl", "shapes"]
    for source in (out, out / "shapes" / "ball.stl"):
        with pytest.raises(InputError, match=f"{source} lies in the output folder {out}"):
            find_shapes([source], exclude=out)


def test_outputs_columns_and_fingerprint_are_derived_from_the_stages(monkeypatch):
    """A stage is declared once: its files are the shape's outputs, its scores and time the summary's columns,
    its settings the fingerprint; a score no stage declares stops the task instead of vanishing."""
    from occnet.batch import job
    from occnet.batch.job import EVAL_FILE, STAGES, BatchSettings, Stage, run_shape

    settings = BatchSettings(mesh_format="glb")
    assert settings.outputs == (*job.RUN_FILES, "model.onnx", "mesh.glb", EVAL_FILE)
    assert {f"seconds_{stage.name}" for stage in STAGES} | {c for stage in STAGES for c in stage.scores} <= set(COLUMNS)
    record = {key: value for stage in STAGES for key, value in stage.settings(settings).items()}
    assert record.keys() == {"train", "sampling", "mesh", "mesh_format", "eval_samples"}
    assert settings.fingerprint() != BatchSettings().fingerprint() == BatchSettings(gpus_per_shape=0.5).fingerprint()

    def scores(work):
        work.scores["mystery"] = 1.0

    def fails(work):
        raise ValueError("no surface")

    monkeypatch.setattr(job, "STAGES", (Stage("probe", scores, lambda s: (), ("probed",), lambda s: {}),))
    with pytest.raises(RuntimeError, match=r"stages gave scores no stage declares: \['mystery'\]"):
        run_shape("x", ".stl", b"", settings)
    monkeypatch.setattr(job, "STAGES", (Stage("probe", fails, lambda s: (), (), lambda s: {}),))
    result = run_shape("x", ".stl", b"", settings)
    assert result.error == "probe: ValueError: no surface" and result.files == {}
