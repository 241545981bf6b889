import numpy as np
import pytest
import trimesh
from conftest import sphere_logits

from occnet.runtime.errors import EmptySurfaceError, InputError, OutputError
from occnet.runtime.mesher import MeshSettings, mesh_field
from occnet.runtime.meshio import MESH_FORMATS, write_mesh
from occnet.runtime.settings import probability_to_logit
from occnet.runtime.surface import _weld, filter_components

BOX = ((-1, -1, -1), (1, 1, 1))


def box_field(lo, hi):
    """A solid axis-aligned box, positive inside (max-norm distance)."""
    lo, hi = np.asarray(lo), np.asarray(hi)

    def fn(points):
        return (np.minimum(points - lo, hi - points).min(axis=1) * 50).astype(np.float32)

    return fn


@pytest.mark.parametrize("method", ["dense", "adaptive"])
def test_vertices_are_world_coordinates_on_an_asymmetric_shape(method):
    lo, hi = np.array([-0.7, -0.2, 0.1]), np.array([0.5, 0.3, 0.35])
    mesh, _ = mesh_field(box_field(lo, hi), *BOX, MeshSettings(resolution=81, method=method))
    spacing = 2 / 80
    np.testing.assert_allclose(mesh.bounds[0], lo, atol=spacing)
    np.testing.assert_allclose(mesh.bounds[1], hi, atol=spacing)
    assert mesh.is_watertight
    assert mesh.volume == pytest.approx(np.prod(hi - lo), rel=0.05)


def test_non_cubic_box_keeps_world_coordinates():
    box = ((0.0, 10.0, -3.0), (4.0, 12.0, -2.0))
    centre = np.array([2.5, 11.0, -2.5])
    mesh, stats = mesh_field(sphere_logits(centre, 0.45, 20), *box, MeshSettings(resolution=120))
    np.testing.assert_allclose(mesh.vertices.mean(axis=0), centre, atol=0.02)
    np.testing.assert_allclose(np.linalg.norm(mesh.vertices - centre, axis=1), 0.45, atol=0.01)
    spacing = 4.0 / 119                      # 120 samples along the longest side (x, 4 long)
    assert stats.grid_shape == (120, int(np.ceil(2.0 / spacing)) + 1, int(np.ceil(1.0 / spacing)) + 1)


def test_surface_cut_by_the_box_is_closed_at_the_border():
    mesh, _ = mesh_field(sphere_logits((0.9, 0, 0), 0.5), *BOX, MeshSettings(resolution=50))
    assert mesh.is_watertight
    assert mesh.bounds[1][0] == pytest.approx(1.0, abs=1e-6)
    assert mesh.volume > 0


def test_faces_point_outwards_and_volume_is_right():
    mesh, _ = mesh_field(sphere_logits((0, 0, 0), 0.5), *BOX, MeshSettings(resolution=100))
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * 0.5**3, rel=0.01)
    outward = np.einsum("ij,ij->i", mesh.face_normals, mesh.triangles_center)
    assert (outward > 0).mean() > 0.999


def test_threshold_moves_the_surface():
    fn = sphere_logits((0, 0, 0), 0.5, sharpness=10)
    small, _ = mesh_field(fn, *BOX, MeshSettings(resolution=64, threshold=0.9))
    large, _ = mesh_field(fn, *BOX, MeshSettings(resolution=64, threshold=0.1))
    r_small = np.linalg.norm(small.vertices, axis=1).mean()
    r_large = np.linalg.norm(large.vertices, axis=1).mean()
    assert r_small == pytest.approx(0.5 - np.log(9) / 10, abs=0.01)
    assert r_large == pytest.approx(0.5 + np.log(9) / 10, abs=0.01)


@pytest.mark.parametrize("threshold", [0.0, 1.0, 1.5, -0.2, float("nan")])
def test_threshold_must_be_a_probability(threshold):
    with pytest.raises(InputError, match="threshold"):
        probability_to_logit(threshold)


def test_threshold_half_is_logit_zero():
    assert probability_to_logit(0.5) == 0.0
    assert probability_to_logit(0.75) == pytest.approx(np.log(3))


@pytest.mark.parametrize("method", ["dense", "adaptive"])
@pytest.mark.parametrize("sign", [1, -1])
def test_no_surface_is_an_error(method, sign):
    with pytest.raises(EmptySurfaceError):
        mesh_field(lambda p: np.full(len(p), 5.0 * sign, np.float32), *BOX,
                   MeshSettings(resolution=16, method=method))


def test_components_largest_and_minimum_size():
    def two(points):
        return np.maximum(sphere_logits((-0.5, 0, 0), 0.35)(points), sphere_logits((0.5, 0, 0), 0.15)(points))

    mesh, _ = mesh_field(two, *BOX, MeshSettings(resolution=64))
    parts = mesh.split(only_watertight=False)
    assert len(parts) == 2
    verts, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    largest = filter_components(verts, faces, largest_only=True)
    assert len(largest[1]) == max(len(p.faces) for p in parts)
    assert np.allclose(trimesh.Trimesh(*largest).bounds, max(parts, key=lambda p: len(p.faces)).bounds)
    small = min(len(p.faces) for p in parts)
    assert len(filter_components(verts, faces, min_faces=small + 1)[1]) == max(len(p.faces) for p in parts)
    assert len(filter_components(verts, faces, min_faces=small)[1]) == len(faces)
    with pytest.raises(EmptySurfaceError):
        filter_components(verts, faces, min_faces=10**9)


@pytest.mark.parametrize("method", ["dense", "adaptive"])
def test_specks_below_two_grid_cells_are_dropped_parts_above_are_kept(method):
    """A ball, a bubble of one grid sample inside it, a lone inside sample beside it (both specks: pieces
    one cell wide), and a small ball three cells across (a part): only the specks go. (The bubble's logits
    are 8x steeper than the ball's, beyond what adaptive promises to find, so only dense is checked for it
    before the drop.)"""
    h = 2 / 64                                              # spacing at resolution 65 in BOX
    on_sample = -1 + 16 * h                                 # a grid sample's coordinate

    def scene(points):
        ball = sphere_logits((0.3, 0.0, 0.0), 0.4)(points)
        bubble = -sphere_logits((-1 + 42 * h, 0.0, 0.0), 0.4 * h, 400)(points)   # one sample outside
        speck = sphere_logits((on_sample, on_sample, on_sample), 0.4 * h, 400)(points)
        part = sphere_logits((-0.5, 0.5, 0.5), 1.5 * h, 400)(points)
        return np.maximum(np.minimum(ball, bubble), np.maximum(speck, part))

    from occnet.runtime.field import dense_field
    from occnet.runtime.grid import Grid
    from occnet.runtime.surface import extract_mesh

    field = dense_field(scene, Grid.from_bounds(*BOX, 65), 4096)
    assert len(extract_mesh(field, 0.0).split(only_watertight=False)) == 4    # the specks are there to drop
    mesh, stats = mesh_field(scene, *BOX, MeshSettings(resolution=65, method=method))
    parts = mesh.split(only_watertight=False)
    assert len(parts) == 2 and stats.faces == len(mesh.faces) and mesh.is_watertight
    assert sorted(round(float(np.ptp(p.bounds, axis=0).max()) / h) for p in parts) == [3, 26]


def test_a_mesh_of_specks_only_is_kept():
    from occnet.runtime.surface import drop_specks

    blob = trimesh.creation.icosphere(1, radius=0.01)
    assert len(drop_specks(blob.vertices, blob.faces, 0.1)[1]) == len(blob.faces)
    big = trimesh.creation.icosphere(1, radius=1.0)
    both = trimesh.util.concatenate([blob, big])
    kept = trimesh.Trimesh(*drop_specks(both.vertices, both.faces, 0.1), process=False)
    assert len(kept.faces) == len(big.faces) and np.allclose(kept.bounds, big.bounds)


@pytest.mark.parametrize("suffix", sorted(MESH_FORMATS))
def test_every_format_round_trips(tmp_path, suffix):
    mesh, _ = mesh_field(sphere_logits((0.1, 0.2, -0.1), 0.5), *BOX, MeshSettings(resolution=24))
    path = tmp_path / f"m{suffix}"
    write_mesh(mesh, path)
    back = trimesh.load(path, force="mesh")
    assert len(back.faces) == len(mesh.faces)
    np.testing.assert_allclose(back.bounds, mesh.bounds, atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_unknown_suffix_and_missing_folder(tmp_path):
    mesh, _ = mesh_field(sphere_logits((0, 0, 0), 0.5), *BOX, MeshSettings(resolution=16))
    with pytest.raises(InputError, match="format"):
        write_mesh(mesh, tmp_path / "m.xyz")
    with pytest.raises(OutputError, match="does not exist"):
        write_mesh(mesh, tmp_path / "missing" / "m.ply")
    assert list(tmp_path.iterdir()) == []


N = np.array([40, 40, 40])
A = [15.0, 3.5, 4.0]                          # on the brick plane x = 15 (16 cells in), fractional along y
B, C, D, E = [20.5, 7.0, 7.0], [21.0, 7.5, 7.0], [21.0, 7.0, 7.5], [22.5, 9.0, 9.0]


def test_weld_makes_seam_copies_one_and_renumbers():
    # two bricks computed A on their shared face: one vertex, faces renumbered, nothing left unused
    verts = np.array([A, B, C, A, D], np.float32)
    verts_out, faces = _weld(verts, np.array([[0, 1, 2], [3, 2, 4]], np.int32), N)
    assert verts_out.tolist() == [A, B, C, D]
    assert faces.tolist() == [[0, 1, 2], [0, 2, 3]] and faces.dtype == np.int32


def test_weld_drops_collapsed_faces_and_the_vertices_only_they_used():
    verts = np.array([A, A, E, B, C, D], np.float32)
    verts_out, faces = _weld(verts, np.array([[0, 1, 2], [3, 4, 5]], np.int32), N)
    assert verts_out.tolist() == [B, C, D] and faces.tolist() == [[0, 1, 2]]
