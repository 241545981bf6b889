"""Collections in ONet's layout: read as ONet's loaders read them, made from meshes or from primitives."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import trimesh

from occnet.runtime.collection import BOX, POINTS, SPLITS, Collection
from occnet.runtime.errors import InputError
from occnet.runtime.observation import load_observation
from occnet.train.collection import binvox_bytes, prepare_meshes, synthetic_collection
from occnet.train.synthetic import CLASSES, make_solid


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synthetic_collection(tmp_path_factory.mktemp("synthetic"), per_class=3, seed=0)


def test_the_synthetic_collection_has_every_class_split_three_ways(synthetic):
    assert synthetic.categories == sorted(CLASSES)
    names = {split: [s.label for s in synthetic.shapes(split)] for split in SPLITS}
    assert all(len(names[split]) == len(CLASSES) for split in SPLITS)          # 3 a class: 1 + 1 + 1
    assert len(set(sum(names.values(), []))) == 3 * len(CLASSES)


def test_a_shapes_points_and_surface_agree_with_its_solid(synthetic):
    shape = synthetic.shapes("train")[0]
    data = synthetic.load(shape)
    assert data.points.shape == (POINTS, 3) and np.abs(data.points).max() <= BOX
    solid = make_solid(shape.category, int(shape.name.split("_")[1]) + CLASSES.index(shape.category) * 10_007)
    agree = np.mean(solid.occupancy(data.points.astype(np.float64)) == data.occupancies)
    assert agree > 0.999                                       # float16 storage moves points near the surface
    assert 0.02 < data.occupancies.mean() < 0.6
    assert np.abs(solid.sdf(data.surface.astype(np.float64))).max() < 0.01
    assert np.allclose(np.linalg.norm(data.normals, axis=1), 1, atol=1e-4)
    voxels = synthetic.voxels(shape)
    assert voxels.shape == (32, 32, 32) and voxels.dtype == bool and 0 < voxels.sum() < 32**3


def test_the_same_seed_makes_the_same_collection_and_a_made_one_is_opened_as_it_is(synthetic, tmp_path):
    again = synthetic_collection(tmp_path / "again", per_class=3, seed=0)
    other = synthetic_collection(tmp_path / "other", per_class=3, seed=1)
    shape = synthetic.shapes("test")[0]
    same = again.root / shape.category / shape.name / "points.npz"
    assert same.read_bytes() == (shape.folder / "points.npz").read_bytes()
    assert (other.root / shape.category / shape.name / "points.npz").read_bytes() != same.read_bytes()
    stamp = same.stat().st_mtime_ns
    synthetic_collection(tmp_path / "again", per_class=3, seed=0)
    assert same.stat().st_mtime_ns == stamp


def test_onets_own_layout_reads_and_a_listed_shape_without_a_folder_is_one_line(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "02691156" / "1a2b"
    folder.mkdir(parents=True)
    points = rng.uniform(-0.55, 0.55, (1000, 3))
    inside = np.linalg.norm(points, axis=1) < 0.3
    np.savez(folder / "points.npz", points=points.astype(np.float16), occupancies=np.packbits(inside))
    surface = rng.normal(size=(500, 3))
    surface = 0.3 * surface / np.linalg.norm(surface, axis=1, keepdims=True)
    np.savez(folder / "pointcloud.npz", points=surface, normals=surface / 0.3)
    (tmp_path / "02691156" / "train.lst").write_text("1a2b\n")
    collection = Collection(tmp_path)
    data = collection.load(collection.shapes("train")[0])
    np.testing.assert_array_equal(data.occupancies, inside)
    assert collection.shapes("val") == []
    (tmp_path / "02691156" / "test.lst").write_text("9z9z\n")
    with pytest.raises(InputError, match=r"test.lst lists 9z9z, which has no folder"):
        collection.shapes("test")
    with pytest.raises(InputError, match="split must be one of train, val, test"):
        collection.shapes("training")
    with pytest.raises(InputError, match="not a collection in ONet's layout"):
        Collection(folder)


def test_a_folder_of_meshes_is_prepared_once_and_normalised(tmp_path):
    (tmp_path / "src" / "balls").mkdir(parents=True)
    (tmp_path / "src" / "boxes").mkdir()
    for index in range(3):
        ball = trimesh.creation.icosphere(3, radius=30.0 + index)
        ball.apply_translation([1000.0, -50.0, 7.0])                  # far from the origin, in millimetres
        ball.export(tmp_path / "src" / "balls" / f"ball{index}.stl")
        trimesh.creation.box((10.0, 4.0 + index, 2.0)).export(tmp_path / "src" / "boxes" / f"box{index}.obj")
    collection = prepare_meshes(tmp_path / "src", tmp_path / "prepared")
    assert collection.categories == ["balls", "boxes"]
    ball = next(s for split in SPLITS for s in collection.shapes(split) if s.name == "ball0")
    data = collection.load(ball)
    assert np.abs(data.surface).max() <= 0.5 + 1e-6 and np.abs(np.linalg.norm(data.surface, axis=1) - 0.5).max() < 0.01
    wrong = np.mean(data.occupancies != (np.linalg.norm(data.points.astype(np.float64), axis=1) < 0.497))
    assert wrong < 0.005                                       # the sphere's facets lie within 0.3% of it
    stamp = (ball.folder / "points.npz").stat().st_mtime_ns
    trimesh.creation.icosphere(2, radius=5.0).export(tmp_path / "src" / "balls" / "ball1.stl")
    prepare_meshes(tmp_path / "src", tmp_path / "prepared")
    assert (ball.folder / "points.npz").stat().st_mtime_ns == stamp                  # unchanged: kept
    redone = tmp_path / "prepared" / "balls" / "ball1" / "points.npz"
    assert redone.stat().st_mtime_ns > stamp


def test_binvox_written_here_reads_back_and_long_runs_are_split(tmp_path):
    grid = np.zeros((32, 32, 32), bool)
    grid[:, :20] = True                                        # runs far longer than 255
    grid[5, 25, 3] = True
    (tmp_path / "g.binvox").write_bytes(binvox_bytes(grid))
    np.testing.assert_array_equal(load_observation(tmp_path / "g.binvox"), grid)


def test_a_conditional_model_trains_on_a_collection_and_exports_as_onets(synthetic, tmp_path):
    """A few epochs of the small model: ONet's checkpoint with occnet's entry, metrics and curve; the loss falls;
    occ-export takes best.pt with the threshold and cloud size it records, and the model reconstructs a
    validation shape's cloud."""
    from conftest import run_cli

    from occnet.runtime import OccupancyModel
    from occnet.train.conditional import ConditionalConfig, train_conditional
    from occnet.train.onet_checkpoint import load_onet_checkpoint

    config = ConditionalConfig(epochs=4, steps_per_epoch=6, batch_shapes=4, points_per_shape=512, cloud_points=200,
                               lr=1e-3, threshold=0.3, val_points=1024)
    history = train_conditional(synthetic, config, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best.pt", "last.pt", "loss.png", "metrics.csv"]
    assert len(history) == 4 and history[-1].train_loss < history[0].train_loss
    best = max(history, key=lambda m: m.val_iou)
    ckpt = load_onet_checkpoint(tmp_path / "run" / "best.pt")
    assert (ckpt.config.threshold, ckpt.config.cloud_points) == (0.3, 200)
    state = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    assert state["epoch_it"] == best.epoch and state["it"] == 6 * best.epoch
    result = run_cli("occ-export", str(tmp_path / "run" / "best.pt"), str(tmp_path / "m.onnx"))
    assert result.returncode == 0, result.stderr
    model = OccupancyModel(tmp_path / "m.onnx", device="cpu")
    assert (model.info.condition.threshold, model.info.condition.points) == (0.3, 200)
    cloud = synthetic.load(synthetic.shapes("val")[0]).surface
    assert model.given(cloud).logits(np.zeros((5, 3))).shape == (5,)
    scored = run_cli("occ-eval", str(tmp_path / "m.onnx"), str(synthetic.root), "--resolution", "24", "--samples",
                     "2000", "--json", "--baseline", "hull")
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout)
    assert len(report["shapes"]) == 2 * len(synthetic.shapes("test"))              # model, hull
    hull = report["summary"]["hull"]
    assert set(hull["classes"]) == set(CLASSES) and 0.3 < hull["all"]["iou"] < 1
    assert hull["all"]["chamfer_l1"] < 0.05 and hull["empty"] == 0
    table = run_cli("occ-eval", str(tmp_path / "m.onnx"), str(synthetic.root), "--resolution", "24", "--samples",
                    "2000", "--baseline", "hull")
    assert table.returncode == 0 and "| ring | model |" in table.stdout and "| all | hull |" in table.stdout


TINY = ["--steps-per-epoch", "3", "--batch-shapes", "4", "--points-per-shape", "256", "--val-points", "512",
        "--cloud-points", "100", "--lr", "1e-3"]


def test_occ_train_takes_a_collection_and_a_resumed_run_ends_where_an_uninterrupted_one_ends(synthetic, tmp_path):
    from conftest import run_cli

    from occnet.train.conditional import learning_rate, train_conditional
    from occnet.train.config import ConditionalConfig

    whole = run_cli("occ-train", str(synthetic.root), "--out-dir", str(tmp_path / "whole"), "--epochs", "3", *TINY)
    assert whole.returncode == 0, whole.stderr
    assert "3 epochs (9 steps); best.pt from epoch" in whole.stdout and "pointcloud model, small" in whole.stderr
    config = ConditionalConfig(epochs=3, steps_per_epoch=3, batch_shapes=4, points_per_shape=256, val_points=512,
                               cloud_points=100, lr=1e-3)

    def stop_after_two(row):
        if row.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_conditional(synthetic, config, tmp_path / "run", on_epoch=stop_after_two)
    resumed = run_cli("occ-train", "--resume", str(tmp_path / "run"))
    assert resumed.returncode == 0, resumed.stderr
    ours = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    reference = torch.load(tmp_path / "whole" / "last.pt", weights_only=False)
    assert ours["it"] == reference["it"] == 9 and ours["epoch_it"] == 3
    for name, tensor in reference["model"].items():
        assert torch.equal(ours["model"][name], tensor), name
    assert ours["occnet"]["history"][2]["val_loss"] == reference["occnet"]["history"][2]["val_loss"]
    assert [m["lr"] for m in ours["occnet"]["history"]] == pytest.approx([1e-3, 7.5e-4, 2.5e-4])
    assert [learning_rate(config, e) for e in (1, 2, 3)] == pytest.approx([1e-3, 7.5e-4, 2.5e-4])
    longer = run_cli("occ-train", "--resume", str(tmp_path / "run"), "--epochs", "4")     # 4 epochs' schedule
    assert longer.returncode == 0, longer.stderr
    extended = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["occnet"]["history"]
    assert extended[3]["lr"] == pytest.approx(learning_rate(replace(config, epochs=4), 4))


@pytest.mark.parametrize("args,match", [
    (["--num-points", "5000"], "--num-points apply to one shape, not to a collection"),
    (["--device", "cpu", "--encoding", "fourier"], "--device, --encoding apply to one shape"),
])
def test_single_shape_options_with_a_collection_are_refused_by_name(synthetic, tmp_path, args, match):
    from conftest import run_cli
    from test_cli import assert_clean_failure

    result = run_cli("occ-train", str(synthetic.root), "--out-dir", str(tmp_path / "run"), *args)
    assert_clean_failure(result, "occ-train", match)
    assert not (tmp_path / "run").exists()


def test_screened_poisson_closes_a_sphere_cloud_facing_out_and_the_hull_needs_a_volume():
    from occnet.runtime.baselines import convex_hull, screened_poisson

    directions = np.random.default_rng(0).normal(size=(300, 3))
    cloud = 0.4 * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    for points in (cloud, cloud[::-1]):                      # the orientation does not hang on the order
        mesh = screened_poisson(points)
        assert mesh.is_watertight
        assert mesh.volume == pytest.approx(4 / 3 * np.pi * 0.4**3, rel=0.05)
        assert np.abs(np.linalg.norm(mesh.vertices, axis=1) - 0.4).max() < 0.02
    assert screened_poisson(cloud[:8]) is None
    assert convex_hull(cloud).volume == pytest.approx(4 / 3 * np.pi * 0.4**3, rel=0.1)
    assert convex_hull(cloud * [1, 1, 0]) is None


@pytest.fixture(scope="module")
def onet_onnx(tmp_path_factory):
    """A small ONet point-cloud model (untrained: the baselines' figures do not depend on it) and a voxel one."""
    from test_onet import SMALL, onet_bytes, onet_model

    from occnet.export.onnx_export import export_checkpoint

    folder = tmp_path_factory.mktemp("onet")
    for name in ("pointnet_resnet", "voxel_simple"):
        (folder / f"{name}.pt").write_bytes(onet_bytes(onet_model(SMALL[name])))
        export_checkpoint(folder / f"{name}.pt", folder / f"{name}.onnx", verify=False)   # test_onet verifies
    return folder


def test_occ_eval_scores_poisson_beside_the_hull_and_draws_the_scores(synthetic, onet_onnx, tmp_path):
    from conftest import run_cli

    args = ("occ-eval", str(onet_onnx / "pointnet_resnet.onnx"), str(synthetic.root), "--resolution", "16",
            "--samples", "1000")
    scored = run_cli(*args, "--json", "--plot", str(tmp_path / "scores.png"))
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout)
    assert [row["method"] for row in report["shapes"][:3]] == ["model", "hull", "poisson"]          # the default
    poisson = report["summary"]["poisson"]
    assert set(poisson["classes"]) == set(CLASSES) and poisson["empty"] == 0
    assert 0.5 < poisson["all"]["iou"] < 1 and poisson["all"]["chamfer_l1"] < 0.08
    assert (tmp_path / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = run_cli(*args, "--json", "--baseline", "hull")
    hull_only = json.loads(again.stdout)
    assert {row["method"] for row in hull_only["shapes"]} == {"model", "hull"}
    assert hull_only["summary"]["hull"] == report["summary"]["hull"]          # the seed fixes the observations


@pytest.mark.parametrize("model,args,match", [
    ("pointnet_resnet", ["--plot", "scores.jpg"], "--plot writes a PNG; name a .png file, not scores.jpg"),
    ("pointnet_resnet", ["--plot", "missing/scores.png"], "folder"),
    ("voxel_simple", ["--baseline", "poisson"], "screened Poisson reconstructs point clouds; this model reads "
                                                "voxel grids"),
    ("pointnet_resnet", ["--baseline", "delaunay"], "'delaunay' is not one of 'hull', 'poisson'"),
])
def test_occ_eval_refuses_what_cannot_be_scored_in_one_line(synthetic, onet_onnx, model, args, match):
    from conftest import run_cli
    from test_cli import assert_clean_failure

    before = sorted(p.name for p in onet_onnx.iterdir())
    result = run_cli("occ-eval", str(onet_onnx / f"{model}.onnx"), str(synthetic.root), "--resolution", "16",
                     *[str(onet_onnx / a) if a.endswith((".jpg", ".png")) else a for a in args])
    assert_clean_failure(result, "occ-eval", match)
    assert sorted(p.name for p in onet_onnx.iterdir()) == before


def test_baselines_and_plots_belong_to_collections(tmp_path):
    from conftest import run_cli
    from test_cli import assert_clean_failure

    trimesh.creation.box().export(tmp_path / "a.ply")
    result = run_cli("occ-eval", str(tmp_path / "a.ply"), str(tmp_path / "a.ply"), "--plot", str(tmp_path / "x.png"))
    assert_clean_failure(result, "occ-eval", "--baseline and --plot score a conditional model on a collection")
    assert not (tmp_path / "x.png").exists()


def mesh_folder(root):
    """Two classes of four meshes each, in millimetres far from the origin."""
    for index in range(4):
        (root / "balls").mkdir(parents=True, exist_ok=True)
        (root / "boxes").mkdir(exist_ok=True)
        trimesh.creation.icosphere(2, radius=30.0 + index).apply_translation([900.0, 0, 5]).export(
            root / "balls" / f"ball{index}.stl")
        trimesh.creation.box((10.0, 4.0 + index, 2.0)).export(root / "boxes" / f"box{index}.obj")
    return root


def test_an_interrupted_preparation_keeps_the_shapes_it_wrote_and_a_rerun_does_the_rest(tmp_path):
    from occnet.train.collection import prepare_mesh

    source = mesh_folder(tmp_path / "src")

    def interrupted(function, jobs):
        for count, job in enumerate(jobs):
            if count == 3:
                raise KeyboardInterrupt
            yield function(*job)

    with pytest.raises(KeyboardInterrupt):
        prepare_meshes(source, tmp_path / "prepared", mapper=interrupted)
    record = json.loads((tmp_path / "prepared" / "collection.json").read_text())
    assert sorted(record["digests"]) == ["balls/ball0", "balls/ball1", "balls/ball2"]
    labels = []

    def counted(function, jobs):
        for job in jobs:
            labels.append(job[0])
            yield function(*job)

    collection = prepare_meshes(source, tmp_path / "prepared", mapper=counted)
    assert labels == ["balls/ball3", *(f"boxes/box{i}" for i in range(4))]
    whole = prepare_meshes(source, tmp_path / "whole")
    for path in (tmp_path / "whole").rglob("*"):
        if path.is_file():
            assert (collection.root / path.relative_to(whole.root)).read_bytes() == path.read_bytes(), path
    assert prepare_mesh("balls/ball0", ".stl", (source / "balls" / "ball0.stl").read_bytes(), 0) == \
        {name: (whole.root / "balls" / "ball0" / name).read_bytes()
         for name in ("points.npz", "pointcloud.npz", "model.binvox")}


def test_occ_train_prepares_a_folder_of_meshes_into_its_run_and_trains_on_it(tmp_path):
    from conftest import run_cli
    from test_cli import assert_clean_failure

    source = mesh_folder(tmp_path / "src")
    result = run_cli("occ-train", str(source), "--out-dir", str(tmp_path / "run"), "--epochs", "1", *TINY)
    assert result.returncode == 0, result.stderr
    assert f"data: {tmp_path / 'run' / 'collection'}: 4 training and 2 validation shapes in 2 classes" in result.stderr
    assert Collection(tmp_path / "run" / "collection").categories == ["balls", "boxes"]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.stl").write_bytes(b"solid nothing\nendsolid nothing\n" * 3)
    broken = run_cli("occ-train", str(tmp_path / "bad"), "--out-dir", str(tmp_path / "run2"), *TINY)
    assert_clean_failure(broken, "occ-train", "meshes/broken")
    (tmp_path / "empty").mkdir()
    empty = run_cli("occ-train", str(tmp_path / "empty"), "--out-dir", str(tmp_path / "run3"), *TINY)
    assert_clean_failure(empty, "occ-train", "holds no meshes")


def test_conditional_options_without_data_train_on_the_built_in_synthetic_collection(tmp_path, monkeypatch):
    from conftest import run_cli
    from test_cli import assert_clean_failure

    import occnet.train.collection

    monkeypatch.setattr(occnet.train.collection, "DEMO_PER_CLASS", 3)
    result = run_cli("occ-train", "--condition", "pointcloud", "--out-dir", str(tmp_path / "run"), "--epochs", "1",
                     *TINY)
    assert result.returncode == 0, result.stderr
    made = Collection(tmp_path / "run" / "collection")
    assert made.categories == sorted(CLASSES) and len(made.shapes("train")) == len(CLASSES)
    trimesh.creation.box().export(tmp_path / "box.stl")
    one = run_cli("occ-train", str(tmp_path / "box.stl"), "--out-dir", str(tmp_path / "one"), "--condition", "voxels")
    assert_clean_failure(one, "occ-train", "--condition apply to a collection (a folder, or no DATA for the built-in "
                                           "synthetic one), not to one shape")
    assert not (tmp_path / "one").exists()


def test_occ_train_interrupted_while_preparing_keeps_the_shapes_it_wrote(tmp_path):
    """SIGINT to the real process once the first shapes are written: 130, one line that says they are kept,
    and a rerun prepares only the others."""
    import signal
    import subprocess
    import time

    from conftest import BIN
    from test_misuse import assert_interrupted

    for index in range(10):
        (tmp_path / "src" / "balls").mkdir(parents=True, exist_ok=True)
        trimesh.creation.icosphere(2, radius=1.0 + index).export(tmp_path / "src" / "balls" / f"b{index:02d}.stl")
    record = tmp_path / "run" / "collection" / "collection.json"
    proc = subprocess.Popen([str(BIN / "occ-train"), str(tmp_path / "src"), "--out-dir", str(tmp_path / "run"),
                             *TINY], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not record.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert_interrupted(proc.returncode, err, signal.SIGINT)
    assert f"the shapes prepared so far are kept in {tmp_path / 'run' / 'collection'}" in err
    kept = json.loads(record.read_text())["digests"]
    assert 1 <= len(kept) < 10
    labels = []

    def counted(function, jobs):
        for job in jobs:
            labels.append(job[0])
            yield function(*job)

    prepare_meshes(tmp_path / "src", tmp_path / "run" / "collection", mapper=counted)
    assert len(labels) == 10 - len(kept) and not set(labels) & set(kept)
