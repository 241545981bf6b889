import igl
import numpy as np
import pytest
import trimesh

from occnet.runtime.inside import MAX_AMBIGUOUS, contains, winding_numbers


def ball(centre, radius=1.0, subdivisions=4):
    sphere = trimesh.creation.icosphere(subdivisions, radius=radius)
    return trimesh.Trimesh(sphere.vertices + np.asarray(centre, np.float64), sphere.faces, process=False)


def join(*meshes):
    """One mesh of several bodies, as a multi-solid file holds them: nothing merged, nothing removed."""
    return trimesh.util.concatenate(list(meshes))


def test_box_exact_on_random_points():
    box = trimesh.creation.box(extents=(1.0, 0.6, 0.3))
    points = np.random.default_rng(0).uniform(-0.7, 0.7, (50_000, 3))
    result = contains(box.vertices, box.faces, points)
    expected = np.all(np.abs(points) < np.array([0.5, 0.3, 0.15]), axis=1)
    assert np.array_equal(result.inside, expected)
    assert result.exact and result.ambiguous == 0.0


def test_rays_through_shared_edges_and_vertices_count_once():
    """Grid points in line with the box's edges and vertices: every ray meets edges exactly."""
    box = trimesh.creation.box()
    axis = np.linspace(-1, 1, 21)
    points = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    off_surface = np.all(np.abs(np.abs(points) - 0.5) > 1e-9, axis=1)
    result = contains(box.vertices, box.faces, points)
    assert np.array_equal(result.inside[off_surface], np.all(np.abs(points) < 0.5, axis=1)[off_surface])


@pytest.mark.parametrize("mesh", [
    ball((0.1, -0.2, 0.3)),
    trimesh.creation.capsule(height=1.0, radius=0.3, count=[24, 24]),
    trimesh.creation.annulus(r_min=0.3, r_max=0.8, height=0.4),
    join(ball((0, 0, 0)), ball((0.9, 0.2, 0), 0.7)),                  # overlapping bodies
], ids=["ball", "capsule", "annulus", "overlapping"])
def test_closed_meshes_exact_count_equals_the_generalised_winding_number(mesh):
    """Cross-check of the two methods on closed meshes: the signed crossing count against libigl's winding
    number on the whole mesh, on the same points."""
    rng = np.random.default_rng(1)
    surface, _ = trimesh.sample.sample_surface(mesh, 10_000, seed=2)
    points = np.concatenate([rng.uniform(*mesh.bounds, (20_000, 3)), surface + rng.normal(0, 0.01, surface.shape)])
    exact, is_exact = winding_numbers(mesh.vertices, mesh.faces, points)
    general = igl.fast_winding_number(np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64), points)
    assert is_exact and set(np.unique(exact)) <= {0.0, 1.0, 2.0}
    assert np.mean(np.abs(exact - general) < 0.05) > 0.999
    assert np.array_equal(np.abs(exact) >= 0.5, np.abs(general) >= 0.5)


def test_overlapping_balls_are_their_union():
    """Two closed balls that overlap (a CAD assembly): the lens inside both is inside, and the union's volume
    is right within 1%."""
    a, b = ball((0, 0, 0)), ball((1.0, 0, 0))
    points = np.random.default_rng(3).uniform((-1.2, -1.2, -1.2), (2.2, 1.2, 1.2), (300_000, 3))
    result = contains(*_arrays(join(a, b)), points)
    da, db = np.linalg.norm(points, axis=1), np.linalg.norm(points - (1.0, 0, 0), axis=1)
    lens = (da < 0.98) & (db < 0.98)
    assert lens.sum() > 10_000 and result.inside[lens].all() and result.exact
    box_volume = 3.4 * 2.4 * 2.4
    lens_volume = np.pi * (4 * 1 + 1.0) * (2 * 1 - 1.0) ** 2 / 12         # of the meshes' own volumes:
    union = a.volume + b.volume - lens_volume * a.volume / (4 / 3 * np.pi)  # the lens shrinks with them
    assert result.inside.mean() * box_volume == pytest.approx(union, rel=0.01)


def test_touching_bodies_and_a_cavity():
    """Two tetrahedra sharing an edge are both inside; an inward-facing shell inside a ball is a cavity; a
    whole mesh turned inside out still has its inside."""
    tet = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float64)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    other = tet * [-1, -1, 1] + [1, 1, 0]                 # turned half a turn: shares the edge (1,0,0)-(0,1,0)
    other_faces = faces + 4
    vertices, all_faces = np.concatenate([tet, other]), np.concatenate([faces, other_faces])
    mesh = trimesh.Trimesh(vertices, all_faces)           # merges the shared edge's vertices
    inside_points = np.array([[0.2, 0.2, 0.2], [0.8, 0.8, 0.2]])
    result = contains(mesh.vertices, mesh.faces, np.concatenate([inside_points, [[0.5, 0.5, 0.9]]]))
    assert result.inside.tolist() == [True, True, False] and result.exact
    outer, inner = ball((0, 0, 0)), ball((0, 0, 0), 0.5)
    shell = join(outer, trimesh.Trimesh(inner.vertices, inner.faces[:, ::-1], process=False))
    radii = np.array([0.2, 0.7, 1.3])
    points = np.stack([radii, 0 * radii, 0 * radii], axis=1)
    assert contains(*_arrays(shell), points).inside.tolist() == [False, True, False]
    flipped = trimesh.Trimesh(outer.vertices, outer.faces[:, ::-1], process=False)
    assert contains(*_arrays(flipped), points).inside.tolist() == [True, True, False]


def test_open_meshes_get_the_generalised_winding_number():
    """The cone-closed count minus the cones' share is the generalised winding number of the open mesh: against
    libigl's exact (slow) one, a bowl and a sphere with 30% of its faces gone."""
    sphere = ball((0, 0, 0), subdivisions=3)
    rng = np.random.default_rng(9)
    for faces in (sphere.faces[sphere.triangles_center[:, 2] < 0.5], sphere.faces[rng.random(len(sphere.faces)) < 0.7]):
        points = rng.uniform(-1.3, 1.3, (5_000, 3))
        ours, exact = winding_numbers(sphere.vertices, faces, points)
        reference = igl.winding_number(np.asarray(sphere.vertices), np.asarray(faces, np.int64), points)
        assert not exact and np.max(np.abs(ours - reference)) < 2e-3


def test_punched_holes_keep_the_original_labels_away_from_the_holes():
    sphere = ball((0, 0, 0))
    centres = sphere.vertices[[0, 40, 200, 700]]
    near_hole = np.min(np.linalg.norm(sphere.triangles_center[:, None] - centres[None], axis=2), axis=1) < 0.15
    punched = trimesh.Trimesh(sphere.vertices, sphere.faces[~near_hole], process=False)
    rng = np.random.default_rng(4)
    surface, _ = trimesh.sample.sample_surface(sphere, 20_000, seed=5)
    points = np.concatenate([rng.uniform(-1.1, 1.1, (20_000, 3)), surface + rng.normal(0, 0.01, surface.shape)])
    away = np.min(np.linalg.norm(points[:, None] - centres[None], axis=2), axis=1) > 0.3
    original, open_ = contains(*_arrays(sphere), points), contains(*_arrays(punched), points)
    assert open_.exact is False and original.exact
    assert np.mean(open_.inside[away] == original.inside[away]) >= 0.995
    assert open_.ambiguous < MAX_AMBIGUOUS


@pytest.mark.parametrize("kind", ["soup", "sheet", "hemisphere"])
def test_soups_and_sheets_leave_points_without_a_side(kind):
    rng = np.random.default_rng(6)
    if kind == "soup":
        triangles = rng.uniform(-0.3, 0.3, (100, 3, 3)) + rng.uniform(-1, 1, (100, 1, 3))
        mesh = trimesh.Trimesh(triangles.reshape(-1, 3), np.arange(300).reshape(-1, 3), process=False)
    elif kind == "sheet":
        mesh = trimesh.Trimesh([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], [[0, 1, 2], [0, 2, 3]])
    else:
        sphere = ball((0, 0, 0))
        mesh = trimesh.Trimesh(sphere.vertices, sphere.faces[sphere.triangles_center[:, 2] < 0], process=False)
    surface, _ = trimesh.sample.sample_surface(mesh, 5_000, seed=7)
    points = np.concatenate([rng.uniform(-1.2, 1.2, (5_000, 3)), surface + rng.normal(0, 0.02, surface.shape)])
    result = contains(*_arrays(mesh), points)
    assert not result.exact and result.ambiguous > MAX_AMBIGUOUS


def test_far_from_the_origin_and_tiny():
    """Labels are the same shifted by 1e7 or scaled to micrometres (coordinates taken about the mesh's centre)."""
    sphere = ball((0, 0, 0))
    points = np.random.default_rng(8).uniform(-1.2, 1.2, (20_000, 3))
    expected = contains(*_arrays(sphere), points).inside
    for scale, offset in ((1.0, 1e7), (1e-6, 0.0), (1e-6, 3.0)):
        moved = contains(sphere.vertices * scale + offset, sphere.faces, points * scale + offset).inside
        assert np.array_equal(moved, expected), (scale, offset)


def test_no_points_and_no_faces():
    box = trimesh.creation.box()
    assert contains(box.vertices, box.faces, np.zeros((0, 3))).inside.shape == (0,)
    assert not contains(box.vertices, np.zeros((0, 3), np.int64), np.zeros((4, 3))).inside.any()


def _arrays(mesh):
    return mesh.vertices, mesh.faces
