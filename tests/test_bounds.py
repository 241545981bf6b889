"""Range analysis (runtime/bounds.py) and extraction by sound bounds (runtime/bounded.py): the graph read
without the onnx package, bounds that hold on every sample and stay tight on small boxes, and the bounded
extraction giving dense's surface exactly."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import ROOT
from onnx import helper, numpy_helper

from occnet.runtime import MeshSettings, OccupancyModel, mesh_model
from occnet.runtime.bounded import bounded_field
from occnet.runtime.bounds import network_bounds
from occnet.runtime.field import dense_field
from occnet.runtime.graph import read_graph
from occnet.runtime.grid import Grid
from occnet.runtime.surface import surface_arrays

MODELS = sorted((ROOT / "models").glob("*.onnx"))


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_the_graph_reads_as_the_onnx_package_reads_it(path):
    graph, reference = read_graph(path.read_bytes()), onnx.load(path).graph
    assert [(n.op, n.inputs, n.outputs) for n in graph.nodes] == \
        [(n.op_type, tuple(n.input), tuple(n.output)) for n in reference.node]
    assert graph.inputs == [i.name for i in reference.input] and graph.outputs == [o.name for o in reference.output]
    for tensor in reference.initializer:
        expected = numpy_helper.to_array(tensor)
        assert graph.initializers[tensor.name].dtype == expected.dtype
        np.testing.assert_array_equal(graph.initializers[tensor.name], expected)
    for node, ref in zip(graph.nodes, reference.node):
        for attribute in ref.attribute:
            value = helper.get_attribute_value(attribute)
            assert node.attributes[attribute.name] == (list(value) if isinstance(value, list) else value)


def test_a_graph_the_analysis_does_not_take_has_no_bounds_and_garbage_is_refused():
    x = helper.make_tensor_value_info("points", onnx.TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N"])
    weight = numpy_helper.from_array(np.ones((3, 1), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["points", "w"], ["h"]),
                               helper.make_node("Tanh", ["h"], ["t"]),
                               helper.make_node("Squeeze", ["t"], ["logits"], axes=[1])], "g", [x], [y], [weight])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]).SerializeToString()
    assert [n.op for n in read_graph(data).nodes] == ["MatMul", "Tanh", "Squeeze"]
    assert network_bounds(data) is None
    assert network_bounds(b"\x0a\xff\xff") is None
    with pytest.raises(ValueError):
        read_graph(b"\x0a\xff\xff")


def sampled_boxes(model: OccupancyModel, size: float, rng: np.random.Generator, boxes: int = 200,
                  samples: int = 300):
    """Random boxes of ``size`` x the model's box inside it, and the model's logits at samples in each."""
    low, high = np.asarray(model.info.bounds_min), np.asarray(model.info.bounds_max)
    extent = (high - low) * size
    lower = low + rng.uniform(0, 1, (boxes, 3)) * (high - low - extent)
    points = lower[:, None, :] + rng.uniform(0, 1, (boxes, samples, 3)) * extent
    corners = lower[:, None, :] + np.array(list(np.ndindex(2, 2, 2)))[None] * extent     # the extremes too
    points = np.concatenate([points, corners], axis=1)
    values = model.logits(points.reshape(-1, 3)).reshape(boxes, -1)
    return lower, lower + extent, values


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_bounds_hold_on_every_sample_and_are_tight_on_small_boxes(path):
    model = OccupancyModel(path, device="cpu")
    bounds = model.bounds()
    origin = np.asarray(model.info.origin)
    rng = np.random.default_rng(0)
    for size in (0.5, 0.1, 0.02, 0.004):
        lower, upper, values = sampled_boxes(model, size, rng)
        low, high = bounds(lower - origin, upper - origin)
        assert np.all(values.min(axis=1) >= low) and np.all(values.max(axis=1) <= high), size
    # affine arithmetic keeps the three box terms exact through the layers: on boxes 0.4% of the model's
    # box the bound is within 1.1x the sampled range for the ReLU networks (measured 1.01-1.06; plain
    # intervals lose the correlations at the first layer); Fourier features' sines are curved on such a box
    # (measured 8.4x, 2.5x on boxes a quarter the size)
    spread = np.median((high - low) / (values.max(axis=1) - values.min(axis=1)))
    assert spread < (10 if "fourier" in path.stem else 1.1), spread


def test_bounds_of_onets_decoder_hold_with_the_observation_fixed(tmp_path):
    """The per-point graph is the conditional-batch-norm decoder whatever the encoder (clouds, voxels): its
    code's slices scale and shift each layer."""
    from test_onet import SMALL, onet_bytes, onet_model

    from occnet.export.onnx_export import export_checkpoint

    (tmp_path / "m.pt").write_bytes(onet_bytes(onet_model(SMALL["pointnet_resnet"])))
    export_checkpoint(tmp_path / "m.pt", tmp_path / "m.onnx", verify=False)
    rng = np.random.default_rng(1)
    seen = rng.normal(size=(300, 3)) * 0.2
    shaped = OccupancyModel(tmp_path / "m.onnx", device="cpu").given(seen)
    bounds = shaped.bounds()
    assert bounds is not None
    for size in (0.5, 0.05):
        lower, upper, values = sampled_boxes(shaped, size, rng, boxes=40)
        low, high = bounds(lower, upper)                          # ONet's frame: the origin is zero
        assert np.all(values.min(axis=1) >= low) and np.all(values.max(axis=1) <= high)


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_the_bounded_extraction_gives_dense_surface_exactly(path):
    """Every cell marching cubes meshes in the dense field is evaluated, at every level of the octree, on
    grids that do not divide into its cells (odd sizes, and boxes cut short along two axes)."""
    model = OccupancyModel(path, device="cpu")
    for resolution in (45, 71):
        grid = Grid.from_bounds(model.info.bounds_min, model.info.bounds_max, resolution)
        dense = surface_arrays(dense_field(model.logits, grid, 16384), 0.0)
        bounded = surface_arrays(bounded_field(model.logits, model.bounds(), model.info.origin, grid, 0.0, 16384),
                                 0.0)
        assert triangles(*bounded) == triangles(*dense) and len(dense[1]) > 0


def triangles(vertices: np.ndarray, faces: np.ndarray) -> set:
    """A mesh as the set of its triangles' corner coordinates (the order bricks are meshed in aside)."""
    return {tuple(map(tuple, vertices[face])) for face in faces}


def test_occ_mesh_bounded_writes_denses_mesh_at_another_threshold():
    model = OccupancyModel(ROOT / "models" / "tube.onnx", device="cpu")
    dense, _ = mesh_model(model, MeshSettings(resolution=80, method="dense", threshold=0.3))
    bounded, stats = mesh_model(model, MeshSettings(resolution=80, method="bounded", threshold=0.3))
    assert stats.method == "bounded" and bounded.is_watertight
    assert triangles(bounded.vertices, bounded.faces) == triangles(dense.vertices, dense.faces)


def test_the_bounded_extraction_evaluates_fewer_points_than_adaptive_at_256():
    from occnet.runtime.field import adaptive_field

    model = OccupancyModel(ROOT / "models" / "demo.onnx", device="cpu")
    grid = Grid.from_bounds(model.info.bounds_min, model.info.bounds_max, 256)
    bounded = bounded_field(model.logits, model.bounds(), model.info.origin, grid, 0.0, 16384)
    adaptive = adaptive_field(model.logits, grid, 0.0, 16384)
    assert bounded.points_evaluated < 0.75 * adaptive.points_evaluated        # measured 459,221 and 705,663


def crafted(base: Path, folder: Path, name: str, first: list, first_bias: list, out: list, out_bias: float,
            second: tuple | None = None) -> OccupancyModel:
    """A 64x4 network written by hand into ``base``'s checkpoint (its points unscaled): the first layer's
    neurons ``first``/``first_bias``, passed on unchanged by identity layers (or, with ``second = (weights,
    bias)``, a second layer's first neuron), and the output ``out . neurons + out_bias``; exported (test_export
    verifies the exporter)."""
    import torch

    from occnet.export.onnx_export import export_checkpoint

    state = torch.load(base, weights_only=True)
    model = {key: torch.zeros_like(value) for key, value in state["model"].items()}
    model["scale"] = torch.ones(1)
    model["net.0.weight"][:len(first)] = torch.tensor(first, dtype=torch.float32)
    model["net.0.bias"][:len(first)] = torch.tensor(first_bias, dtype=torch.float32)
    kept = range(1 if second else len(first))
    for layer in (2, 4, 6, 8):
        model[f"net.{layer}.weight"][kept, kept] = 1.0
    if second:
        model["net.2.weight"][0, :len(first)] = torch.tensor(second[0], dtype=torch.float32)
        model["net.2.bias"][0] = second[1]
    model["net.10.weight"][0, :len(out)] = torch.tensor(out, dtype=torch.float32)
    model["net.10.bias"][0] = out_bias
    torch.save({**state, "model": model}, folder / f"{name}.pt")
    export_checkpoint(folder / f"{name}.pt", folder / f"{name}.onnx", verify=False)
    return OccupancyModel(folder / f"{name}.onnx", device="cpu")


def test_parts_built_to_defeat_sampling_are_found_with_few_evaluations(trained_run, tmp_path):
    """A slab 3 samples thick off the coarse lattice's planes, a speck around one sample (an L1 ball of radius
    1.2 samples) and the same speck rising out of a flat field of -1 (nothing for a slope to be measured on):
    the bounded extraction meshes what dense meshes, evaluating a few hundred points for the speck."""
    resolution, steep = 96, 100.0
    spacing = 1.1 / (resolution - 1)
    axes = [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]]
    slab = crafted(trained_run / "best.pt", tmp_path, "slab", axes[:2], [-0.123, 0.123], [-steep, -steep],
                   steep * 1.5 * spacing)
    grid = Grid.from_bounds(slab.info.bounds_min, slab.info.bounds_max, resolution)
    centre = grid.to_world(np.array([[57, 31, 70]]))[0]
    shifts = [-centre[0], centre[0], -centre[1], centre[1], -centre[2], centre[2]]
    speck = crafted(trained_run / "best.pt", tmp_path, "speck", axes, shifts, [-steep] * 6, steep * 1.2 * spacing)
    spike = crafted(trained_run / "best.pt", tmp_path, "spike", axes, shifts, [2 / (1.2 * spacing)], -1.0,
                    second=([-1.0] * 6, 1.2 * spacing))
    for model, most in ((slab, 100_000), (speck, 500), (spike, 500)):
        dense = surface_arrays(dense_field(model.logits, grid, 16384), 0.0)
        field = bounded_field(model.logits, model.bounds(), model.info.origin, grid, 0.0, 16384)
        assert triangles(*surface_arrays(field, 0.0)) == triangles(*dense) and len(dense[1]) > 0
        assert field.points_evaluated <= most, (model.path.stem, field.points_evaluated)
