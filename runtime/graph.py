"""What an ONNX model's graph is made of, read from the protobuf wire format of its file.

The runtime has onnxruntime, which does not list a graph's nodes, and not the ``onnx`` package (a training
extra). Reading the operator types needs only the few fields that lead to them; everything else, weights
included, is skipped by its length.
"""

from __future__ import annotations

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
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == _LENGTH_DELIMITED:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ValueError("malformed protobuf (a field runs past its message)")
            yield key >> 3, data[pos:pos + length]
            pos += length
        else:
            raise ValueError(f"malformed protobuf (wire type {wire})")
    if pos != len(data):
        raise ValueError("malformed protobuf (a field runs past its message)")


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
