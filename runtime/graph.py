"""What an ONNX model's graph is made of, read from the protobuf wire format of its file.

The runtime has onnxruntime, which does not list a graph's nodes, and not the ``onnx`` package (a training
extra). Reading the operator types needs only the few fields that lead to them (:func:`op_types`); the range
analysis of extraction reads the nodes and weights too (:func:`read_graph`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONTROL_FLOW = ("Loop", "Scan", "If")
"""Operators an occnet model never holds: its networks are feed-forward, and a ``Loop`` may never end."""

_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25          # ModelProto.graph, ModelProto.functions
_GRAPH_NODES, _FUNCTION_NODES = 1, 7            # GraphProto.node, FunctionProto.node
_NODE_OP_TYPE, _NODE_ATTRIBUTES = 4, 5          # NodeProto.op_type, NodeProto.attribute
_ATTRIBUTE_GRAPHS = (6, 11)                     # AttributeProto.g, AttributeProto.graphs: subgraphs
_LENGTH_DELIMITED = 2


def op_types(data: bytes) -> set[str]:
    """The operator types of every node of a serialized ``ModelProto``: the main graph, the subgraphs in its
    nodes' attributes (a ``Loop``'s body, an ``If``'s branches) and the model's local functions. Raises
    ``ValueError`` for bytes that are not a well-formed protobuf message."""
    found: set[str] = set()
    try:
        for number, value in _messages(memoryview(data)):
            if number == _MODEL_GRAPH:
                _nodes(value, _GRAPH_NODES, found)
            elif number == _MODEL_FUNCTIONS:
                _nodes(value, _FUNCTION_NODES, found)
    except (IndexError, RecursionError) as exc:
        raise ValueError(f"malformed protobuf ({type(exc).__name__})") from None
    return found


def _nodes(graph: memoryview, field: int, found: set[str]) -> None:
    for number, node in _messages(graph):
        if number != field:
            continue
        for key, value in _messages(node):
            if key == _NODE_OP_TYPE:
                found.add(bytes(value).decode("utf-8", "replace"))
            elif key == _NODE_ATTRIBUTES:
                for attribute_key, subgraph in _messages(value):
                    if attribute_key in _ATTRIBUTE_GRAPHS:
                        _nodes(subgraph, _GRAPH_NODES, found)


def _messages(data: memoryview):
    """``(field number, bytes)`` of each length-delimited field of one message (strings, sub-messages); the
    fields of other wire types are stepped over."""
    for number, wire, value in _fields(data):
        if wire == _LENGTH_DELIMITED:
            yield number, value


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    """The base-128 integer at ``pos`` and the position after it."""
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("malformed protobuf (a varint longer than 10 bytes)")


@dataclass(frozen=True)
class Node:
    """One node of a graph: its operator, the names of its inputs and outputs, and its attributes (an int, a
    float, bytes, a list of them, or a tensor as an ndarray)."""

    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: dict


@dataclass(frozen=True)
class Graph:
    """A model's main graph: its nodes in order, its initializers (weights) by name, its inputs and outputs."""

    nodes: list[Node]
    initializers: dict[str, np.ndarray]
    inputs: list[str]
    outputs: list[str]


class UnreadableGraph(ValueError):
    """A graph this reader does not take: weights in external files, a tensor type it does not know."""


_GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT = 5, 11, 12
_NODE_INPUT, _NODE_OUTPUT = 1, 2
_DTYPES = {1: np.float32, 6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64}
"""TensorProto data types this reader takes, by number."""


def read_graph(data: bytes) -> Graph:
    """The main graph of a serialized ``ModelProto``, weights included. Raises ``ValueError`` for bytes that
    are not a well-formed protobuf message, :class:`UnreadableGraph` for one it does not take."""
    try:
        graph = next((value for number, value in _messages(memoryview(data)) if number == _MODEL_GRAPH), None)
        if graph is None:
            raise UnreadableGraph("the model has no graph")
        nodes, initializers, inputs, outputs = [], {}, [], []
        for number, value in _messages(graph):
            if number == _GRAPH_NODES:
                nodes.append(_node(value))
            elif number == _GRAPH_INITIALIZER:
                name, array = _tensor(value)
                initializers[name] = array
            elif number in (_GRAPH_INPUT, _GRAPH_OUTPUT):
                name = next((bytes(v).decode() for k, v in _messages(value) if k == 1), "")
                (inputs if number == _GRAPH_INPUT else outputs).append(name)
    except (IndexError, RecursionError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed protobuf ({type(exc).__name__})") from None
    return Graph(nodes, initializers, inputs, outputs)


def _node(data: memoryview) -> Node:
    op, inputs, outputs, attributes = "", [], [], {}
    for number, _, value in _fields(data):
        if number == _NODE_OP_TYPE:
            op = bytes(value).decode()
        elif number == _NODE_INPUT:
            inputs.append(bytes(value).decode())
        elif number == _NODE_OUTPUT:
            outputs.append(bytes(value).decode())
        elif number == _NODE_ATTRIBUTES:
            name, attribute = _attribute(value)
            attributes[name] = attribute
    return Node(op, tuple(inputs), tuple(outputs), attributes)


def _attribute(data: memoryview):
    """``(name, value)`` of an AttributeProto: f (2), i (3), s (4), t (5), floats (7), ints (8)."""
    name, value, floats, ints = "", None, [], []
    for number, wire, field in _fields(data):
        if number == 1:
            name = bytes(field).decode()
        elif number == 2:
            value = float(np.frombuffer(field, "<f4")[0])
        elif number == 3:
            value = _signed(field)
        elif number == 4:
            value = bytes(field)
        elif number == 5:
            value = _tensor(field)[1]
        elif number == 7:
            floats += list(np.frombuffer(field, "<f4")) if wire == _LENGTH_DELIMITED else \
                [float(np.frombuffer(field, "<f4")[0])]
        elif number == 8:
            ints += _packed_varints(field) if wire == _LENGTH_DELIMITED else [_signed(field)]
    return name, value if value is not None else floats or ints


def _tensor(data: memoryview) -> tuple[str, np.ndarray]:
    """``(name, array)`` of a TensorProto held in the file (dims 1, data_type 2, float_data 4, int32_data 5,
    int64_data 7, name 8, raw_data 9, double_data 10, data_location 14)."""
    dims, dtype, name, raw, values = [], 1, "", None, []
    for number, wire, field in _fields(data):
        if number == 1:
            dims += _packed_varints(field) if wire == _LENGTH_DELIMITED else [field]
        elif number == 2:
            dtype = field
        elif number == 8:
            name = bytes(field).decode()
        elif number == 9:
            raw = bytes(field)
        elif number == 4:
            values += list(np.frombuffer(field, "<f4")) if wire == _LENGTH_DELIMITED else \
                [np.frombuffer(field, "<f4")[0]]
        elif number == 10:
            values += list(np.frombuffer(field, "<f8")) if wire == _LENGTH_DELIMITED else \
                [np.frombuffer(field, "<f8")[0]]
        elif number in (5, 7):
            values += _packed_varints(field, signed=True) if wire == _LENGTH_DELIMITED else [_signed(field)]
        elif number == 14 and field == 1:
            raise UnreadableGraph(f"tensor {name or '?'} keeps its data in an external file")
    if dtype not in _DTYPES:
        raise UnreadableGraph(f"tensor {name or '?'} has data type {dtype}, which this reader does not take")
    kind = np.dtype(_DTYPES[dtype]).newbyteorder("<")
    array = np.frombuffer(raw, kind) if raw is not None else np.array(values, dtype=kind)
    if array.size != int(np.prod(dims, dtype=np.int64)):
        raise ValueError(f"malformed tensor {name or '?'}: {array.size} values for dims {dims}")
    return name, array.reshape(dims).astype(_DTYPES[dtype])


def _fields(data: memoryview):
    """``(field number, wire type, value)`` of every field of one message: an int for varints, a memoryview of
    the bytes for the others."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        wire = key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = data[pos:pos + size], pos + size
        elif wire == _LENGTH_DELIMITED:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        else:
            raise ValueError(f"malformed protobuf (wire type {wire})")
        if pos > len(data):
            raise ValueError("malformed protobuf (a field runs past its message)")
        yield key >> 3, wire, value


def _packed_varints(data: memoryview, signed: bool = True) -> list[int]:
    values, pos = [], 0
    while pos < len(data):
        value, pos = _varint(data, pos)
        values.append(_signed(value) if signed else value)
    return values


def _signed(value: int) -> int:
    """A varint read as protobuf's two's-complement int64."""
    return value - (1 << 64) if value >= 1 << 63 else value
