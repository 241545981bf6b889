import numpy as np
import pytest

from occnet.runtime.errors import InputError
from occnet.runtime.points import MIN_POINTS, load_npz, make_point_set


def labelled(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    points = rng.uniform(-0.5, 0.5, (n, 3)).astype(np.float32)
    return points, (np.linalg.norm(points, axis=1) < 0.3).astype(np.uint8)


@pytest.mark.parametrize("pkey,lkey", [("points", "occupancies"), ("xyz", "labels"), ("pts", "occ"),
                                       ("coords", "inside")])
def test_common_key_names(tmp_path, pkey, lkey):
    points, labels = labelled()
    np.savez(tmp_path / "d.npz", **{pkey: points, lkey: labels})
    data = load_npz(tmp_path / "d.npz")
    assert np.array_equal(data.points, points)
    assert np.array_equal(data.labels, labels.astype(np.float32))
    assert data.bounds_min == pytest.approx(tuple(points.min(axis=0)))


def test_onet_float16_points_with_packed_occupancies(tmp_path):
    points, labels = labelled(1001)
    np.savez(tmp_path / "points.npz", points=points.astype(np.float16), occupancies=np.packbits(labels),
             loc=np.zeros(3), scale=np.ones(1))
    data = load_npz(tmp_path / "points.npz")
    assert data.points.dtype == np.float64                  # full precision kept for far-away data
    np.testing.assert_allclose(data.points, points, atol=1e-3)
    assert np.array_equal(data.labels, labels.astype(np.float32))


def test_boolean_and_float_labels(tmp_path):
    points, labels = labelled()
    for converted in (labels.astype(bool), labels.astype(np.float64)):
        assert np.array_equal(make_point_set(points, converted, "x").labels, labels.astype(np.float32))


@pytest.mark.parametrize("mutate,match", [
    (lambda p, lab: (p[:, :2], lab), "shape"),
    (lambda p, lab: (p, lab[:-1]), "labels of shape"),
    (lambda p, lab: (np.where(np.arange(len(p))[:, None] == 3, np.nan, p), lab), "NaN"),
    (lambda p, lab: (np.where(np.arange(len(p))[:, None] == 3, np.inf, p), lab), "infinite"),
    (lambda p, lab: (p, np.where(np.arange(len(lab)) == 5, 2, lab)), "0 .outside. or 1"),
    (lambda p, lab: (p, lab * 0), "all .* outside"),
    (lambda p, lab: (p, lab * 0 + 1), "all .* inside"),
    (lambda p, lab: (p[:MIN_POINTS - 1], lab[:MIN_POINTS - 1]), "too few"),
    (lambda p, lab: (p.astype(str), lab), "real numbers"),
])
def test_bad_data_is_refused(mutate, match):
    points, labels = labelled()
    with pytest.raises(InputError, match=match):
        make_point_set(*mutate(points, labels), "bad.npz")


def test_missing_keys_name_what_was_found(tmp_path):
    np.savez(tmp_path / "d.npz", foo=np.zeros((10, 3)))
    with pytest.raises(InputError, match=r"found keys \['foo'\]"):
        load_npz(tmp_path / "d.npz")


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", b"PK\x03\x04truncated"])
def test_unreadable_npz(tmp_path, content):
    (tmp_path / "d.npz").write_bytes(content)
    with pytest.raises(InputError, match="not a readable .npz"):
        load_npz(tmp_path / "d.npz")


def test_pickled_object_arrays_are_not_loaded(tmp_path):
    points, labels = labelled()
    np.savez(tmp_path / "d.npz", points=points, occupancies=np.array([object()] * len(labels)))
    with pytest.raises(InputError):
        load_npz(tmp_path / "d.npz")
