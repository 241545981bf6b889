import numpy as np
import trimesh

from occnet.runtime.inside import contains


def test_box_exact_on_random_points():
    box = trimesh.creation.box(extents=(1.0, 0.6, 0.3))
    points = np.random.default_rng(0).uniform(-0.7, 0.7, (50_000, 3))
    result = contains(box.vertices, box.faces, points)
    expected = np.all(np.abs(points) < np.array([0.5, 0.3, 0.15]), axis=1)
    assert np.array_equal(result.inside, expected)
    assert result.disagreement == 0.0


def test_sphere_exact_away_from_the_tessellation():
    sphere = trimesh.creation.icosphere(4)
    points = np.random.default_rng(1).uniform(-1.2, 1.2, (50_000, 3))
    radius = np.linalg.norm(points, axis=1)
    clear = np.abs(radius - 1) > 0.01
    result = contains(sphere.vertices, sphere.faces, points)
    assert np.array_equal(result.inside[clear], radius[clear] < 1)


def test_rays_through_shared_edges_and_vertices_count_once():
    """Grid points in line with the box's edges and vertices: every ray meets edges exactly."""
    box = trimesh.creation.box()
    axis = np.linspace(-1, 1, 21)
    points = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    off_surface = np.all(np.abs(np.abs(points) - 0.5) > 1e-9, axis=1)
    result = contains(box.vertices, box.faces, points)
    assert np.array_equal(result.inside[off_surface], np.all(np.abs(points) < 0.5, axis=1)[off_surface])


def test_open_mesh_shows_as_disagreement():
    box = trimesh.creation.box()
    open_box = trimesh.Trimesh(box.vertices, box.faces[2:], process=False)   # one side removed
    points = np.random.default_rng(2).uniform(-0.45, 0.45, (5_000, 3))
    assert contains(open_box.vertices, open_box.faces, points).disagreement > 0.1


def test_no_points():
    box = trimesh.creation.box()
    result = contains(box.vertices, box.faces, np.zeros((0, 3)))
    assert result.inside.shape == (0,)
