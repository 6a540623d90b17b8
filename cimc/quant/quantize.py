"""Quantize a canonical float graph into the q-dialect (cimc.quant.dialect).

    data = calibration_data(graph, path_or_None)        # data.note says if inputs were generated
    calib = calibrate(graph, data)
    qgraph = quantize_graph(graph, calib, QuantOptions())

Every float value gets a width (cimc.quant.scales) and a per-tensor scale from its
calibrated range; every canonical op becomes a q-op whose plan (cimc.quant.plans) holds
all its integer constants. Graph inputs: integer ids stay as they are, bool masks become
int8 0/1 inputs (cast back to bool inside), float inputs get a host-side `q.quantize`.
Outputs are codes; `cimc.quant.golden.value_scales` gives the scale to dequantize them.
Linear inputs whose channels show outliers are smoothed first (cimc.quant.smooth): exact in
float, and it keeps pretrained models accurate in int8.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from cimc.errors import CimcError
from cimc.ir.graph import Graph, Node
from cimc.ir.op_base import Op
from cimc.ir.ops import Cast, Concat, Constant, Im2col, Input
from cimc.ir.types import DType, TensorType
from cimc.quant import constants as qc
from cimc.quant.calibrate import DEFAULT_SAMPLES, Calibration, calibrate, calibration_data
from cimc.quant.dialect import QConstant, QQuantize, QRequant
from cimc.quant.options import QuantOptions
from cimc.quant.quantize_rules import QValue, lower_node
from cimc.quant.scales import DATA_MOVEMENT, choose_bits, wide_reasons
from cimc.quant.smooth import smooth_graph


class Lowering:
    """State of one quantization: source graph, calibration, and the graph being built."""

    def __init__(self, graph: Graph, calib: Calibration, options: QuantOptions) -> None:
        graph.verify()
        self.src = graph
        self.calib = calib
        self.options = options
        self.bits = choose_bits(graph, options.precision)
        self.out = Graph(graph.name)
        self.env: dict[str, QValue] = {}
        self.reserved = {n.name for n in graph.nodes()}
        self._requants: dict[tuple[str, int, float], QValue] = {}

    def run(self) -> Graph:
        for node in self.src.nodes():
            if isinstance(node.op, Input):
                self.env[node.name] = self._input(node)
            elif isinstance(node.op, Constant):
                if not node.type.dtype.is_float:
                    const = self.out.add_constant(node.op.value, node.name, node.loc)
                    self.env[node.name] = QValue(const)
            elif isinstance(node.op, DATA_MOVEMENT):
                self.env[node.name] = self._data_movement(node)
            else:
                self.env[node.name] = lower_node(self, node)
        self.out.set_outputs([(out, self.value(name).name) for out, name in self.src.outputs])
        self.out.dead_code_elimination()
        self.out.verify()
        return self.out

    # ---- values -----------------------------------------------------------------------

    def value(self, name: str) -> QValue:
        """The quantized counterpart of source value `name` (constants materialize here)."""
        if name not in self.env:
            node = self.src.node(name)
            if not isinstance(node.op, Constant):
                raise CimcError(f"value %{name} was not lowered", node.where)
            bits = self.options.precision.bits_for(wide_reasons(self.src, name))
            self.env[name] = self._constant(node, bits)
        return self.env[name]

    def codes(self, name: str, bits: int | None = None, scale: float | None = None) -> QValue:
        """Operand `name` as codes, requantized to `bits` (and `scale`) when they differ."""
        v = self.value(name)
        if not v.is_codes:
            where = self.src.node(name).where
            raise CimcError(f"expected a float value, got {self.src.node(name).type}", where)
        assert v.bits is not None and v.scale is not None
        want_bits = v.bits if bits is None else bits
        if scale is None:
            scale = v.scale if want_bits == v.bits else self.scale_of(name, want_bits)
        if want_bits == v.bits and scale == v.scale:
            return v
        return self._requant(name, v, want_bits, scale)

    def scale_of(self, name: str, bits: int) -> float:
        """Per-tensor scale of a source value at a width, from its calibrated range."""
        if name not in self.calib.ranges:
            raise CimcError("value has no calibrated range", self.src.node(name).where)
        headroom = self.options.precision.headroom(bits)
        where = self.src.node(name).where
        return qc.activation_scale(self.calib.ranges[name] * headroom, bits, where)

    def out_bits(self, node: Node) -> int:
        return self.bits[node.name]

    def emit(self, node: Node, op: Op, operands: Sequence[str]) -> str:
        """Add the lowered op under the source node's name (kept: accuracy reports match by it)."""
        name = self.out.add_node(op, list(operands), name=node.name, loc=node.loc)
        assert name == node.name, f"lowered %{node.name} was renamed %{name}"
        return name

    def helper_name(self, base: str) -> str:
        """A name for an inserted node that no source node uses (they keep their names)."""
        name, k = base, 0
        while name in self.reserved or name in self.out:
            k += 1
            name = f"{base}_{k}"
        return name

    # ---- internals ----------------------------------------------------------------------

    def _input(self, node: Node) -> QValue:
        assert isinstance(node.op, Input)
        t, meaning = node.type, node.op.meaning
        if t.dtype is DType.BOOL:
            as_int8 = TensorType(t.shape, DType.I8)
            raw = self.out.add_input(node.name, as_int8, meaning, node.loc)
            return QValue(
                self.out.add_node(
                    Cast(DType.BOOL), [raw], self.helper_name(f"{node.name}_bool"), node.loc
                )
            )
        raw = self.out.add_input(node.name, t, meaning, node.loc)
        if not t.dtype.is_float:
            return QValue(raw)
        bits = self.bits[node.name]
        scale = self.scale_of(node.name, bits)
        op = QQuantize(scale=scale, bits=bits)
        return QValue(
            self.out.add_node(op, [raw], self.helper_name(f"{node.name}_q"), node.loc), scale, bits
        )

    def _constant(self, node: Node, bits: int) -> QValue:
        assert isinstance(node.op, Constant)
        value = node.op.value
        scale = qc.activation_scale(qc.abs_max(value), bits, node.where)
        codes = qc.quantize_tensor(value, scale, bits)
        op = QConstant(scale=scale, bits=bits, value=codes)
        return QValue(
            self.out.add_node(op, [], self.helper_name(f"{node.name}_q"), node.loc), scale, bits
        )

    def _requant(self, name: str, v: QValue, bits: int, scale: float) -> QValue:
        key = (name, bits, scale)
        if key not in self._requants:
            assert v.scale is not None
            where = self.src.node(name).where
            plan = qc.requant_per_tensor(v.scale / scale, bits, where)
            op = QRequant(scale=scale, bits=bits, plan=plan)
            new = self.out.add_node(
                op, [v.name], self.helper_name(f"{v.name}_i{bits}"), self.src.node(name).loc
            )
            self._requants[key] = QValue(new, scale, bits)
        return self._requants[key]

    def _data_movement(self, node: Node) -> QValue:
        if not node.type.dtype.is_float:
            operands = [self.value(i).name for i in node.inputs]
            return QValue(self.emit(node, node.op, operands))
        if isinstance(node.op, Concat) and len(node.inputs) > 1:
            bits = max(self.codes(i).bits or 8 for i in node.inputs)
            scale = self.scale_of(node.name, bits)
            parts = [self.codes(i, bits, scale) for i in node.inputs]
            return QValue(self.emit(node, node.op, [p.name for p in parts]), scale, bits)
        v = self.codes(node.inputs[0])
        return QValue(self.emit(node, _on_codes(node.op, v), [v.name]), v.scale, v.bits)


def _on_codes(op: Op, v: QValue) -> Op:
    """A data-movement op applied to codes: an im2col padding with -inf (max pooling)
    pads with the lowest code of the operand's width instead (it never wins a max)."""
    if isinstance(op, Im2col) and op.pad_value != 0:
        assert v.bits is not None
        lowest = -(qc.qmax(v.bits) + 1) if op.pad_value < 0 else qc.qmax(v.bits)
        return replace(op, pad_value=float(lowest))
    return op


def quantize_graph(graph: Graph, calib: Calibration, options: QuantOptions | None = None) -> Graph:
    """The q-dialect graph of `graph` with scales from `calib` (the input is not changed)."""
    options = options or QuantOptions()
    if options.smooth_alphas:
        graph, calib = smooth_graph(
            graph, calib, options.smooth_alphas, options.smooth_threshold, options.smooth_sites
        )
    return Lowering(graph, calib, options).run()


@dataclass(frozen=True)
class QuantizeResult:
    """The quantized graph, its calibration, and the note a CLI should print."""

    graph: Graph
    calibration: Calibration

    @property
    def note(self) -> str:
        return self.calibration.note


def quantize_model(
    graph: Graph,
    calibration_file: str | None = None,
    *,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    method: str = "max",
    percentile: float = 99.99,
    options: QuantOptions | None = None,
) -> QuantizeResult:
    """Calibrate (on the file, or on generated inputs) and quantize in one call."""
    data = calibration_data(graph, calibration_file, samples, seed)
    calib = calibrate(graph, data, method, percentile)
    return QuantizeResult(quantize_graph(graph, calib, options), calib)
