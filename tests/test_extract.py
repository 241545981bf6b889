import tracemalloc

import numpy as np
import pytest
from conftest import sphere_logits

from occnet.runtime.errors import InputError
from occnet.runtime.extract import adaptive_field, dense_field
from occnet.runtime.grid import Grid
from occnet.runtime.mesher import MeshSettings, mesh_field
from occnet.train.shapes import DEMO_BOUNDS, demo_sdf

BOX = ((-1, -1, -1), (1, 1, 1))


def two_spheres(points):
    a = sphere_logits((-0.4, 0.1, 0.0), 0.35)(points)
    b = sphere_logits((0.45, -0.2, 0.3), 0.25)(points)
    return np.maximum(a, b)


def demo(points):
    return (-demo_sdf(points) * 40).astype(np.float32)


def torus(points):
    q = np.hypot(points[:, 0] + 0.1, points[:, 1]) - 0.5
    return ((0.18 - np.hypot(q, points[:, 2] - 0.05)) * 40).astype(np.float32)


SHAPES = [(sphere_logits((0.1, -0.2, 0.05), 0.6), BOX), (two_spheres, BOX), (torus, BOX), (demo, DEMO_BOUNDS),
          (sphere_logits((0.3, 0.1, 0.0), 0.3), ((-1, -0.5, -0.6), (1.2, 0.8, 0.6)))]


@pytest.mark.parametrize("fn,box", SHAPES)
@pytest.mark.parametrize("resolution", [40, 97])
def test_adaptive_mesh_equals_dense_mesh(fn, box, resolution):
    dense, dense_stats = mesh_field(fn, *box, MeshSettings(resolution=resolution, method="dense"))
    adaptive, stats = mesh_field(fn, *box, MeshSettings(resolution=resolution, method="adaptive",
                                                        coarse_resolution=9))
    assert np.array_equal(adaptive.faces, dense.faces)
    np.testing.assert_allclose(adaptive.vertices, dense.vertices, atol=1e-6)
    assert stats.points_evaluated < dense_stats.points_evaluated
    assert adaptive.is_watertight


def test_adaptive_evaluates_a_small_fraction_at_high_resolution():
    grid = Grid.from_bounds(*BOX, 256)
    field = adaptive_field(sphere_logits((0, 0, 0), 0.5), grid, 0.0, 1 << 16)
    assert field.points_evaluated < 0.05 * grid.num_points


def test_thin_feature_limit_and_the_option_that_lifts_it():
    """A plate thinner than a coarse cell is missed by a coarse lattice and found by a finer one."""
    def plate(points):  # 0.04 thick: between the samples of a 5-sample lattice, wider than a 65-sample cell
        return ((0.02 - np.abs(points[:, 2] - 0.23)) * 100).astype(np.float32)

    grid = Grid.from_bounds(*BOX, 129)
    coarse = adaptive_field(plate, grid, 0.0, 1 << 16, coarse_resolution=5)
    assert not (coarse.values > 0).any()
    fine = adaptive_field(plate, grid, 0.0, 1 << 16, coarse_resolution=65)
    dense = dense_field(plate, grid, 1 << 16)
    assert np.array_equal(fine.values > 0, dense.values > 0)


def test_unevaluated_points_take_the_coarse_sign():
    fn = two_spheres
    grid = Grid.from_bounds(*BOX, 65)
    adaptive = adaptive_field(fn, grid, 0.0, 4096, coarse_resolution=9)
    dense = dense_field(fn, grid, 4096)
    assert np.array_equal(adaptive.values > 0, dense.values > 0)


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


def test_dense_result_does_not_depend_on_batch_size():
    grid = Grid.from_bounds(*BOX, 33)
    fn = sphere_logits((0.1, 0, 0), 0.5)
    a, b = dense_field(fn, grid, 7), dense_field(fn, grid, 100_000)
    assert np.array_equal(a.values, b.values)


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"coarse_resolution": 1}, {"guard": -1}])
def test_bad_adaptive_options(kwargs):
    args = {"batch_size": 64, "coarse_resolution": 9, "guard": 1, **kwargs}
    with pytest.raises(InputError):
        adaptive_field(two_spheres, Grid.from_bounds(*BOX, 16), 0.0, **args)
