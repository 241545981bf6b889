"""Every command, run as a user runs it: bad input gets one line, a non-zero exit, no traceback, no file."""

import hashlib
import json
import os

import numpy as np
import pytest
import trimesh
from conftest import LEARNS, ball_points, run_cli, run_installed

from occnet.runtime.contract import Architecture, ModelInfo


def assert_clean_failure(result, prog, match=None):
    """A non-zero exit with one error line on stderr (besides occ-train's ``data:`` summary), no traceback."""
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("data: ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{prog}: error: ")
    assert "Traceback" not in result.stderr + result.stdout
    if match:
        assert match in lines[0], lines[0]


def listing(path):
    return sorted(p.name for p in path.rglob("*"))


def contents(path):
    """Every file under ``path`` with a digest of its bytes: equal before and after means untouched."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in path.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, trained_run, trained_onnx):
    """A folder of good and bad inputs for the three commands."""
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    pts, occ = ball_points(4000)
    pts = pts.astype(np.float32)
    np.savez(d / "good.npz", points=pts, occupancies=occ)
    np.savez(d / "nan.npz", points=np.where(np.arange(4000)[:, None] == 0, np.nan, pts), occupancies=occ)
    np.savez(d / "labels2.npz", points=pts, occupancies=occ * 2)
    np.savez(d / "few.npz", points=pts[:20], occupancies=occ[:20])
    np.savez(d / "allin.npz", points=pts, occupancies=np.ones(4000, np.uint8))
    np.savez(d / "nokeys.npz", a=pts)
    np.savez(d / "mismatch.npz", points=pts, occupancies=occ[:-7])
    np.savez(d / "shape.npz", points=pts[:, :2], occupancies=occ)
    for suffix in (".npz", ".obj", ".ply", ".stl", ".off", ".glb", ".onnx", ".pt"):
        (d / f"random{suffix}").write_bytes(rng.bytes(3000))
        (d / f"empty{suffix}").write_bytes(b"")
    (d / "truncated.pt").write_bytes((trained_run / "best.pt").read_bytes()[:2000])
    (d / "truncated.onnx").write_bytes(trained_onnx.read_bytes()[:3000])
    (d / "truncated.npz").write_bytes((d / "good.npz").read_bytes()[:900])
    (d / "data.csv").write_text("1,2,3\n")
    sphere = trimesh.creation.icosphere(3)
    bowl = sphere.faces[sphere.triangles_center[:, 2] < 0.7]
    trimesh.Trimesh(sphere.vertices, bowl, process=False).export(d / "open.obj")
    half = sphere.faces[sphere.triangles_center[:, 2] < 0]
    trimesh.Trimesh(sphere.vertices, half, process=False).export(d / "hemisphere.obj")
    return d


@pytest.mark.parametrize("name,match", [
    ("missing.npz", "not found"), ("random.npz", "not a readable .npz"), ("empty.npz", "not a readable"),
    ("truncated.npz", "not a readable"), ("nan.npz", "NaN"), ("labels2.npz", "labels must be 0"),
    ("few.npz", "too few"), ("allin.npz", "all 4000 points are inside"), ("nokeys.npz", "found keys"),
    ("mismatch.npz", "labels of shape"), ("shape.npz", "shape (N, 3)"), ("data.csv", "unknown data format"),
    ("random.obj", None), ("random.ply", None), ("random.stl", None), ("random.off", None),
    ("random.glb", None), ("empty.obj", None), ("empty.stl", None), ("hemisphere.obj", "ambiguous"),
])
def test_occ_train_bad_data(inputs, tmp_path, name, match):
    before = contents(inputs)
    result = run_cli("occ-train", str(inputs / name), "--out-dir", str(tmp_path / "run"), "--epochs", "1")
    assert_clean_failure(result, "occ-train", match)
    assert contents(inputs) == before
    assert not (tmp_path / "run").exists() or listing(tmp_path / "run") == []


@pytest.mark.parametrize("args,match", [
    (["--epochs", "0"], "epochs"), (["--batch-size", "0"], "batch size"), (["--val-fraction", "1.0"], "val"),
    (["--lr", "-1"], "learning rate"), (["--num-points", "5"], "num points"), (["--device", "tpu"], "tpu"),
    (["--epochs", "many"], "--epochs"), (["--hidden-size", "0"], "hidden"), (["--bogus"], "bogus"),
    (["--time-budget", "0"], "time budget"), (["--time-budget", "nan"], "time budget"),
    (["--patience", "0"], "patience"),
])
def test_occ_train_bad_options(tmp_path, args, match):
    result = run_cli("occ-train", "--out-dir", str(tmp_path / "run"), *args)
    assert_clean_failure(result, "occ-train", match)


def test_occ_train_unwritable_out_dir(tmp_path):
    (tmp_path / "file").write_text("x")
    assert_clean_failure(run_cli("occ-train", "--out-dir", str(tmp_path / "file")), "occ-train", "is a file")
    if os.geteuid() != 0:     # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert_clean_failure(run_cli("occ-train", "--out-dir", str(locked)), "occ-train", "not writable")


def test_occ_train_fails_a_run_that_learned_nothing_and_keeps_its_files(inputs, tmp_path):
    result = run_cli("occ-train", str(inputs / "good.npz"), "--out-dir", str(tmp_path), "--epochs", "1", "--lr",
                     "1e-30")
    assert_clean_failure(result, "occ-train", "the model did not learn the shape: best.pt (epoch 1 of 1) has "
                         "validation IoU 0.")
    assert "(at least 0.5 needed); train longer (--epochs)" in result.stderr
    assert listing(tmp_path) == ["best.pt", "last.pt", "loss.png", "metrics.csv"]


def test_occ_train_npz_end_to_end_and_refuses_to_overwrite(inputs, tmp_path):
    result = run_installed("occ-train", str(inputs / "good.npz"), "--out-dir", str(tmp_path), "--epochs", "2", *LEARNS)
    assert result.returncode == 0, result.stderr
    assert "best.pt from epoch" in result.stdout and "val IoU" in result.stdout
    assert "(stopped: 2 epochs)" in result.stdout
    assert listing(tmp_path) == ["best.pt", "last.pt", "loss.png", "metrics.csv"]
    before = (tmp_path / "best.pt").read_bytes()
    again = run_installed("occ-train", str(inputs / "good.npz"), "--out-dir", str(tmp_path), "--epochs", "2", *LEARNS)
    assert_clean_failure(again, "occ-train", "--resume")
    assert (tmp_path / "best.pt").read_bytes() == before


@pytest.mark.parametrize("name,match", [
    ("missing.pt", "not found"), ("random.pt", "not a PyTorch checkpoint"), ("empty.pt", "not a PyTorch"),
    ("truncated.pt", "not a PyTorch checkpoint"), ("good.npz", "not a PyTorch checkpoint"),
])
def test_occ_export_bad_checkpoints(inputs, tmp_path, name, match):
    result = run_cli("occ-export", str(inputs / name), str(tmp_path / "m.onnx"))
    assert_clean_failure(result, "occ-export", match)
    assert listing(tmp_path) == []


def test_occ_export_output_in_missing_folder(trained_run, tmp_path):
    result = run_cli("occ-export", str(trained_run / "best.pt"), str(tmp_path / "no" / "m.onnx"))
    assert_clean_failure(result, "occ-export", "does not exist")


def test_occ_export_prints_a_summary(trained_run, tmp_path):
    result = run_cli("occ-export", str(trained_run / "best.pt"), str(tmp_path / "m.onnx"))
    assert result.returncode == 0, result.stderr
    size = (tmp_path / "m.onnx").stat().st_size / 1024
    assert result.stdout.startswith(f"wrote {tmp_path / 'm.onnx'}: {size:.1f} KiB, opset ")
    assert "onnxruntime error" in result.stdout and "PyTorch float32 error" in result.stdout
    assert "(limit 4x)" in result.stdout and "inside/outside agree" in result.stdout


@pytest.mark.parametrize("name,args,match", [
    ("missing.onnx", [], "not found"), ("random.onnx", [], "not a usable ONNX"),
    ("empty.onnx", [], "not a usable ONNX"), ("truncated.onnx", [], "not a usable ONNX"),
    ("good.npz", [], "not a usable ONNX"),
    ("MODEL", ["--resolution", "1"], "resolution"), ("MODEL", ["--resolution", "0"], "resolution"),
    ("MODEL", ["--resolution", "1000000"], "would fit"), ("MODEL", ["--threshold", "1.5"], "threshold"),
    ("MODEL", ["--threshold", "0"], "threshold"), ("MODEL", ["--batch-size", "0"], "batch size"),
    ("MODEL", ["--output", "x.xyz"], "unknown mesh format"), ("MODEL", ["--output", "no/x.ply"], "does not exist"),
    ("MODEL", ["--device", "cuda"], "CUDA"), ("MODEL", ["--method", "magic"], "magic"),
    ("MODEL", ["--threads", "-2"], "threads"), ("MODEL", ["--min-faces", "-1"], "min faces"),
])
def test_occ_mesh_bad_input(inputs, trained_onnx, tmp_path, name, args, match):
    model = trained_onnx if name == "MODEL" else inputs / name
    args = [a if a not in ("x.xyz", "no/x.ply") else str(tmp_path / a) for a in args]
    if "--output" not in args:
        args += ["--output", str(tmp_path / "m.ply")]
    result = run_cli("occ-mesh", str(model), "--resolution", "32", *args)
    assert_clean_failure(result, "occ-mesh", match)
    assert listing(tmp_path) == []


def test_occ_mesh_empty_surface_writes_nothing(tmp_path):
    from test_session import sphere_model

    info = ModelInfo((5.0, 5.0, 5.0), (6.0, 6.0, 6.0), Architecture())   # sphere far outside this box
    model = sphere_model(tmp_path / "far.onnx", metadata=info.to_metadata())
    result = run_cli("occ-mesh", str(model), "--resolution", "16")
    assert_clean_failure(result, "occ-mesh", "no surface")
    assert listing(tmp_path) == ["far.onnx"]


def test_occ_mesh_json_and_default_output(trained_onnx, tmp_path):
    model = tmp_path / "demo.onnx"
    model.write_bytes(trained_onnx.read_bytes())
    result = run_installed("occ-mesh", str(model), "--resolution", "48", "--json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert {"method", "provider", "resolution", "points_evaluated", "seconds_inference", "field_bytes",
            "seconds_marching_cubes", "seconds_total", "vertices", "faces", "watertight"} <= set(figures)
    assert figures["watertight"] is True and figures["resolution"] == 48
    assert figures["field_bytes"] > 0
    mesh = trimesh.load(tmp_path / "demo.ply")
    assert len(mesh.faces) == figures["faces"] and mesh.is_watertight


def test_commands_without_torch_say_which_extra(tmp_path):
    """Simulate a torch-less install: a `torch` that fails to import."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ModuleNotFoundError('no torch', name='torch')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    import subprocess
    import sys
    for prog, module in (("occ-train", "occnet.train.cli:train_main"), ("occ-export", "occnet.export.cli:export_main")):
        mod, func = module.split(":")
        result = subprocess.run([sys.executable, "-c", f"from {mod} import {func}; {func}()"],
                                capture_output=True, text=True, env=env)
        assert_clean_failure(result, prog, "occnet[train]")


def test_occ_mesh_output_names_one_file(trained_onnx, tmp_path):
    for extra in ([str(trained_onnx)], ["--out-dir", str(tmp_path)]):
        result = run_cli("occ-mesh", str(trained_onnx), *extra, "--output", str(tmp_path / "m.ply"))
        assert_clean_failure(result, "occ-mesh", "--output names one mesh file")
    result = run_cli("occ-mesh", str(trained_onnx), str(trained_onnx), "--out-dir", str(tmp_path))
    assert_clean_failure(result, "occ-mesh", "two models would write the same mesh file")
    assert listing(tmp_path) == []


def test_occ_mesh_frees_each_mesh_before_the_next_model(trained_onnx, tmp_path, monkeypatch):
    import shutil
    import weakref

    import typer

    from occnet.runtime import cli, mesher

    real, meshes = mesher.mesh_model, []

    def watched(*args, **kwargs):
        assert all(ref() is None for ref in meshes), "the previous model's mesh is still in memory"
        mesh, stats = real(*args, **kwargs)
        meshes.append(weakref.ref(mesh))
        return mesh, stats

    monkeypatch.setattr(mesher, "mesh_model", watched)
    models = []
    for name in "abc":
        (tmp_path / name).mkdir()
        models.append(shutil.copy(trained_onnx, tmp_path / name / "model.onnx"))
    typer.main.get_command(cli.mesh_app).main(args=[*map(str, models), "--out-dir", str(tmp_path / "out"),
                                                   "--resolution", "24"], standalone_mode=False)
    assert len(meshes) == 3 and sorted(p.parent.name for p in (tmp_path / "out").rglob("*.ply")) == list("abc")
