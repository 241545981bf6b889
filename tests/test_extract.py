"""Grid evaluation: the adaptive method gives the dense mesh, thin and hidden features included, in memory
that follows the surface; dense is bounded per batch."""

import itertools
import tracemalloc

import numpy as np
import pytest
import trimesh
from conftest import ROOT, mesh_difference, sphere_logits

from occnet.runtime import field as field_module
from occnet.runtime import mesher
from occnet.runtime.errors import InputError, ResourceError
from occnet.runtime.field import (
    BRICK,
    CORNERS,
    PAD_DEPTH,
    BrickStorage,
    Evaluator,
    _brick_slopes,
    _corner_reach,
    _corners_of,
    _crossing_edges,
    _lattice_slopes,
    _samples_of,
    _surface_slopes,
    adaptive_field,
    corner_count,
    crossing_cells,
    dense_field,
)
from occnet.runtime.grid import Grid
from occnet.runtime.machine import Memory
from occnet.runtime.mesher import mesh_field, plan_grid
from occnet.runtime.settings import MeshSettings
from occnet.runtime.surface import extract_mesh, is_closed
from occnet.train.shapes import DEMO_BOUNDS, demo_sdf

BOX = ((-1, -1, -1), (1, 1, 1))
H = 2 / 128                                   # spacing at resolution 129 in BOX


def lattice(i):
    """World coordinate of grid index ``i`` at resolution 129 in BOX."""
    return -1 + i * H


def two_spheres(points):
    return np.maximum(sphere_logits((-0.4, 0.1, 0.0), 0.35)(points), sphere_logits((0.45, -0.2, 0.3), 0.25)(points))


def demo(points):
    return (-demo_sdf(points) * 40).astype(np.float32)


def torus(points):
    q = np.hypot(points[:, 0] + 0.1, points[:, 1]) - 0.5
    return ((0.18 - np.hypot(q, points[:, 2] - 0.05)) * 40).astype(np.float32)


# Features the brick lattice (every 16 samples, at indices 15, 31, ...) never sees: the mesh must still be whole.
MID = lattice(23)                             # halfway between two lattice planes


def thin_plate(points):                       # 1.2 voxels thick, parallel to a lattice plane, between two
    return ((0.6 * H - np.abs(points[:, 2] - MID)) * 100).astype(np.float32)


def thin_rod(points):                         # radius 0.7 voxel, slanted, through no lattice point
    axis = np.array([1.0, 0.37, 0.21]) / np.linalg.norm([1.0, 0.37, 0.21])
    rel = points - np.array([0.013, MID, -0.3])
    return ((0.7 * H - np.linalg.norm(rel - np.outer(rel @ axis, axis), axis=1)) * 100).astype(np.float32)


def thin_tube(points):                        # a cylinder wall one voxel thick
    r = np.hypot(points[:, 0] - 0.02, points[:, 1] + 0.03)
    return ((0.5 * H - np.abs(r - 0.63)) * 100).astype(np.float32)


def hidden_speck(points):                     # the only surface: a sphere of 3 voxels in the middle of a brick
    return sphere_logits((MID, MID, MID), 3 * H, 100)(points)


def big_and_small(points):                    # a large part and a small separate one between lattice points
    return np.maximum(sphere_logits((0.3, 0.2, 0.1), 0.4, 100)(points), hidden_speck(points))


def border_bumps(points):                     # parts poking a sample or two through the box's faces, capped there
    return np.maximum(sphere_logits((lattice(-1.5), MID, MID), 2 * H, 100)(points),
                      sphere_logits((MID, lattice(40), lattice(129.5)), 2 * H, 100)(points))


def big_and_border_bumps(points):             # the border's cells have pad corners, which bound nothing
    return np.maximum(sphere_logits((0.3, 0.2, 0.1), 0.4, 100)(points), border_bumps(points))


SHAPES = [(sphere_logits((0.1, -0.2, 0.05), 0.6), BOX), (two_spheres, BOX), (torus, BOX), (demo, DEMO_BOUNDS),
          (sphere_logits((0.3, 0.1, 0.0), 0.3), ((-1, -0.5, -0.6), (1.2, 0.8, 0.6)))]
HIDDEN = {thin_plate: thin_plate, thin_rod: thin_rod, thin_tube: thin_tube, hidden_speck: hidden_speck,
          big_and_small: hidden_speck, big_and_border_bumps: border_bumps}
"""Each shape, and the part of it that no sample of the brick lattice lies in."""


@pytest.mark.parametrize("fn,box", SHAPES)
@pytest.mark.parametrize("resolution", [40, 97])
def test_adaptive_mesh_equals_dense_mesh(fn, box, resolution):
    dense, dense_stats = mesh_field(fn, *box, MeshSettings(resolution=resolution, method="dense"))
    adaptive, stats = mesh_field(fn, *box, MeshSettings(resolution=resolution, method="adaptive"))
    assert mesh_difference(adaptive, dense) == (0, 0)
    assert len(adaptive.faces) == len(dense.faces) and len(adaptive.vertices) == len(dense.vertices)
    assert stats.points_evaluated < dense_stats.points_evaluated
    assert adaptive.is_watertight


@pytest.mark.parametrize("fn", list(HIDDEN))
def test_features_between_the_coarse_samples_are_never_dropped(fn):
    grid = Grid.from_bounds(*BOX, 129)
    corners = np.stack(np.meshgrid(*[np.arange(BRICK - 1, 129, BRICK)] * 3, indexing="ij"), -1).reshape(-1, 3)
    assert (HIDDEN[fn](grid.to_world(corners)) < 0).all()         # the lattice sees nothing of the feature
    dense, dense_stats = mesh_field(fn, *BOX, MeshSettings(resolution=129, method="dense"))
    adaptive, stats = mesh_field(fn, *BOX, MeshSettings(resolution=129))
    assert len(dense.faces) > 100
    assert mesh_difference(adaptive, dense) == (0, 0)
    assert adaptive.is_watertight
    assert stats.points_evaluated < 0.5 * dense_stats.points_evaluated


def test_slopes_measured_on_a_few_bricks_still_find_a_part_between_the_coarse_samples(monkeypatch):
    # large grids measure the lattice slopes on SLOPE_BRICKS of their bricks (512 of 16k at 1024^3); with
    # every brick the adaptive mesh is the dense one (test_features_between_the_coarse_samples_are_never_dropped)
    every, _ = mesh_field(big_and_small, *BOX, MeshSettings(resolution=129))
    monkeypatch.setattr(field_module, "SLOPE_BRICKS", 4)
    few, _ = mesh_field(big_and_small, *BOX, MeshSettings(resolution=129))
    assert len(few.split(only_watertight=False)) == 2 and mesh_difference(few, every) == (0, 0)


def test_a_lone_surface_between_the_coarse_samples_is_looked_for_in_every_brick(monkeypatch):
    # with no surface on the brick lattice every brick is split, and the first lattice that crosses the level
    # may do so in one brick only: the slope at the surface is looked for in all of them, not every k-th
    monkeypatch.setattr(field_module, "SLOPE_BRICKS", 4)
    dense, dense_stats = mesh_field(hidden_speck, *BOX, MeshSettings(resolution=129, method="dense"))
    adaptive, stats = mesh_field(hidden_speck, *BOX, MeshSettings(resolution=129))
    assert mesh_difference(adaptive, dense) == (0, 0)
    assert stats.points_evaluated < 0.5 * dense_stats.points_evaluated


def test_slopes_on_a_sample_of_bricks_match_those_on_all(monkeypatch):
    grid = Grid.from_bounds(*BOX, 129)
    storage = adaptive_field(torus, grid, 0.0, 1 << 16).storage
    evaluate = Evaluator(torus, grid, 1 << 16)
    every = _brick_slopes(storage, 2, evaluate, (0.0, 0.0))[0]     # the lattice's own slopes: steeper than 0
    sampled, crossing_edges = [], field_module._crossing_edges

    def counted(v, level):                                       # how many bricks each try looks at
        sampled.append(len(v))
        return crossing_edges(v, level)

    monkeypatch.setattr(field_module, "_crossing_edges", counted)
    monkeypatch.setattr(field_module, "SLOPE_BRICKS", storage.count // 16)
    monkeypatch.setattr(field_module, "SAMPLE_EDGES", 500)        # the torus has 6,384 on all its 512 bricks
    some = _brick_slopes(storage, 2, evaluate, (0.0, 0.0))[0]
    assert sampled[-1] < storage.count / 2 and sampled[0] == storage.count // 16       # a sample, grown once or more
    for side in (0, 1):              # lower narrows the band (within SAFETY = 2); higher only costs evaluations
        assert 0.9 * every[side] <= some[side] <= 1.2 * every[side]


def test_adaptive_evaluates_a_small_fraction_and_stores_no_grid_sized_array():
    grid = Grid.from_bounds(*BOX, 256)
    field = adaptive_field(sphere_logits((0, 0, 0), 0.5), grid, 0.0, 1 << 16)
    assert field.points_evaluated < 0.1 * grid.num_points
    assert field.nbytes < 0.3 * grid.num_points * 4   # bricks within 2 x 14 samples of a linear field: not the volume
    assert field.storage.table.size * BRICK**3 >= grid.num_points  # the table alone is grid / 4096 entries


@pytest.fixture(scope="module")
def demo_dense_129():
    """The demo field's dense mesh at 129^3 over BOX (the reference two tests compare with)."""
    return extract_mesh(dense_field(demo, Grid.from_bounds(*BOX, 129), 1 << 16), 0.0)


def test_a_sample_that_neighbouring_bricks_share_is_evaluated_once(demo_dense_129):
    """Bricks hold the samples of their common faces twice; each is evaluated once and reaches every brick that
    asked (before: 20 % of the evaluations were repeats). Only following the surface may repeat a few."""
    grid = Grid.from_bounds(*BOX, 129)
    seen = []

    def recorded(points):
        seen.append(np.rint((points - np.asarray(grid.origin)) / grid.spacing).astype(np.int64))
        return demo(points)

    field = adaptive_field(recorded, grid, 0.0, 1 << 16)
    index = np.concatenate(seen)
    repeats = len(index) - len(np.unique(index, axis=0))
    assert repeats < 0.005 * len(index)
    assert mesh_difference(extract_mesh(field, 0.0), demo_dense_129) == (0, 0)


def test_each_level_looks_only_at_bricks_split_above_and_empty_bricks_are_not_marched(monkeypatch, demo_dense_129):
    """Most bricks the coarse rule allocates hold no surface; the grid level looks only at bricks where the level
    above split a cell, and the bricks dropped before marching cubes are exactly ones with no cell to mesh (all
    eight corners known, not all on one side). The mesh is dense's."""
    grid = Grid.from_bounds(*BOX, 129)
    looked_at, dropped_meshable = [], []
    grid_samples, keep = field_module._evaluate_grid_samples, BrickStorage.keep

    def spy_grid(storage, rows, *args):
        looked_at.append((len(rows), storage.count))
        return grid_samples(storage, rows, *args)

    def spy_keep(storage, rows):
        meshable = crossing_cells(storage.values[:storage.count], 0.0)[0].reshape(storage.count, -1).any(axis=1)
        dropped = np.setdiff1d(np.arange(storage.count), rows)
        dropped_meshable.append((len(dropped), int(meshable[dropped].sum()), int(meshable.sum())))
        keep(storage, rows)

    monkeypatch.setattr(field_module, "_evaluate_grid_samples", spy_grid)
    monkeypatch.setattr(BrickStorage, "keep", spy_keep)
    field = adaptive_field(demo, grid, 0.0, 1 << 16)
    (rows, allocated), = looked_at
    (dropped, meshable_dropped, meshable), = dropped_meshable
    assert rows < 0.7 * allocated and dropped > 0.3 * allocated
    assert meshable_dropped == 0 and 0 < meshable <= field.storage.count
    assert mesh_difference(extract_mesh(field, 0.0), demo_dense_129) == (0, 0)


def test_keeping_bricks_moves_them_to_the_front_and_forgets_the_rest():
    storage = BrickStorage((100, 100, 100), 0.0)
    bricks = np.array([[0, 0, 0], [1, 2, 3], [4, 4, 4], [6, 1, 0], [2, 2, 2]])
    rows = np.concatenate([storage.rows(brick[None]) for brick in bricks])   # one at a time: rows 0 .. 4
    assert rows.tolist() == [0, 1, 2, 3, 4]
    for row in rows:
        storage.values[row, 1:-1, 1:-1, 1:-1] = row                  # the samples that are not pad: its own row
    nbytes = storage.nbytes
    storage.keep(np.array([1, 3, 4]))
    assert storage.count == 3 and storage.nbytes == nbytes         # the capacity stays: nbytes is the peak
    assert storage.bricks[:3].tolist() == [[1, 2, 3], [6, 1, 0], [2, 2, 2]]
    assert [float(storage.values[r, 8, 8, 8]) for r in range(3)] == [1.0, 3.0, 4.0]
    assert storage.table[1, 2, 3] == 0 and storage.table[6, 1, 0] == 1 and storage.table[2, 2, 2] == 2
    assert storage.table[0, 0, 0] == -1 and storage.table[4, 4, 4] == -1 and (storage.table >= 0).sum() == 3
    assert storage.rows(np.array([[4, 4, 4]])).tolist() == [3]      # a dropped brick comes back empty
    assert np.isnan(storage.values[3, 8, 8, 8])


def test_the_bricks_stop_at_the_memory_limit():
    grid = Grid.from_bounds(*BOX, 128)
    with pytest.raises(ResourceError, match="more memory"):
        adaptive_field(sphere_logits((0, 0, 0), 0.5), grid, 0.0, 1 << 16, memory_limit=1 << 20)


def test_dense_batches_do_not_grow_memory():
    """Peak memory is the volume plus one batch, whatever the number of batches."""
    grid = Grid.from_bounds(*BOX, 64)
    fn = sphere_logits((0, 0, 0), 0.5)
    peaks = []
    for batch in (1 << 10, 1 << 13):
        tracemalloc.start()
        dense_field(fn, grid, batch)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    volume = grid.num_points * 4
    assert peaks[0] < volume + 200 * (1 << 10) * 8 * 8
    assert peaks[1] < volume + 200 * (1 << 13) * 8 * 8


def test_results_do_not_depend_on_batch_size():
    grid = Grid.from_bounds(*BOX, 33)
    fn = sphere_logits((0.1, 0, 0), 0.5)
    a, b = dense_field(fn, grid, 7), dense_field(fn, grid, 100_000)
    assert np.array_equal(a.storage.values, b.storage.values)
    c, d = adaptive_field(fn, grid, 0.0, 7), adaptive_field(fn, grid, 0.0, 100_000)
    assert np.array_equal(c.storage.values[:c.storage.count], d.storage.values[:d.storage.count], equal_nan=True)


def test_bad_batch_size():
    for make in (lambda: dense_field(two_spheres, Grid.from_bounds(*BOX, 16), 0),
                 lambda: adaptive_field(two_spheres, Grid.from_bounds(*BOX, 16), 0.0, 0)):
        with pytest.raises(InputError, match="batch size"):
            make()


def brute_crossing(v, level):
    """Reference for crossing_cells: every cell's 8 corners read one by one."""
    k, a, b, c = (s - 1 for s in v.shape)
    change, complete = np.zeros((v.shape[0], a, b, c), bool), np.zeros((v.shape[0], a, b, c), bool)
    for n, x, y, z in np.ndindex(v.shape[0], a, b, c):
        corners = v[n, x:x + 2, y:y + 2, z:z + 2]
        complete[n, x, y, z] = not np.isnan(corners).any()
        change[n, x, y, z] = complete[n, x, y, z] and (corners > level).any() and not (corners > level).all()
    return change, complete


def test_cell_helpers_match_a_corner_by_corner_reading():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(3, 6, 5, 7)).astype(np.float32)
    v[rng.random(v.shape) < 0.15] = np.nan
    change, complete = crossing_cells(v, 0.2)
    expected = brute_crossing(v, 0.2)
    assert np.array_equal(change, expected[0]) and np.array_equal(complete, expected[1])
    assert change.any() and (complete & ~change).any() and (~complete).any()
    cells = rng.random((2, 4, 3, 5)) < 0.1
    corners = _corners_of(cells)
    brute = np.zeros((2, 5, 4, 6), bool)
    for n, x, y, z in zip(*np.nonzero(cells)):
        brute[n, x:x + 2, y:y + 2, z:z + 2] = True
    assert np.array_equal(corners, brute)
    marks = rng.random((2, 5, 4, 6)) < 0.5
    assert np.array_equal(corner_count(marks), brute_count(marks))
    samples = np.zeros((2, 9, 7, 11), bool)                      # every sample of a marked cell of side 2
    for n, x, y, z in zip(*np.nonzero(cells)):
        samples[n, 2 * x:2 * x + 3, 2 * y:2 * y + 3, 2 * z:2 * z + 3] = True
    assert np.array_equal(_samples_of(cells), samples)


def test_corner_reach_is_the_larger_of_the_surfaces_and_the_cells_own_steepest_edge():
    rng = np.random.default_rng(4)
    corners = rng.normal(size=(8, 50)).astype(np.float32)
    corners[:, 40:] = 0.2 + 0.05 * corners[:, 40:]               # flat cells: the surface's slope wins
    corners[0, :10] = 0.2 - PAD_DEPTH                            # a pad corner: its three edges say nothing
    steepest = np.zeros(50, np.float32)
    for a, b in itertools.combinations(range(8), 2):
        if np.abs(CORNERS[a] - CORNERS[b]).sum() == 1:          # the 12 edges, read one by one
            off_pad = (np.abs(corners[a] - 0.2) < PAD_DEPTH / 2) & (np.abs(corners[b] - 0.2) < PAD_DEPTH / 2)
            steepest = np.maximum(steepest, np.where(off_pad, np.abs(corners[a] - corners[b]), 0))
    local = field_module.SAFETY * np.sqrt(3) / 2 * steepest
    expected = np.where(corners > 0.2, np.maximum(0.5, local), np.maximum(2.0, local))
    expected[0, :10] = np.inf                                    # a pad corner bounds nothing
    reach = _corner_reach(corners, 0.2, (0.5, 2.0))
    assert reach.shape == (8, 50) and np.allclose(reach, expected)
    assert (local > 2.0).any() and (local < 0.5).any() and local.max() < 100      # the pad's edges left out


def brute_count(marks):
    return sum(marks[:, dx:dx + marks.shape[1] - 1, dy:dy + marks.shape[2] - 1, dz:dz + marks.shape[3] - 1]
               for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)).astype(np.uint8)


def test_slopes_count_only_edges_between_known_samples_off_the_pad():
    # along x: inside samples 3, 2 then outside -1, -4; the pad (far below) and unknowns must not count
    v = np.full((1, 6, 1, 1), np.nan, np.float32)
    v[0, :, 0, 0] = [level_pad := -PAD_DEPTH, 3.0, 2.0, -1.0, -4.0, level_pad]
    assert _crossing_edges(v, 0.0).tolist() == [[0, 2, 0, 0, 0]]
    inside, outside = _lattice_slopes(v, _crossing_edges(v, 0.0), 0.5, 0.0)
    assert inside == pytest.approx(1.0 / 0.5) and outside == pytest.approx(3.0 / 0.5)
    v[0, 1, 0, 0] = np.nan                      # no inside edge left: the outside slope stands for both
    assert _lattice_slopes(v, _crossing_edges(v, 0.0), 0.5, 0.0) == (pytest.approx(6.0), pytest.approx(6.0))
    flat = np.full((1, 4, 1, 1), 1.0, np.float32)
    assert _lattice_slopes(flat, _crossing_edges(flat, 0.0), 0.5, 0.0) is None


def saturated_sphere(points):
    """A sphere of radius 0.5 whose logits rise 400 per unit (6.25 per sample at resolution 129) and flatten at
    +-10 within 1.6 samples of the surface, as a trained network's do away from its surface."""
    return np.clip(400 * (0.5 - np.linalg.norm(points, axis=1)), -10, 10).astype(np.float32)


def test_the_slope_at_the_surface_is_measured_at_the_grids_scale_where_the_field_flattens():
    grid = Grid.from_bounds(*BOX, 129)
    lattice_index = np.arange(-1, 129, BRICK)                      # the brick corners, the pad's row included
    corners = np.stack(np.meshgrid(lattice_index, lattice_index, lattice_index, indexing="ij"), -1)
    inside_box = np.all((corners >= 0) & (corners < 129), axis=-1)
    v = np.full(corners.shape[:3], -PAD_DEPTH, np.float32)
    v[inside_box] = saturated_sphere(grid.to_world(corners[inside_box]))
    edges = _crossing_edges(v[None], 0.0)
    assert len(edges) > 20
    across = _lattice_slopes(v[None], edges, BRICK * grid.spacing, 0.0)
    evaluate = Evaluator(saturated_sphere, grid, 1 << 16)
    at_surface = _surface_slopes(v[None], np.full((1, 3), -1), BRICK, edges, evaluate, 0.0)
    # across a lattice edge the 20-logit rise spreads over 16 samples; at the grid's scale each side's
    # next edge, one sample away from the surface, rises the full 400 per unit or what is left to the flat
    assert max(across) < 0.2 * 400
    assert 0.3 * 400 < at_surface[0] <= 400 * 1.001 and 0.3 * 400 < at_surface[1] <= 400 * 1.001
    assert evaluate.points_evaluated <= 6 * len(edges)            # 4 halvings and one sample beyond each end


@pytest.mark.parametrize("resolution, threshold", [(200, 0.97), (129, 0.97), (100, 0.5)])
def test_a_thin_walled_model_is_meshed_whole(resolution, threshold):
    # models/tube.onnx, wall about 0.8, 0.5 and 0.4 voxel thick at these resolutions, at probability 0.97 the
    # wall's inside thinner still. Slopes measured only across each level's lattice missed 4.4 % of the faces
    # at 200; the slopes at the surface alone, without each cell's own (_corner_reach), 14 % at 129 and 1.6 %
    # at 100: the wall's flanks are steeper than the surface's typical slope
    from occnet.runtime import OccupancyModel

    model = OccupancyModel(ROOT / "models" / "tube.onnx", device="cpu", threads=2)
    settings = dict(resolution=resolution, threshold=threshold)
    dense, _ = mesh_field(model.logits, model.info.bounds_min, model.info.bounds_max,
                          MeshSettings(method="dense", **settings))
    adaptive, stats = mesh_field(model.logits, model.info.bounds_min, model.info.bounds_max, MeshSettings(**settings))
    assert len(dense.faces) > 20_000
    assert mesh_difference(adaptive, dense) == (0, 0)
    assert stats.points_evaluated < 0.3 * np.prod(stats.grid_shape)


def test_is_closed_counts_the_faces_on_every_edge():
    sphere = trimesh.creation.icosphere(3)
    assert is_closed(sphere.faces) and sphere.is_watertight
    assert not is_closed(sphere.faces[1:])                              # a hole
    assert not is_closed(np.concatenate([sphere.faces, sphere.faces[:1]]))   # an edge on three faces
    assert not is_closed(np.zeros((0, 3), np.int64))


@pytest.mark.parametrize("fn,box", SHAPES[:3])
def test_marching_by_bricks_gives_the_whole_volumes_mesh(fn, box):
    """The dense field marched brick by brick against scikit-image on the whole padded volume at once: the
    same faces, vertices within float32 rounding (the bricks round in their own coordinates)."""
    from skimage import measure

    grid = Grid.from_bounds(*box, 70)
    field = dense_field(fn, grid, 4096)
    bricked = extract_mesh(field, 0.0)
    padded = np.pad(field.storage.values, 1, constant_values=-PAD_DEPTH)
    verts, faces, _, _ = measure.marching_cubes(padded, 0.0, gradient_direction="ascent")
    whole = trimesh.Trimesh(grid.to_world(np.clip(verts - 1, 0, np.array(grid.shape) - 1)), faces)
    whole.merge_vertices(digits_vertex=6)
    assert mesh_difference(bricked, whole, atol=1e-5) == (0, 0)
    assert len(bricked.faces) == len(whole.faces) and is_closed(bricked.faces)


def test_the_mesh_comparison_sees_a_moved_vertex_a_missing_face_and_a_flipped_one():
    """The helper every equality check above relies on: (0, 0) only for the same faces."""
    sphere = trimesh.creation.icosphere(2)
    order = np.random.default_rng(1).permutation(len(sphere.vertices))
    renumbered = trimesh.Trimesh(sphere.vertices[order], np.argsort(order)[sphere.faces][::-1], process=False)
    assert mesh_difference(renumbered, sphere) == (0, 0)
    moved = sphere.copy()
    moved.vertices[0] += 1e-3
    assert mesh_difference(moved, sphere) == (5, 5)                    # the five faces around vertex 0
    assert mesh_difference(trimesh.Trimesh(sphere.vertices, sphere.faces[1:], process=False), sphere) == (0, 1)
    flipped = sphere.faces.copy()
    flipped[0] = flipped[0, ::-1]
    assert mesh_difference(trimesh.Trimesh(sphere.vertices, flipped, process=False), sphere) == (1, 1)


@pytest.mark.parametrize("method", ["adaptive", "dense"])
@pytest.mark.parametrize("gib", [0.5, 2.0, 9.0])
def test_a_refused_resolution_names_the_largest_that_would_fit(monkeypatch, method, gib):
    """The resolution the refusal offers fits, and one more does not (a 0.9x step down offered less)."""
    have = Memory(int(gib * 2**30), "a test's limit")
    monkeypatch.setattr(mesher, "available_memory", lambda: have)
    with pytest.raises(ResourceError, match=rf"only {gib:.1f} GiB \(a test's limit\) is available; resolution "
                                            r"(\d+) is the largest that would fit$") as refused:
        plan_grid(*DEMO_BOUNDS, MeshSettings(resolution=8192, method=method))
    largest = int(refused.value.args[0].split("resolution ")[-1].split()[0])
    assert plan_grid(*DEMO_BOUNDS, MeshSettings(resolution=largest, method=method)).shape[0] == largest
    with pytest.raises(ResourceError):
        plan_grid(*DEMO_BOUNDS, MeshSettings(resolution=largest + 1, method=method))


def test_no_resolution_fits_below_the_libraries_own_memory(monkeypatch):
    monkeypatch.setattr(mesher, "available_memory", lambda: Memory(2**20, "a test's limit"))
    with pytest.raises(ResourceError, match="no resolution would fit$"):
        plan_grid(*DEMO_BOUNDS, MeshSettings(resolution=64))
