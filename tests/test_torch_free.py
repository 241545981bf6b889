"""The runtime is torch-free, proven: a fresh venv with ``pip install .`` (no extras) has no torch, and
``occ-mesh models/demo.onnx`` still writes a valid closed mesh there."""

import json
import shutil
import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest
import trimesh
from conftest import DEMO_ONNX, ROOT


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory) -> Path:
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    source = tmp_path_factory.mktemp("src") / "occnet"      # a clean copy: no stale build/ in the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", ".venv*", "venv",
                                                                "__pycache__", ".pytest_cache", ".hypothesis"))
    result = subprocess.run([str(bin_dir / "pip"), "install", "--quiet", "--disable-pip-version-check",
                             str(source)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return bin_dir


def test_torch_is_not_there(runtime_venv):
    for module in ("torch", "onnx"):
        result = subprocess.run([str(runtime_venv / "python"), "-c", f"import {module}"], capture_output=True)
        assert result.returncode != 0, f"{module} is importable in the runtime-only venv"


def test_occ_mesh_runs_without_torch(runtime_venv, tmp_path):
    out = tmp_path / "demo.ply"
    result = subprocess.run([str(runtime_venv / "occ-mesh"), str(DEMO_ONNX), "--resolution", "64", "-o", str(out),
                             "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["watertight"] is True
    mesh = trimesh.load(out)
    assert mesh.is_watertight and len(mesh.faces) > 1000


def test_occ_mesh_meshes_several_models_without_torch(runtime_venv, tmp_path):
    """``occ-mesh runs/*/model.onnx --out-dir meshes``: each mesh at its model's path under the common folder;
    a broken model among them is reported and the others are still written."""
    for name in ("a", "b", "c"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        shutil.copy(DEMO_ONNX, tmp_path / "runs" / name / "model.onnx")
    (tmp_path / "runs" / "b" / "model.onnx").write_bytes(b"not a model")
    models = sorted(str(p) for p in (tmp_path / "runs").glob("*/model.onnx"))
    result = subprocess.run([str(runtime_venv / "occ-mesh"), *models, "--resolution", "32", "--out-dir",
                             str(tmp_path / "meshes"), "--format", "obj", "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2 and "runs/b/model.onnx" in errors[0] and errors[1].endswith(
        "1 of 3 models failed (see above); the other meshes were written"), result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["output"]).relative_to(tmp_path / "meshes").as_posix() for r in rows] == ["a/model.obj",
                                                                                             "c/model.obj"]
    for row in rows:
        assert trimesh.load(row["output"]).is_watertight and row["faces"] > 100
    assert not (tmp_path / "meshes" / "b").exists()


def test_occ_mesh_reconstructs_an_observation_without_torch(runtime_venv, tmp_path):
    """A conditional model exported here (with torch) reconstructs a point cloud in the venv without it."""
    from test_onet import SMALL, onet_bytes, onet_model

    from occnet.export.onnx_export import export_checkpoint

    (tmp_path / "model_best.pt").write_bytes(onet_bytes(onet_model(SMALL["pointnet_resnet"]), zip_format=False))
    export_checkpoint(tmp_path / "model_best.pt", tmp_path / "onet.onnx", verify_points=1000)
    directions = np.random.default_rng(0).normal(size=(400, 3))
    np.savetxt(tmp_path / "scan.xyz", 0.3 * directions / np.linalg.norm(directions, axis=1, keepdims=True))
    result = subprocess.run([str(runtime_venv / "occ-mesh"), str(tmp_path / "onet.onnx"), "--input",
                             str(tmp_path / "scan.xyz"), "--resolution", "32", "--threshold", "0.6", "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["output"] == str(tmp_path / "scan_mesh.ply") and row["watertight"] and row["faces"] > 100
    assert trimesh.load(row["output"]).is_watertight


def test_runtime_imports_nothing_from_train_or_export(runtime_venv):
    code = ("import sys, occnet.runtime, occnet.runtime.cli, occnet.runtime.inside; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx') "
            "or m.startswith(('occnet.train', 'occnet.export'))]; print(bad); sys.exit(bool(bad))")
    result = subprocess.run([str(runtime_venv / "python"), "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_train_commands_name_the_extra(runtime_venv):
    result = subprocess.run([str(runtime_venv / "occ-train")], capture_output=True, text=True)
    assert result.returncode != 0 and "occnet[train]" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_occnet_in_the_venv_is_the_installed_copy_not_this_checkout(runtime_venv):
    code = "import occnet.runtime.cli as m; print(m.__file__)"
    result = subprocess.run([str(runtime_venv / "python"), "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    installed = Path(result.stdout.strip()).resolve()
    assert "site-packages" in installed.parts and ROOT not in installed.parents


def test_occ_eval_scores_a_collection_without_torch_and_names_the_extra_poisson_needs(runtime_venv, tmp_path):
    """The runtime alone scores a conditional model against the hull; screened Poisson and the plot, asked
    for without the bench extra, are one line each before any work."""
    from test_onet import SMALL, onet_bytes, onet_model

    from occnet.export.onnx_export import export_checkpoint
    from occnet.train.collection import synthetic_collection

    collection = synthetic_collection(tmp_path / "shapes", per_class=3, seed=0)
    (tmp_path / "model_best.pt").write_bytes(onet_bytes(onet_model(SMALL["pointnet_resnet"])))
    export_checkpoint(tmp_path / "model_best.pt", tmp_path / "onet.onnx", verify=False)     # test_onet verifies
    command = [str(runtime_venv / "occ-eval"), str(tmp_path / "onet.onnx"), str(collection.root), "--resolution",
               "16", "--samples", "2000"]
    result = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)["summary"]) == {"model", "hull"}
    assert result.stderr.strip() == "note: screened Poisson left out (pymeshlab is not installed: pip install " \
                                    "'occnet[bench]')"
    for extra, match in ((["--baseline", "poisson"], "screened Poisson needs pymeshlab: pip install 'occnet[bench]'"),
                         (["--plot", str(tmp_path / "s.png")], "--plot needs matplotlib: pip install 'occnet[bench]'")):
        refused = subprocess.run([*command, *extra], capture_output=True, text=True, timeout=300)
        assert refused.returncode == 1 and refused.stderr == f"occ-eval: error: {match}\n", refused.stderr
    assert not (tmp_path / "s.png").exists()
