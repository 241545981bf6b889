"""The whole product, end to end, as a user runs it: occ-train -> occ-export -> occ-mesh."""

import numpy as np
import pytest
import trimesh
from conftest import DEMO_ONNX, run_cli
from scipy.spatial import cKDTree

import occnet.runtime
from occnet.runtime import Architecture, MeshSettings, OccupancyModel, mesh_model, write_mesh
from occnet.runtime.contract import INPUT_NAME, OUTPUT_NAME, UNCONDITIONAL_FORMAT
from occnet.train.shapes import demo_occupancy


def test_train_export_mesh_on_a_mesh_the_project_never_saw(tmp_path):
    """A millimetre-scale, off-centre capsule: the mesh that comes out lies on the mesh that went in."""
    capsule = trimesh.creation.capsule(height=40.0, radius=12.0, count=[24, 24])
    capsule.apply_transform(trimesh.transformations.rotation_matrix(0.6, [1, 0.3, 0]))
    capsule.apply_translation([250.0, -40.0, 12.0])
    capsule.export(tmp_path / "part.stl")

    train = run_cli("occ-train", str(tmp_path / "part.stl"), "--out-dir", str(tmp_path / "run"),
                    "--epochs", "12", "--num-points", "30000")
    assert train.returncode == 0, train.stderr
    export = run_cli("occ-export", str(tmp_path / "run" / "best.pt"), str(tmp_path / "part.onnx"))
    assert export.returncode == 0, export.stderr
    mesh = run_cli("occ-mesh", str(tmp_path / "part.onnx"), "--resolution", "96", "-o", str(tmp_path / "out.obj"))
    assert mesh.returncode == 0, mesh.stderr

    out = trimesh.load(tmp_path / "out.obj", force="mesh")
    assert out.is_watertight
    np.testing.assert_allclose(out.bounds, capsule.bounds, atol=4.0)             # mm, in the input's frame
    surface, _ = trimesh.sample.sample_surface(capsule, 300_000, seed=0)
    distance, _ = cKDTree(surface).query(out.vertices[::7])
    assert np.median(distance) < 0.6 and np.percentile(distance, 95) < 2.0
    assert abs(out.volume - capsule.volume) / capsule.volume < 0.06


def test_demo_model_matches_the_current_contract():
    model = OccupancyModel(DEMO_ONNX, device="cpu")
    assert model.info.format_version == UNCONDITIONAL_FORMAT
    assert model.info.architecture == Architecture()
    assert (model.info.bounds_min, model.info.bounds_max) == ((-0.55,) * 3, (0.55,) * 3)
    assert model.info.checkpoint_sha256 and 0.9 < model.info.metrics["val_iou"] <= 1.0
    import onnxruntime

    session = onnxruntime.InferenceSession(DEMO_ONNX, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME] and [o.name for o in session.get_outputs()] == \
        [OUTPUT_NAME]


def test_demo_model_meshes_the_demo_shape():
    model = OccupancyModel(DEMO_ONNX, device="cpu")
    mesh, stats = mesh_model(model, MeshSettings(resolution=96))
    assert mesh.is_watertight and stats.watertight
    points = np.random.default_rng(0).uniform(-0.55, 0.55, (100_000, 3)).astype(np.float32)
    predicted = model.logits(points) > 0
    truth = demo_occupancy(points) > 0
    assert (predicted & truth).sum() / (predicted | truth).sum() > 0.93


def test_the_python_api_is_the_command(tmp_path):
    """``occnet.runtime``'s documented example, written out, gives the bytes ``occ-mesh`` writes."""
    mesh, stats = mesh_model(OccupancyModel(DEMO_ONNX, device="cpu"), MeshSettings(resolution=64))
    write_mesh(mesh, tmp_path / "api.ply")
    command = run_cli("occ-mesh", str(DEMO_ONNX), "--resolution", "64", "-o", str(tmp_path / "cli.ply"))
    assert command.returncode == 0, command.stderr
    assert (tmp_path / "api.ply").read_bytes() == (tmp_path / "cli.ply").read_bytes()
    assert stats.faces == len(mesh.faces) > 1000


def test_every_public_name_resolves_and_says_what_it_is():
    for name in occnet.runtime.__all__:
        value = getattr(occnet.runtime, name)
        assert (value.__doc__ or "").strip(), f"occnet.runtime.{name} has no docstring"
        assert name in dir(occnet.runtime)
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        occnet.runtime.no_such_name  # noqa: B018 - the lookup is what is tested
