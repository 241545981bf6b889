"""Coordinates keep their precision: a float64 origin in checkpoints and ONNX metadata; the network sees
float32 coordinates relative to it; the runtime subtracts and adds it in float64."""

import numpy as np
import onnx
import pytest
import trimesh

from occnet.runtime.contract import MetaKey, ModelInfo
from occnet.runtime.mesher import mesh_field, mesh_model
from occnet.runtime.meshio import read_mesh, write_mesh
from occnet.runtime.session import OccupancyModel
from occnet.runtime.settings import MeshSettings

SHIFT = np.array([1e6, -3e6, 2.5e6])


def shifted_copy(model_path, out, shift):
    """The same network with its box and origin moved by ``shift``: the same shape, elsewhere."""
    proto = onnx.load(model_path)
    info = ModelInfo.from_metadata({p.key: p.value for p in proto.metadata_props})
    moved = ModelInfo(tuple(np.add(info.bounds_min, shift)), tuple(np.add(info.bounds_max, shift)),
                      info.architecture, info.metrics, info.checkpoint_sha256, info.producer,
                      origin=tuple(np.add(info.origin, shift)))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, moved.to_metadata())
    onnx.save(proto, out)
    return out


def test_the_same_network_far_away_gives_the_same_mesh_shifted(trained_onnx, tmp_path):
    near = OccupancyModel(trained_onnx, device="cpu")
    far = OccupancyModel(shifted_copy(trained_onnx, tmp_path / "far.onnx", SHIFT), device="cpu")
    assert far.info.origin == tuple(np.add(near.info.origin, SHIFT))
    a, _ = mesh_model(near, MeshSettings(resolution=64))
    b, _ = mesh_model(far, MeshSettings(resolution=64))
    extent = float(np.ptp(a.vertices, axis=0).max())
    assert np.array_equal(a.faces, b.faces)
    assert np.abs(b.vertices - SHIFT - a.vertices).max() < 1e-6 * extent
    write_mesh(b, tmp_path / "far.ply")                     # float64 vertices survive the file
    back = trimesh.load(tmp_path / "far.ply", process=False)
    assert np.abs(back.vertices - b.vertices).max() < 1e-9 * np.abs(SHIFT).max()


def test_training_far_from_the_origin_keeps_precision(tmp_path):
    from occnet.export.onnx_export import export_checkpoint
    from occnet.runtime.points import make_point_set
    from occnet.train.config import TrainConfig
    from occnet.train.trainer import train

    rng = np.random.default_rng(0)
    centre = np.array([1e6, 2e6, -1e6])
    points = centre + rng.uniform(-1, 1, (20_000, 3))
    labels = (np.linalg.norm(points - centre, axis=1) < 0.6).astype(np.uint8)
    data = make_point_set(points, labels, "far sphere")
    assert np.array_equal(data.points, points)                       # float64 kept, nothing rounded
    result = train(data, TrainConfig(epochs=8, batch_size=256, device="cpu"), tmp_path)
    assert result.best.val_iou > 0.9
    export_checkpoint(tmp_path / "best.pt", tmp_path / "m.onnx", verify_points=5000)
    model = OccupancyModel(tmp_path / "m.onnx", device="cpu")
    np.testing.assert_allclose(model.info.origin, centre, atol=1e-3)
    mesh, _ = mesh_model(model, MeshSettings(resolution=64))
    # float32 world coordinates at 1e6 have a 0.0625 step: the mesh would come out on a staircase
    assert len(np.unique(mesh.vertices[:, 0])) > 500
    np.testing.assert_allclose(np.linalg.norm(mesh.vertices - centre, axis=1), 0.6, atol=0.1)


def test_models_without_an_origin_still_load(trained_onnx, tmp_path):
    proto = onnx.load(trained_onnx)
    kept = [p for p in proto.metadata_props if p.key != MetaKey.ORIGIN]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, tmp_path / "old.onnx")
    assert OccupancyModel(tmp_path / "old.onnx", device="cpu").info.origin == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("scale,shift", [(1e-6, 0.0), (1e-6, 1e4), (0.005, 0.0), (0.005, 1e7), (1.0, 1e7),
                                         (1e6, 0.0), (1e6, 1e7)])
def test_meshes_re_read_watertight_at_any_scale_and_offset(tmp_path, scale, shift):
    """Merging at a tolerance relative to the mesh (not trimesh's absolute 1e-8) and writing enough digits keep
    marching cubes' nearly coincident vertices apart: a 5 mm part in metres, a micrometre part, 1e7 away."""
    from conftest import sphere_logits

    centre = np.array([0.1, -0.2, 0.05]) * scale + shift
    mesh, stats = mesh_field(sphere_logits(centre, 0.6 * scale, 50 / scale), np.full(3, shift - scale),
                             np.full(3, shift + scale), MeshSettings(resolution=32))
    assert stats.watertight
    for suffix in (".ply", ".obj", ".off"):
        write_mesh(mesh, tmp_path / f"m{suffix}")
        back = read_mesh(tmp_path / f"m{suffix}")
        assert back.is_watertight and len(back.vertices) == len(mesh.vertices), suffix
        assert np.abs(np.sort(back.vertices, axis=0) - np.sort(mesh.vertices, axis=0)).max() < 1e-9 * scale


@pytest.mark.parametrize("scale,shift", [(1e-6, 0.0), (1.0, 1e6), (1e6, 1e7)])
def test_occ_train_accepts_closed_meshes_at_any_scale_and_offset(tmp_path, scale, shift):
    from occnet.train.sampling import load_mesh

    part = trimesh.creation.box((2.0, 1.0, 0.5))
    part.vertices = part.vertices * scale + shift
    part.export(tmp_path / "part.obj", digits=20)
    loaded = load_mesh(tmp_path / "part.obj")
    assert loaded.is_watertight and len(loaded.faces) == 12
