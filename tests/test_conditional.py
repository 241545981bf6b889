"""Conditional models through the deploy chain: ONet's checkpoint -> occ-export -> occ-mesh --input.

The checkpoints are ONet's format, built by tests/test_onet.py's helpers (this project's modules, ONet's names,
an optimizer state and a numpy float64, the pre-1.6 format); "ONet's own model" below is that network in
PyTorch, evaluated on the same grid as ONet's generator does.
"""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import trimesh
from conftest import DEMO_ONNX, mesh_difference, run_cli
from test_cli import assert_clean_failure, listing
from test_onet import SMALL, onet_bytes, onet_model, write_config

from occnet.export.onnx_export import export_checkpoint
from occnet.runtime import Grid, InputError, MeshSettings, OccupancyModel, mesh_model
from occnet.runtime.mesher import mesh_field
from occnet.runtime.observation import load_observation

CLOUD = np.random.default_rng(1).normal(size=(300, 3))
CLOUD = 0.35 * CLOUD / np.linalg.norm(CLOUD, axis=1, keepdims=True)
"""An observation: 300 points on a sphere of radius 0.35, in ONet's frame."""
VOXELS = np.zeros((32, 32, 32), bool)
VOXELS[6:26, 10:22, 8:20] = True


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``{name: (network, onnx path)}`` for a ResNet-PointNet model (ONet's current decoder layout), one with
    the legacy layout and a voxel model."""
    folder = tmp_path_factory.mktemp("conditional")
    out = {}
    for name in ("pointnet_resnet", "legacy", "voxel_simple"):
        network = onet_model(SMALL[name])
        (folder / f"{name}.pt").write_bytes(onet_bytes(network, zip_format=False))
        export_checkpoint(folder / f"{name}.pt", folder / f"{name}.onnx", verify_points=5000)
        out[name] = (network, folder / f"{name}.onnx")
    return out


def torch_logits(network, observation):
    """ONet's own model on world points, as its generator calls it: the points as one batch beside the
    observation."""
    seen = torch.from_numpy(np.asarray(observation, np.float32))[None]

    def fn(points):
        with torch.no_grad():
            return network(torch.from_numpy(points.astype(np.float32))[None], seen)[0].numpy()
    return fn


def middle_threshold(fn) -> float:
    """A probability the random network's field crosses: its median over the box."""
    logits = fn(np.random.default_rng(0).uniform(-0.55, 0.55, (4000, 3)))
    return 1 / (1 + math.exp(-float(np.median(logits))))


def test_the_file_describes_its_condition_and_carries_its_encoder(exported):
    model = OccupancyModel(exported["pointnet_resnet"][1], device="cpu")
    condition = model.info.condition
    assert (condition.observation, condition.points, condition.threshold) == ("pointcloud", 300, 0.2)
    assert condition.code_shape == (22, 40)                          # 11 norms x (scale, shift), 40 wide
    assert condition.network == {"kind": "onet", "encoder": "pointnet_resnet", "c_dim": 32, "encoder_hidden": 24,
                                 "hidden_size": 40, "legacy": False}
    assert (model.info.bounds_min, model.info.bounds_max, model.info.architecture) == ((-0.55,) * 3, (0.55,) * 3,
                                                                                       None)
    assert model.info.format_version == 2
    voxels = OccupancyModel(exported["voxel_simple"][1], device="cpu").info.condition
    assert (voxels.observation, voxels.resolution, voxels.points) == ("voxels", 32, 0)


@pytest.mark.parametrize("name", ["pointnet_resnet", "legacy", "voxel_simple"])
def test_same_mesh_as_onets_own_model(exported, name):
    """Dense and adaptive, at a threshold the field crosses: the ONNX model given the observation meshes as
    ONet's network in PyTorch does on the same grid. The two compute in float32 in different orders (within
    the verified few 1e-6), so a grid sample that close to the level may fall on either side of it: faces
    differ only around such samples (at most the 5 faces of each of the 8 cells a sample is a corner of)."""
    network, path = exported[name]
    observation = VOXELS if name == "voxel_simple" else CLOUD
    reference = torch_logits(network, observation)
    settings = MeshSettings(resolution=40, method="dense", threshold=middle_threshold(reference))
    shaped = OccupancyModel(path, device="cpu").given(observation)
    ours = assert_meshes_as(shaped, reference, settings)
    adaptive, _ = mesh_model(shaped, MeshSettings(resolution=40, threshold=settings.threshold))
    assert mesh_difference(adaptive, ours) == (0, 0)


def assert_meshes_as(shaped, reference, settings: MeshSettings) -> trimesh.Trimesh:
    """``shaped`` (a model given its observation, at its own threshold unless ``settings`` name one) meshes as
    the logit function ``reference`` does at ``settings``: its logits within 1e-5 on the grid and its faces
    the same but around samples within that error of the level; returns its mesh."""
    ours, _ = mesh_model(shaped, settings)
    threshold = settings.threshold or shaped.info.condition.threshold
    theirs, _ = mesh_field(reference, (-0.55,) * 3, (0.55,) * 3, replace(settings, threshold=threshold))
    grid = Grid.from_bounds((-0.55,) * 3, (0.55,) * 3, settings.resolution)
    samples = grid.points(np.arange(grid.num_points))
    expected, got = reference(samples), shaped.logits(samples)
    error = float(np.abs(got - expected).max())
    undecided = int(np.count_nonzero(np.abs(expected - math.log(threshold / (1 - threshold))) <= error))
    assert error < 1e-5 and len(theirs.faces) > 100
    assert max(mesh_difference(ours, theirs, atol=1e-4)) <= 40 * undecided
    return ours


def test_the_config_sets_the_threshold_the_model_meshes_at_by_default(tmp_path):
    network = onet_model(SMALL["pointnet_resnet"])
    (tmp_path / "model_best.pt").write_bytes(onet_bytes(network))
    fn = torch_logits(network, CLOUD)
    threshold = round(middle_threshold(fn), 4)
    config = write_config(tmp_path, f"""
        model: {{decoder: cbatchnorm, encoder: pointnet_resnet, c_dim: 32, z_dim: 0,
                encoder_kwargs: {{hidden_dim: 24}}, decoder_kwargs: {{hidden_size: 40}}}}
        data: {{pointcloud_n: 500}}
        test: {{threshold: {threshold}}}
        """)
    result = run_cli("occ-export", str(tmp_path / "model_best.pt"), str(tmp_path / "m.onnx"), "--config", str(config))
    assert result.returncode == 0, result.stderr
    model = OccupancyModel(tmp_path / "m.onnx", device="cpu")
    assert (model.info.condition.threshold, model.info.condition.points) == (threshold, 500)
    assert_meshes_as(model.given(CLOUD), fn, MeshSettings(resolution=24, method="dense"))


def test_a_bad_onet_checkpoint_writes_nothing(tmp_path):
    state = torch.load(__import__("io").BytesIO(onet_bytes(onet_model(SMALL["pointnet_resnet"]))), weights_only=False)
    state["model"]["decoder.fc_z.weight"] = torch.zeros(40, 8)
    torch.save(state, tmp_path / "model_best.pt")
    result = run_cli("occ-export", str(tmp_path / "model_best.pt"), str(tmp_path / "m.onnx"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "latent code z" in result.stderr
    assert listing(tmp_path) == ["model_best.pt"]


def test_more_points_than_the_model_expects_are_subsampled_by_a_seed(exported):
    model = OccupancyModel(exported["pointnet_resnet"][1], device="cpu")
    big = np.random.default_rng(2).uniform(-0.4, 0.4, (1000, 3))
    points = np.random.default_rng(3).uniform(-0.5, 0.5, (500, 3))
    first, second = model.given(big).logits(points), model.given(big).logits(points)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, model.given(big[:300]).logits(points))


@pytest.mark.parametrize("observation,match", [
    (VOXELS, r"this model reconstructs shapes from point clouds, not from a voxel grid"),
    (np.zeros((0, 3)), r"a point cloud must have shape \(T, 3\) with T >= 1"),
    (np.array([[0.0, np.nan, 0.0]]), "a point cloud must be finite"),
    (np.array([["a", "b", "c"]]), "an observation must be numbers"),
])
def test_an_observation_that_does_not_fit_is_the_callers_error(exported, observation, match):
    model = OccupancyModel(exported["pointnet_resnet"][1], device="cpu")
    with pytest.raises(InputError, match=match):
        model.given(observation)
    with pytest.raises(InputError, match="is a conditional model: it reconstructs a shape from an observation"):
        model.logits(np.zeros((2, 3)))
    voxels = OccupancyModel(exported["voxel_simple"][1], device="cpu")
    with pytest.raises(InputError, match=r"reconstructs shapes from voxel grids \(32\^3\), not from a point cloud"):
        voxels.given(CLOUD)
    with pytest.raises(InputError, match="must hold occupancies 0 and 1"):
        voxels.given(VOXELS * 2.0)


def test_occ_mesh_reconstructs_several_observations_with_one_model(exported, tmp_path):
    """``occ-mesh model.onnx --input scans/*.ply --out-dir meshes``: the shell's expansion after --input lands
    in the positional arguments, and is taken as observations; each mesh named after its observation."""
    _, path = exported["pointnet_resnet"]
    (tmp_path / "scans").mkdir()
    trimesh.PointCloud(CLOUD).export(tmp_path / "scans" / "a.ply")
    np.savez(tmp_path / "scans" / "b.npz", points=CLOUD[::-1])
    np.savetxt(tmp_path / "scans" / "c.xyz", CLOUD)
    threshold = middle_threshold(torch_logits(exported["pointnet_resnet"][0], CLOUD))
    result = run_cli("occ-mesh", str(path), "--input", str(tmp_path / "scans" / "a.ply"), str(tmp_path / "scans" /
                     "b.npz"), str(tmp_path / "scans" / "c.xyz"), "--out-dir", str(tmp_path / "meshes"),
                     "--resolution", "32", "--threshold", str(threshold), "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["input"] for row in rows] == [str(tmp_path / "scans" / name) for name in ("a.ply", "b.npz", "c.xyz")]
    meshes = [trimesh.load(row["output"]) for row in rows]
    assert listing(tmp_path / "meshes") == ["a.ply", "b.ply", "c.ply"]
    assert all(mesh.is_watertight for mesh in meshes)
    assert mesh_difference(meshes[0], meshes[2]) == (0, 0)             # the same cloud, two formats


def test_normalize_maps_a_cloud_in_any_units_into_the_frame_and_the_mesh_back(exported, tmp_path):
    network, path = exported["pointnet_resnet"]
    threshold = middle_threshold(torch_logits(network, CLOUD))
    offset, scale = np.array([120.0, -40.0, 7.5]), 250.0              # millimetres, far from the origin
    lo, hi = CLOUD.min(axis=0), CLOUD.max(axis=0)
    unit = (CLOUD - (lo + hi) / 2) / (hi - lo).max()                  # what --normalize makes of it
    np.savetxt(tmp_path / "scan.xyz", unit * scale + offset)
    np.savetxt(tmp_path / "unit.xyz", unit)
    for name in ("scan", "unit"):
        extra = ["--normalize"] if name == "scan" else []
        result = run_cli("occ-mesh", str(path), "--input", str(tmp_path / f"{name}.xyz"), "--resolution", "32",
                         "--threshold", str(threshold), *extra)
        assert result.returncode == 0, result.stderr
    scan, unit_mesh = trimesh.load(tmp_path / "scan_mesh.ply"), trimesh.load(tmp_path / "unit_mesh.ply")
    assert len(scan.faces) == len(unit_mesh.faces) > 100
    np.testing.assert_allclose(np.sort(scan.vertices, axis=0), np.sort(unit_mesh.vertices * scale + offset, axis=0),
                               atol=1e-3)


@pytest.mark.parametrize("args,match", [
    (["--input", "{cloud}"], "is not a conditional model: it holds one shape and takes no --input"),
    (["--normalize"], "--normalize maps observations (--input) into the model's frame; give --input"),
])
def test_unconditional_models_refuse_observations(tmp_path, args, match):
    np.savetxt(tmp_path / "c.xyz", CLOUD)
    result = run_cli("occ-mesh", str(DEMO_ONNX), *[a.format(cloud=tmp_path / "c.xyz") for a in args])
    assert_clean_failure(result, "occ-mesh", match)
    assert listing(tmp_path) == ["c.xyz"]


def test_conditional_models_require_an_observation_and_the_right_kind(exported, tmp_path):
    _, path = exported["voxel_simple"]
    result = run_cli("occ-mesh", str(path), "--out-dir", str(tmp_path / "o"))
    assert_clean_failure(result, "occ-mesh", "is a conditional model: it reconstructs a shape from an observation "
                                             "(a voxels); give one")
    np.savetxt(tmp_path / "c.xyz", CLOUD)
    result = run_cli("occ-mesh", str(path), "--input", str(tmp_path / "c.xyz"))
    assert_clean_failure(result, "occ-mesh", "c.xyz: this model reconstructs shapes from voxel grids")
    np.save(tmp_path / "v.npy", VOXELS)
    result = run_cli("occ-mesh", str(path), "--input", str(tmp_path / "v.npy"), "--normalize")
    assert_clean_failure(result, "occ-mesh", "--normalize maps point clouds; a voxel grid has the model's frame")
    assert listing(tmp_path) == ["c.xyz", "v.npy"]


def binvox_bytes(voxels: np.ndarray) -> bytes:
    """``voxels`` (indexed [x, y, z]) as a .binvox file: the header, then (value, count) runs in x, z, y order."""
    flat = voxels.transpose(0, 2, 1).reshape(-1).astype(np.uint8)
    runs, start = [], 0
    while start < len(flat):
        end = start
        while end < len(flat) and flat[end] == flat[start] and end - start < 255:
            end += 1
        runs += [flat[start], end - start]
        start = end
    side = voxels.shape[0]
    return (f"#binvox 1\ndim {side} {side} {side}\ntranslate -0.5 -0.5 -0.5\nscale 1\ndata\n".encode()
            + bytes(runs))


def test_binvox_and_npz_grids_read_indexed_x_y_z(exported, tmp_path):
    (tmp_path / "model.binvox").write_bytes(binvox_bytes(VOXELS))
    np.savez(tmp_path / "model.npz", voxels=VOXELS)
    np.testing.assert_array_equal(load_observation(tmp_path / "model.binvox"), VOXELS)
    np.testing.assert_array_equal(load_observation(tmp_path / "model.npz"), VOXELS)
    model = OccupancyModel(exported["voxel_simple"][1], device="cpu")
    points = np.random.default_rng(0).uniform(-0.5, 0.5, (200, 3))
    np.testing.assert_array_equal(model.given(load_observation(tmp_path / "model.binvox")).logits(points),
                                  model.given(VOXELS).logits(points))


@pytest.mark.parametrize("name,data,match", [
    ("a.binvox", b"#binvox 1\ndim 4 4 4\ndata\n\x01\x10", "binvox runs cover 16 voxels, not the 64"),
    ("b.binvox", b"#binvox 1\ndim 4 4 5\ndata\n\x00\x50", "binvox dimensions must be cubic"),
    ("c.binvox", b"#binvox 1\ndim 4 4 4\ndata\n\x00", "binvox data is truncated"),
    ("d.binvox", b"P3 4 4\n", "not a binvox file"),
    ("e.xyz", b"1 2\n3 4\n", "an .xyz file holds x y z on each line"),
    ("f.xyz", b"1 2 x\n", "not an .xyz point list"),
    ("g.npz", None, "holds neither 'points' .a point cloud. nor 'voxels'"),
    ("h.npy", None, r"a voxel grid must be cubic, \(R, R, R\)"),
    ("i.pcd", b"x", "unknown observation format '.pcd'"),
])
def test_an_observation_file_that_cannot_be_read_is_one_line(tmp_path, name, data, match):
    path = tmp_path / name
    if name.endswith(".npz"):
        np.savez(path, other=np.zeros(3))
    elif name.endswith(".npy"):
        np.save(path, np.zeros((4, 4, 3)))
    else:
        path.write_bytes(data)
    with pytest.raises(InputError, match=match) as caught:
        load_observation(path)
    assert "\n" not in str(caught.value)


def test_occ_mesh_interrupted_between_observations_keeps_the_finished_meshes_whole(exported, tmp_path):
    """Ctrl-C once the first mesh is written: one line, 130, every file there a whole mesh, no temporary."""
    import signal
    import subprocess
    import time

    from conftest import BIN

    _, path = exported["pointnet_resnet"]
    threshold = middle_threshold(torch_logits(exported["pointnet_resnet"][0], CLOUD))
    for index in range(40):
        np.savetxt(tmp_path / f"scan{index:02d}.xyz", CLOUD * (1 + index / 100))
    inputs = sorted(str(p) for p in tmp_path.glob("*.xyz"))
    proc = subprocess.Popen([str(BIN / "occ-mesh"), str(path), "--input", *inputs, "--out-dir", str(tmp_path / "out"),
                             "--resolution", "96", "--threshold", str(threshold)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "out").glob("*.ply")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "occ-mesh: error: interrupted" and "Traceback" not in err
    written = sorted((tmp_path / "out").iterdir())
    assert 1 <= len(written) < 40 and all(p.suffix == ".ply" for p in written)
    assert all(trimesh.load(p).is_watertight for p in written)
