import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from occnet.runtime.errors import InputError
from occnet.runtime.grid import Grid


def test_cubic_box_is_the_seeds_linspace_grid():
    grid = Grid.from_bounds((-0.5, -0.5, -0.5), (0.5, 0.5, 0.5), 5)
    assert grid.shape == (5, 5, 5)
    for axis in grid.axes():
        np.testing.assert_allclose(axis, np.linspace(-0.5, 0.5, 5), atol=1e-12)


def test_points_are_x_y_z_in_ij_order():
    grid = Grid.from_bounds((0, 0, 0), (4, 2, 1), 5)
    assert grid.shape == (5, 3, 2)          # spacing 1: y spans 2 (3 samples), z spans 1 (2 samples)
    flat = np.ravel_multi_index((4, 1, 0), grid.shape)
    x, y, z = grid.axes()
    np.testing.assert_allclose(grid.points(np.array([flat]))[0], [x[4], y[1], z[0]], atol=1e-6)


def test_shorter_sides_get_the_same_spacing_centred():
    grid = Grid.from_bounds((0, 0, 0), (2.0, 1.0, 0.5), 9)
    assert grid.spacing == pytest.approx(0.25)
    assert grid.shape == (9, 5, 3)
    x, y, z = grid.axes()
    assert (x[0], x[-1]) == pytest.approx((0.0, 2.0))
    assert (y[0], y[-1]) == pytest.approx((0.0, 1.0))
    assert (z[0] + z[-1]) / 2 == pytest.approx(0.25)


@pytest.mark.parametrize("resolution", [0, 1, -3, 2.5])
def test_bad_resolution_is_refused(resolution):
    with pytest.raises(InputError, match="resolution"):
        Grid.from_bounds((0, 0, 0), (1, 1, 1), resolution)


def test_empty_box_is_refused():
    with pytest.raises(InputError, match="extent"):
        Grid.from_bounds((0, 0, 0), (1, 0, 1), 8)


@settings(max_examples=60, deadline=None)
@given(st.tuples(*[st.floats(0.01, 100.0)] * 3), st.tuples(*[st.floats(-50, 50)] * 3), st.integers(2, 300))
def test_grid_covers_the_box_with_cubic_voxels(extent, lo, resolution):
    lo = np.array(lo)
    hi = lo + np.array(extent)
    grid = Grid.from_bounds(lo, hi, resolution)
    assert max(grid.shape) == resolution
    for axis, a, b in zip(grid.axes(), lo, hi):
        tol = 1e-9 * max(1.0, abs(a), abs(b))
        assert axis[0] <= a + tol and axis[-1] >= b - tol      # covers the box
        assert axis[-1] - axis[0] < (b - a) + 2 * grid.spacing + tol  # and not much more
    assert grid.spacing == pytest.approx(max(extent) / (resolution - 1))
