import time

import numpy as np
import pytest
import trimesh

from occnet.runtime.errors import InputError
from occnet.train.sampling import MIN_NEAR_INSIDE, SamplingConfig, load_points, mesh_points
from occnet.train.shapes import DEMO_BOUNDS, demo_occupancy


def test_demo_is_exact_asymmetric_and_in_its_box():
    data = load_points(None, SamplingConfig(num_points=20_000), seed=3)
    assert len(data.points) == 20_000
    assert np.array_equal(data.labels, demo_occupancy(data.points).astype(np.float32))
    assert (data.bounds_min, data.bounds_max) == DEMO_BOUNDS
    mirrored = data.points * np.array([-1, 1, 1])
    assert (demo_occupancy(mirrored) != data.labels).mean() > 0.05     # not symmetric in x ...
    for flip in ([1, -1, 1], [1, 1, -1]):                                # ... nor in y or z
        assert (demo_occupancy(data.points * np.array(flip)) != data.labels).mean() > 0.02


def test_same_seed_same_points_other_seed_other_points():
    a = load_points(None, SamplingConfig(num_points=2000), seed=1)
    b = load_points(None, SamplingConfig(num_points=2000), seed=1)
    c = load_points(None, SamplingConfig(num_points=2000), seed=2)
    assert a.sha256 == b.sha256 != c.sha256


def test_near_fraction_concentrates_points_at_the_surface(tmp_path):
    sphere = trimesh.creation.icosphere(4, radius=0.5)
    sphere.export(tmp_path / "s.ply")
    for fraction in (0.0, 0.8):
        data = mesh_points(tmp_path / "s.ply", SamplingConfig(num_points=10_000, near_fraction=fraction), 0)
        near = np.abs(np.linalg.norm(data.points, axis=1) - 0.5) < 0.02
        assert near.mean() == pytest.approx(fraction * 0.95 + (1 - fraction) * 0.12, abs=0.06)


def test_mesh_in_its_own_coordinates_labelled_exactly_and_fast(tmp_path):
    """An off-centre, millimetre-scale torus (~5.8k faces): labels right, box padded, seconds not minutes."""
    torus = trimesh.creation.torus(major_radius=30.0, minor_radius=9.0, major_sections=96, minor_sections=30)
    torus.apply_translation([100.0, -20.0, 5.0])
    assert 5_000 < len(torus.faces) < 6_500
    torus.export(tmp_path / "t.stl")
    start = time.perf_counter()
    data = mesh_points(tmp_path / "t.stl", SamplingConfig(num_points=100_000), seed=0)
    assert time.perf_counter() - start < 20
    lo, hi = np.array(data.bounds_min), np.array(data.bounds_max)
    np.testing.assert_allclose(lo, torus.bounds[0] - 0.05 * 78, atol=1e-3)
    np.testing.assert_allclose(hi, torus.bounds[1] + 0.05 * 78, atol=1e-3)
    q = data.points - np.array([100.0, -20.0, 5.0])
    tube = np.hypot(np.hypot(q[:, 0], q[:, 1]) - 30.0, q[:, 2])
    clear = np.abs(tube - 9.0) > 0.15                     # away from the faceting error
    assert np.array_equal(data.labels[clear] > 0.5, tube[clear] < 9.0)


@pytest.mark.parametrize("kind", ["hemisphere", "soup", "sheet"])
def test_meshes_that_enclose_no_volume_are_refused(tmp_path, kind):
    rng = np.random.default_rng(0)
    if kind == "hemisphere":
        sphere = trimesh.creation.icosphere(3)
        mesh = trimesh.Trimesh(sphere.vertices, sphere.faces[sphere.triangles_center[:, 2] < 0], process=False)
    elif kind == "soup":
        triangles = rng.uniform(-0.3, 0.3, (100, 3, 3)) + rng.uniform(-1, 1, (100, 1, 3))
        mesh = trimesh.Trimesh(triangles.reshape(-1, 3), np.arange(300).reshape(-1, 3), process=False)
    else:
        mesh = trimesh.Trimesh([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], [[0, 1, 2], [0, 2, 3]])
    mesh.export(tmp_path / "shape.obj")
    with pytest.raises(InputError, match="ambiguous for .* does not enclose a volume"):
        mesh_points(tmp_path / "shape.obj", SamplingConfig(num_points=2000), 0)


@pytest.mark.parametrize("drop", ["one face", "rim"])
def test_open_meshes_are_labelled_by_winding_number(tmp_path, drop):
    """No hole filling: a missing face, or the whole cap above z = 0.8 (a bowl), still leaves the ball inside."""
    sphere = trimesh.creation.icosphere(3)
    faces = sphere.faces[1:] if drop == "one face" else sphere.faces[sphere.triangles_center[:, 2] < 0.8]
    trimesh.Trimesh(sphere.vertices, faces, process=False).export(tmp_path / "open.ply")
    data = mesh_points(tmp_path / "open.ply", SamplingConfig(num_points=4000), 0)
    radius = np.linalg.norm(data.points, axis=1)
    clear = (np.abs(radius - 1) > 0.05) & (data.points[:, 2] < 0.5)
    assert np.array_equal(data.labels[clear] > 0.5, radius[clear] < 1)


def test_overlapping_and_touching_bodies_are_their_union(tmp_path):
    """A multi-solid file: two overlapping balls and a box touching one of them along a face."""
    a = trimesh.creation.icosphere(3)
    b = trimesh.creation.icosphere(3)
    b.apply_translation((1.0, 0, 0))
    c = trimesh.creation.box(extents=(1, 1, 1))
    c.apply_translation((0, 0, -1.5))                          # its top face at z = -1, the ball's bottom
    trimesh.util.concatenate([a, b, c]).export(tmp_path / "parts.stl")
    data = mesh_points(tmp_path / "parts.stl", SamplingConfig(num_points=20_000), 0)
    p = data.points
    da, db = np.linalg.norm(p, axis=1), np.linalg.norm(p - (1.0, 0, 0), axis=1)
    in_box = np.all(np.abs(p - (0, 0, -1.5)) < 0.48, axis=1)
    lens = (da < 0.95) & (db < 0.95)
    outside = (da > 1.05) & (db > 1.05) & ~np.all(np.abs(p - (0, 0, -1.5)) < 0.52, axis=1)
    assert lens.sum() > 100 and data.labels[lens].all() and data.labels[in_box].all()
    assert not data.labels[outside].any()


@pytest.mark.parametrize("name,content,match", [
    ("missing.obj", None, "not found"),
    ("data.txt", b"1 2 3", "unknown data format"),
    ("empty.obj", b"", "no triangles|cannot read"),
    ("junk.stl", b"\x00\xff" * 100, "cannot read|no triangles"),
    ("junk.glb", b"glTF garbage", "cannot read|no triangles"),
    ("junk.ply", b"ply\nformat nonsense\n", "cannot read|no triangles"),
])
def test_bad_mesh_files(tmp_path, name, content, match):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=match):
        load_points(tmp_path / name, SamplingConfig(num_points=1000), 0)


@pytest.mark.parametrize("kwargs", [{"num_points": 10}, {"near_fraction": 1.5}, {"near_sigma": 0}])
def test_bad_sampling_options(kwargs):
    with pytest.raises(InputError):
        SamplingConfig(**kwargs)


@pytest.mark.parametrize("extents,inside", [((100, 100, 0.05), "1.[0-9]%"), ((100, 0.01, 0.01), "0.0%")])
def test_parts_thinner_than_the_noise_are_refused_with_a_measured_near_sigma(tmp_path, extents, inside):
    """A sheet or a rod far thinner than the near-surface noise got "no surface to learn" or trained to IoU 0;
    the refusal names the cause and a --near-sigma measured to work, which does."""
    trimesh.creation.box(extents).export(tmp_path / "thin.stl")
    config = SamplingConfig(num_points=4000)
    with pytest.raises(InputError, match=rf"only {inside} of the 2,000 near-surface points fall inside .* thinner "
                                         r"than --near-sigma 0.01 x the longest side 110 = 1.1 units; --near-sigma "
                                         r"(\S+) puts a quarter or more inside") as refused:
        mesh_points(tmp_path / "thin.stl", config, seed=0)
    advised = float(refused.value.args[0].split("; --near-sigma ")[1].split()[0])
    points = mesh_points(tmp_path / "thin.stl", SamplingConfig(num_points=4000, near_sigma=advised), seed=0)
    assert np.mean(points.labels[2000:]) >= MIN_NEAR_INSIDE


@pytest.mark.parametrize("scale", [1e-9, 1e-25])
def test_tiny_parts_are_sampled_like_unit_ones(tmp_path, scale):
    """A part 1e-9 units across was refused as "no faces with area" (trimesh's absolute 1e-8)."""
    trimesh.creation.box((1, 1, 1)).export(tmp_path / "unit.ply")
    trimesh.creation.box((1, 1, 1)).apply_scale(scale).export(tmp_path / "tiny.ply")
    unit = mesh_points(tmp_path / "unit.ply", SamplingConfig(num_points=4000), seed=0)
    tiny = mesh_points(tmp_path / "tiny.ply", SamplingConfig(num_points=4000), seed=0)
    np.testing.assert_allclose(tiny.points, unit.points * scale, rtol=1e-6, atol=scale * 1e-9)
    assert np.array_equal(tiny.labels, unit.labels)


@pytest.mark.parametrize("scale", [1e-33, 1e-41])
def test_parts_below_what_float32_resolves_are_refused_by_their_size(tmp_path, scale):
    trimesh.creation.box((1, 1, 1)).apply_scale(scale).export(tmp_path / "tiny.ply")
    with pytest.raises(InputError, match=r"the box is \S+ units across, less than the 1e-30 whose cells float32 "
                                         "resolves; scale the data up"):
        mesh_points(tmp_path / "tiny.ply", SamplingConfig(num_points=4000), seed=0)
