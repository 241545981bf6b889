import json
import re

import numpy as np
import pytest
import trimesh
from conftest import DEMO_ONNX

from occnet.runtime.errors import InputError
from occnet.runtime.evalcli import eval_main
from occnet.runtime.evaluate import compare_meshes, evaluate_model
from occnet.runtime.points import make_point_set
from occnet.runtime.session import OccupancyModel
from occnet.train.shapes import cad_parts, demo_occupancy, voxel_solid


def test_identical_meshes_score_at_the_sampling_floor():
    sphere = trimesh.creation.icosphere(4)
    m = compare_meshes(sphere, sphere, iou_samples=20_000)          # ONet's 100k samples each way
    assert m.chamfer_l1 < 0.004 and m.fscore[0.01] > 0.95 and m.normal_consistency > 0.99
    assert m.iou == pytest.approx(1.0)


def test_known_offset_and_scale():
    """A unit cube against the same cube moved by 0.1: IoU 0.9 / 1.1, Chamfer ~ distance / longest side."""
    a = trimesh.creation.box()
    b = trimesh.creation.box()
    b.apply_translation([0.1, 0, 0])
    m = compare_meshes(a, b, samples=30_000, iou_samples=200_000, taus=(0.01, 0.2))
    assert m.iou == pytest.approx(0.9 / 1.1, abs=0.01)
    assert m.fscore[0.2] == pytest.approx(1.0)
    assert 0.02 < m.chamfer_l1 < 0.05
    assert m.scale == pytest.approx(1.0)


def test_scale_invariant():
    """Parts in metres that are micrometres across score as at unit size (trimesh's absolute tolerances gave
    a part 1e-9 across normal consistency 0)."""
    a, b = trimesh.creation.icosphere(3), trimesh.creation.icosphere(2)
    unit = compare_meshes(a, b, samples=10_000, seed=3)
    assert unit.normal_consistency > 0.99
    for scale in (250.0, 1e-9, 1e-25):
        scaled = compare_meshes(a.copy().apply_scale(scale), b.copy().apply_scale(scale), samples=10_000, seed=3)
        for figure in ("chamfer_l1", "normal_consistency", "iou"):
            assert getattr(scaled, figure) == pytest.approx(getattr(unit, figure), rel=1e-6), (scale, figure)


def test_open_mesh_iou_by_winding_number_and_same_seed_same_figures():
    """A reference with a small hole still has an inside (IoU against the closed sphere near 1); a bowl open
    over its top leaves too many points without a clear side for an IoU."""
    sphere = trimesh.creation.icosphere(3)
    bowl = trimesh.Trimesh(sphere.vertices, sphere.faces[sphere.triangles_center[:, 2] < 0.7], process=False)
    first = compare_meshes(bowl, sphere, samples=5000, seed=4)
    assert first.iou is None
    assert first == compare_meshes(bowl, sphere, samples=5000, seed=4)
    holed = trimesh.Trimesh(sphere.vertices, sphere.faces[1:], process=False)
    assert compare_meshes(sphere, holed, samples=5000, seed=4).iou > 0.999


def test_voxel_solids_are_closed_with_the_right_volume():
    grid = np.zeros((3, 4, 2), bool)
    grid[:, :, 0] = True
    grid[0, :, 1] = True
    mesh = voxel_solid(grid, pitch=2.0)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume == pytest.approx(grid.sum() * 8.0)
    for part in cad_parts().values():
        assert part.is_watertight and part.volume > 0


def test_model_on_labelled_points():
    model = OccupancyModel(DEMO_ONNX, device="cpu")
    points = np.random.default_rng(5).uniform(-0.55, 0.55, (20_000, 3)).astype(np.float32)
    labels = demo_occupancy(points)
    result = evaluate_model(model, make_point_set(points, labels, "demo"))
    predicted = model.logits(points) > 0
    assert result.accuracy == pytest.approx(np.mean(predicted == (labels > 0)))
    assert 0.9 < result.iou <= 1.0
    flipped = evaluate_model(model, make_point_set(points, 1 - labels, "flipped"))
    assert flipped.accuracy == pytest.approx(1 - result.accuracy)


def test_cli_both_modes(tmp_path, capsys):
    sphere = trimesh.creation.icosphere(3)
    sphere.export(tmp_path / "a.ply")
    trimesh.creation.icosphere(2).export(tmp_path / "b.obj")
    eval_main([str(tmp_path / "a.ply"), str(tmp_path / "b.obj"), "--samples", "5000", "--tau", "0.05", "--json"])
    figures = json.loads(capsys.readouterr().out)
    assert set(figures["fscore"]) == {"0.01", "0.05"} and figures["iou"] > 0.9
    points = np.random.default_rng(0).uniform(-0.55, 0.55, (2000, 3)).astype(np.float32)
    np.savez(tmp_path / "p.npz", points=points, occupancies=demo_occupancy(points))
    eval_main([str(DEMO_ONNX), str(tmp_path / "p.npz"), "--json"])
    figures = json.loads(capsys.readouterr().out)
    predicted = OccupancyModel(DEMO_ONNX, device="cpu").logits(points) > 0
    actual = demo_occupancy(points) > 0
    assert figures["iou"] == pytest.approx(np.sum(predicted & actual) / np.sum(predicted | actual), abs=1e-12)
    assert figures["accuracy"] == pytest.approx(np.mean(predicted == actual), abs=1e-12)
    assert figures["iou"] > 0.9 and figures["points"] == 2000


@pytest.mark.parametrize("args,match", [
    (["missing.ply", "b.obj"], "not found"), (["a.ply", "b.xyz"], "unknown mesh format"),
    (["a.ply", "b.obj", "--samples", "0"], "sample"), (["a.ply", "b.obj", "--tau", "-1"], "tau"),
    (["MODEL", "b.obj"], "labelled points"), (["junk.ply", "b.obj"], "cannot read|no triangles"),
])
def test_cli_bad_input(tmp_path, capsys, args, match):
    trimesh.creation.icosphere(2).export(tmp_path / "a.ply")
    trimesh.creation.icosphere(2).export(tmp_path / "b.obj")
    (tmp_path / "junk.ply").write_bytes(b"\x00" * 50)
    argv = [str(DEMO_ONNX) if a == "MODEL" else (str(tmp_path / a) if "." in a and not a.startswith("-")
            and not a[0].isdigit() else a) for a in args]
    with pytest.raises(SystemExit) as done:
        eval_main(argv)
    assert done.value.code in (1, 2)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("occ-eval: error:")
    assert re.search(match, err[0]), err[0]


def test_bad_options_in_the_api():
    box = trimesh.creation.box()
    with pytest.raises(InputError):
        compare_meshes(box, box, samples=0)


def test_meshes_in_other_units_or_places_are_noted(tmp_path):
    """Chamfer 497 and IoU 0 with exit 0 and no word was what a reference in millimetres got."""
    from conftest import run_installed

    ball = trimesh.creation.icosphere(3)
    assert compare_meshes(ball, ball.copy(), 2000, iou_samples=2000).notes == ()
    scaled, moved = ball.copy(), ball.copy()
    scaled.apply_scale(1000)
    moved.apply_translation([10.0, 0.0, 0.0])
    notes = compare_meshes(ball, scaled, 2000, iou_samples=2000).notes
    assert notes == ("the mesh is 0.001 times the reference's size (longest sides): other units?",)
    assert compare_meshes(ball, moved, 2000, iou_samples=2000).notes == (
        "the mesh's box and the reference's do not overlap: another place or frame?",)
    ball.export(tmp_path / "a.ply")
    scaled.export(tmp_path / "b.ply")
    result = run_installed("occ-eval", str(tmp_path / "a.ply"), str(tmp_path / "b.ply"), "--samples", "2000",
                           "--iou-samples", "2000", "--json")
    assert result.returncode == 0 and "warning: the mesh is 0.001 times the reference's size" in result.stderr
    assert json.loads(result.stdout)["notes"] == list(notes)


def test_points_far_outside_the_models_box_are_noted():
    model = OccupancyModel(DEMO_ONNX, device="cpu")
    near = np.random.default_rng(0).uniform(-0.5, 0.5, (1000, 3))
    far = np.vstack([near, near[:250] + 10.0])
    labels = np.zeros(len(far), np.uint8)
    assert evaluate_model(model, make_point_set(near, labels[:1000], "near", for_training=False)).notes == ()
    notes = evaluate_model(model, make_point_set(far, labels, "far", for_training=False)).notes
    assert len(notes) == 1 and notes[0].startswith("250 of 1,250 points (20.0%) lie outside the model's box by "
                                                   "more than 10% of its size")
