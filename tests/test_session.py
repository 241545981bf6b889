import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from occnet.runtime.contract import Architecture, ModelInfo
from occnet.runtime.errors import DeviceError, InputError, ModelError
from occnet.runtime.session import OccupancyModel

INFO = ModelInfo((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0), Architecture())


def save_model(path, graph, metadata):
    """Write ``graph`` with ``metadata`` as an ONNX model at opset 18 and IR version 10, as occ-export writes (the
    newest onnx's default IR is refused by older onnxruntimes, 1.30 among them); returns ``path``."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    helper.set_model_props(model, metadata)
    onnx.save(model, path)
    return path


def sphere_model(path, *, input_name="points", output_name="logits", in_dims=("N", 3), out_dims=("N",),
                 metadata=INFO.to_metadata()):
    """A hand-built ONNX graph: logits = 0.5 - |p|^2 (a sphere), with chosen names, shapes, metadata."""
    nodes = [helper.make_node("Mul", [input_name, input_name], ["sq"]),
             helper.make_node("ReduceSum", ["sq", "axes"], ["r2"], keepdims=0),
             helper.make_node("Sub", ["half", "r2"], [output_name])]
    graph = helper.make_graph(
        nodes, "sphere",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(in_dims))],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, list(out_dims))],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
         helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])])
    return save_model(path, graph, metadata)


def test_a_model_that_fits_loads_and_evaluates(tmp_path):
    model = OccupancyModel(sphere_model(tmp_path / "m.onnx"), device="cpu")
    assert model.info == INFO
    np.testing.assert_allclose(model.logits(np.array([[0.5, 0, 0], [0, 0, 0]], np.float32)), [0.25, 0.5])
    assert model.provider == "CPUExecutionProvider"


@pytest.mark.parametrize("kwargs,match", [
    ({"input_name": "x"}, r"must have the inputs \['points'\], has \['x'\]"),
    ({"output_name": "y"}, "one output 'logits'"),
    ({"in_dims": ("N", 4)}, r"\[N, 3\]"),
    ({"in_dims": (7, 3)}, "dynamic N"),
    ({"metadata": {}}, "not an occnet model"),
    ({"metadata": {**INFO.to_metadata(), "occnet.format_version": "99"}}, "newer"),
    ({"metadata": {**INFO.to_metadata(), "occnet.bounds_min": "[0, 0]"}}, "malformed"),
    ({"metadata": {**INFO.to_metadata(), "occnet.bounds_max": "[-2, 1, 1]"}}, "empty"),
    ({"metadata": {**INFO.to_metadata(), "occnet.architecture": '{"hidden_size": 64, "depth": 3}'}},
     "malformed"),
])
def test_models_that_do_not_fit_are_refused(tmp_path, kwargs, match):
    with pytest.raises(ModelError, match=match):
        OccupancyModel(sphere_model(tmp_path / "m.onnx", **kwargs), device="cpu")


@pytest.mark.parametrize("content", [b"", b"not onnx", bytes(range(256)) * 10])
def test_files_that_are_not_onnx(tmp_path, content):
    (tmp_path / "m.onnx").write_bytes(content)
    with pytest.raises(ModelError, match="not a usable ONNX model"):
        OccupancyModel(tmp_path / "m.onnx")


def test_missing_file_and_bad_options(tmp_path):
    with pytest.raises(InputError, match="not found"):
        OccupancyModel(tmp_path / "none.onnx")
    path = sphere_model(tmp_path / "m.onnx")
    with pytest.raises(InputError, match="device"):
        OccupancyModel(path, device="tpu")
    with pytest.raises(InputError, match="threads"):
        OccupancyModel(path, threads=-1)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this machine has CUDA")
def test_cuda_that_cannot_be_honoured_is_an_error_and_auto_takes_the_cpu_quietly(tmp_path):
    path = sphere_model(tmp_path / "m.onnx")
    with pytest.raises(DeviceError, match="CUDA"):
        OccupancyModel(path, device="cuda")
    auto = OccupancyModel(path, device="auto")
    assert auto.provider == "CPUExecutionProvider" and auto.fallback is None


@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(), reason="no CUDA provider")
def test_cuda_session_really_runs_on_cuda(tmp_path):
    model = OccupancyModel(sphere_model(tmp_path / "m.onnx"), device="cuda")
    assert model.provider == "CUDAExecutionProvider"
    np.testing.assert_allclose(model.logits(np.zeros((3, 3), np.float32)), [0.5] * 3)
