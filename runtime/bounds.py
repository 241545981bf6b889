"""Sound bounds of a model's logit over boxes of space: range analysis by affine arithmetic through the model's
own ONNX graph (Sharp and Jacobson, "Spelunking the Deep", SIGGRAPH 2022).

Over a box with centre ``c`` and half-sides ``h``, a point is ``c + h * e`` with ``e`` in ``[-1, 1]^3``. Every
value of the graph is carried as an affine form in ``e`` plus an independent error: ``centre + terms . e +
[-error, error]``. Linear operators (``Gemm``, ``MatMul``, ``Add``, ``Sub``, ``Mul`` and ``Div`` by constants,
``Concat``, shape operators) are exact on it; ``Relu`` uses the tightest linear enclosure of ``max(0, x)`` on
the form's range (``lambda x + mu +- mu``, ``lambda = u / (u - l)``, ``mu = -lambda l / 2``); ``Sin`` and ``Cos``
their tangent at the centre with Taylor's remainder (``|f''| <= 1``: ``r^2 / 2`` for a form of radius ``r``),
or ``[-1, 1]`` where that is tighter. Keeping the three box terms exact through the layers is what makes
the bound tight: plain interval arithmetic loses every correlation at the first layer.

The arithmetic is float64 on the model's own weights: it bounds the network computed exactly. onnxruntime
computes in float32, so :meth:`NetworkBounds.__call__` widens each bound by :data:`FLOAT32_MARGIN` of the
magnitudes met. A graph with an operator outside this set has no bounds (:func:`network_bounds` gives None)
and extraction falls back to its sampling rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from occnet.runtime.contract import INPUT_NAME, OUTPUT_NAME
from occnet.runtime.graph import Graph, Node, UnreadableGraph, read_graph

FLOAT32_MARGIN = 1e-4
"""Relative widening of a bound for onnxruntime's float32 rounding (of the largest magnitude the bound spans,
plus as much absolute): float32 keeps 6e-8 relative per operation, and the export's verification measures
the models' float32 error against float64 at 1e-6 to 1e-5 of the logits' scale."""


class UnsupportedGraph(Exception):
    """A graph with an operator (or a use of one) the range analysis does not take."""


@dataclass
class Affine:
    """Values over a batch of boxes: ``centre (B, *shape)``, ``terms (B, 3, *shape)`` (the coefficients of the
    box's three unit variables, second so that a layer's matrix product takes them as they are) and ``error
    (B, *shape) >= 0``, all float64."""

    centre: np.ndarray
    terms: np.ndarray
    error: np.ndarray

    @property
    def radius(self) -> np.ndarray:
        """``(B, *shape)``: the farthest the values lie from ``centre`` anywhere in the box."""
        return np.abs(self.terms).sum(axis=1) + self.error


def network_bounds(model_bytes: bytes, constants: dict[str, np.ndarray] | None = None) -> NetworkBounds | None:
    """The bounds of the model in ``model_bytes`` (its ``points`` input varying over a box, the other inputs
    fixed to ``constants``, e.g. a conditional model's ``code``), or None where its graph holds what the range
    analysis does not take."""
    try:
        graph = read_graph(model_bytes)
    except (ValueError, UnreadableGraph):
        return None
    known = {**graph.initializers, **{k: np.asarray(v) for k, v in (constants or {}).items()}}
    if any(name not in known for name in graph.inputs if name != INPUT_NAME) or OUTPUT_NAME not in graph.outputs:
        return None
    probe = NetworkBounds(graph, known)
    try:
        probe(np.zeros((1, 3)), np.ones((1, 3)))
    except (UnsupportedGraph, ValueError, IndexError, KeyError):
        return None
    return probe


class NetworkBounds:
    """Lower and upper bounds of a model's logit over boxes (see the module)."""

    def __init__(self, graph: Graph, constants: dict[str, np.ndarray]) -> None:
        self.graph, self.constants = graph, constants

    def __call__(self, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bounds of the logit over the boxes ``[lower, upper]`` (``(B, 3)`` each, in the coordinates the graph
        reads, i.e. less the model's origin) -> ``(B,)`` float64 lower and upper bounds."""
        logit = self.form(lower, upper)
        return logit.centre - logit.radius, logit.centre + logit.radius

    def form(self, lower: np.ndarray, upper: np.ndarray) -> Affine:
        """The logit over the boxes ``[lower, upper]`` as an affine form in each box's unit variables, its
        error widened by the float32 margin: it bounds the logit on every sub-box too, at no further cost."""
        lower, upper = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
        centre, half = (lower + upper) / 2, (upper - lower) / 2
        # the points are rounded to float32 before the graph reads them
        points = Affine(centre, half[:, None, :] * np.eye(3), np.maximum(np.abs(lower), np.abs(upper)) * 2.0**-24)
        values: dict[str, np.ndarray | Affine] = {**self.constants, INPUT_NAME: points}
        scale = np.zeros(len(lower))
        for node in self.graph.nodes:
            inputs = [values[name] if name else None for name in node.inputs]
            if node.op == "Relu" and isinstance(inputs[0], Affine):
                # the magnitudes float32's rounding scales with: each layer's sums, as its activation meets them
                reach = np.abs(inputs[0].centre) + inputs[0].radius
                scale = np.maximum(scale, reach.reshape(len(lower), -1).max(axis=1))
            values[node.outputs[0]] = _apply(node, inputs)
        logit = values[OUTPUT_NAME]
        if not isinstance(logit, Affine) or logit.centre.shape != (len(lower),):
            raise UnsupportedGraph("the logits do not depend on the points as one value a point")
        scale = np.maximum(scale, np.abs(logit.centre) + logit.radius)
        return Affine(logit.centre, logit.terms, logit.error + FLOAT32_MARGIN * (1 + scale))


def _apply(node: Node, inputs: list) -> np.ndarray | Affine:
    """One node on constants (numpy) or affine forms."""
    op, attrs = node.op, node.attributes
    if not any(isinstance(x, Affine) for x in inputs):
        return _constant(node, inputs)
    if op in ("Add", "Sub"):
        a, b = inputs
        sign = 1.0 if op == "Add" else -1.0
        if isinstance(a, Affine) and isinstance(b, Affine):
            return Affine(a.centre + sign * b.centre, a.terms + sign * b.terms, a.error + b.error)
        if isinstance(a, Affine):
            return _widened(Affine(a.centre + sign * b, a.terms, a.error))
        return _widened(Affine(a - b.centre if op == "Sub" else a + b.centre, sign * b.terms, b.error))
    if op in ("Mul", "Div"):
        a, b = inputs
        if op == "Div":
            if isinstance(b, Affine):
                raise UnsupportedGraph("division by a value that varies over the box")
            b = 1.0 / np.asarray(b, np.float64)
        if isinstance(a, Affine) and isinstance(b, Affine):
            return Affine(a.centre * b.centre, a.terms * b.centre[:, None] + b.terms * a.centre[:, None],
                          np.abs(a.centre) * b.error + np.abs(b.centre) * a.error + a.radius * b.radius)
        form, factor = (a, np.asarray(b, np.float64)) if isinstance(a, Affine) else (b, np.asarray(a, np.float64))
        return _widened(Affine(form.centre * factor, form.terms * _for_terms(factor, form),
                               form.error * np.abs(factor)))
    if op in ("Gemm", "MatMul"):
        form, weight = inputs[0], inputs[1]
        if not isinstance(form, Affine) or isinstance(weight, Affine) or attrs.get("transA", 0):
            raise UnsupportedGraph(f"{op} of two varying values")
        weight = np.asarray(weight, np.float64)
        if op == "Gemm":
            weight = (weight.T if attrs.get("transB", 0) else weight) * attrs.get("alpha", 1.0)
        # one matrix product over the centre, the three terms and the error's rows (not B small ones)
        stacked = np.concatenate([form.centre[:, None], form.terms], axis=1)
        product = (stacked.reshape(-1, weight.shape[0]) @ weight).reshape(*stacked.shape[:-1], weight.shape[1])
        error = (form.error.reshape(-1, weight.shape[0]) @ np.abs(weight)).reshape(*form.error.shape[:-1],
                                                                                    weight.shape[1])
        out = Affine(product[:, 0], product[:, 1:], error)
        if op == "Gemm" and len(inputs) > 2 and inputs[2] is not None:
            out.centre = out.centre + attrs.get("beta", 1.0) * np.asarray(inputs[2], np.float64)
        return out
    if op == "Relu":
        form = inputs[0]
        radius = form.radius
        low, high = form.centre - radius, form.centre + radius
        slope = np.where(low >= 0, 1.0, np.where(high <= 0, 0.0, high / np.where(high > low, high - low, 1.0)))
        shift = np.where((low < 0) & (high > 0), -slope * low / 2, 0.0)
        return Affine(slope * form.centre + shift, form.terms * slope[:, None], slope * form.error + shift)
    if op in ("Sin", "Cos"):
        form = inputs[0]
        radius = form.radius
        value = np.sin(form.centre) if op == "Sin" else np.cos(form.centre)
        slope = np.cos(form.centre) if op == "Sin" else -np.sin(form.centre)
        error = np.abs(slope) * form.error + radius**2 / 2
        wide = np.abs(slope) * radius + radius**2 / 2 >= 1      # the tangent is looser than [-1, 1]
        return Affine(np.where(wide, 0.0, value), np.where(wide[:, None], 0.0, form.terms * slope[:, None]),
                      np.where(wide, 1.0, error))
    if op == "Concat":
        axis = attrs["axis"]
        forms = [x if isinstance(x, Affine) else _as_affine(np.asarray(x, np.float64), inputs) for x in inputs]
        axis = axis % forms[0].centre.ndim
        if axis == 0:
            raise UnsupportedGraph("Concat along the points")
        return Affine(np.concatenate([f.centre for f in forms], axis), np.concatenate([f.terms for f in forms],
                                                                                     axis + 1),
                      np.concatenate([f.error for f in forms], axis))
    if op in ("Squeeze", "Unsqueeze"):
        form = inputs[0]
        axes = attrs.get("axes") if len(inputs) < 2 or inputs[1] is None else np.asarray(inputs[1]).tolist()
        rank = form.centre.ndim
        if op == "Squeeze":
            axes = tuple(a % rank for a in (axes if axes is not None else
                                            [i for i, s in enumerate(form.centre.shape) if s == 1]))
        else:
            axes = tuple(sorted(a % (rank + len(axes)) for a in axes))
        if 0 in axes:
            raise UnsupportedGraph(f"{op} of the points' axis")
        change = np.squeeze if op == "Squeeze" else np.expand_dims
        return Affine(change(form.centre, axes), change(form.terms, tuple(a + 1 for a in axes)),
                      change(form.error, axes))
    if op == "Gather":
        form, index = inputs
        axis = attrs.get("axis", 0) % form.centre.ndim
        if isinstance(index, Affine) or axis == 0:
            raise UnsupportedGraph("Gather of the points or by varying indices")
        index = np.asarray(index)
        return Affine(np.take(form.centre, index, axis), np.take(form.terms, index, axis + 1),
                      np.take(form.error, index, axis))
    if op == "Identity":
        return inputs[0]
    raise UnsupportedGraph(f"operator {op}")


def _as_affine(value: np.ndarray, inputs: list) -> Affine:
    """A constant as an affine form of the batch's shape (for ``Concat`` with varying inputs)."""
    batch = next(x for x in inputs if isinstance(x, Affine)).centre.shape[0]
    centre = np.broadcast_to(value, (batch, *value.shape[1:])).astype(np.float64)
    return Affine(centre, np.zeros((batch, 3, *centre.shape[1:])), np.zeros(centre.shape))


def _for_terms(factor: np.ndarray, form: Affine) -> np.ndarray:
    """A factor that broadcasts against ``form.centre``, made to broadcast against its terms (a factor with
    the points' axis gets the terms' axis after it)."""
    return factor[:, None] if factor.ndim == form.centre.ndim else factor


def _widened(form: Affine) -> Affine:
    """``form`` with terms and error broadcast to its centre's shape (an operation with a wider constant)."""
    shape = form.centre.shape
    return Affine(form.centre, np.broadcast_to(form.terms, (shape[0], 3, *shape[1:])),
                  np.broadcast_to(form.error, shape))


def _constant(node: Node, inputs: list) -> np.ndarray:
    """A node whose inputs are all fixed, computed with numpy (the conditional decoder's code slices)."""
    op, attrs = node.op, node.attributes
    if op == "Constant":
        return np.asarray(attrs["value"])
    if op == "Gather":
        return np.take(inputs[0], np.asarray(inputs[1]), axis=attrs.get("axis", 0))
    binary = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}
    if op in binary:
        return binary[op](inputs[0], inputs[1])
    if op == "Identity":
        return inputs[0]
    if op in ("Squeeze", "Unsqueeze", "Reshape"):
        data = np.asarray(inputs[0])
        axes = attrs.get("axes") if len(inputs) < 2 or inputs[1] is None else np.asarray(inputs[1]).tolist()
        if op == "Reshape":
            return data.reshape(np.asarray(inputs[1]).tolist())
        if op == "Squeeze":
            return np.squeeze(data, tuple(axes) if axes is not None else None)
        return np.expand_dims(data, tuple(sorted(a % (data.ndim + len(axes)) for a in axes)))
    raise UnsupportedGraph(f"operator {op} on fixed values")
