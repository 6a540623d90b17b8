"""Which linear layers load only the weight rows of their non-zero inputs (`--sparsity`).

Why ("LLM in a flash", sparsity awareness): after a ReLU most FFN activations are exactly
zero, and a zero input code contributes nothing to `x @ W`, so the down-projection rows
of neurons whose code is 0 in every token of the run need not be loaded. Under `exact`
the program builds the list of non-zero input columns at run time (`nzidx`), gathers
only those rows of W (`gather.m`) packed densely into the layer's macro rows (`mload.m`)
and multiplies the packed inputs: the sum is the dense one term for term, so the program
is bit-identical to the dense one by construction, whatever the data.

A layer is made sparse when its input is produced by an exactly sparse activation: a
`q.lut` mapping code 0 and every negative code to 0 (ReLU, ReLU², clipped ReLUs after
quantization), directly or through a `q.mul` (gated FFNs: a zero gate zeroes the product)
and through `q.requant`s (REQ(0) = 0: outlier smoothing's per-channel rescale).
GELU and SiLU tables map negative codes to non-zero codes, so their layers are not exactly
sparse: `exact` refuses a graph where no layer qualifies. Layers held in the pinned bank
(resident across inferences) are left dense: they load nothing in steady state.

Where the rows live: the layer's weights leave the load-ordered weight image (the
prefetcher cannot know which rows a run needs) and become one neuron-major constant
`NAME.rows` ([K x N], row k = neuron k) in DRAM. Only layers whose tiles the memory plan
kept in DRAM are made sparse: a tile's gather reads rows of one column block scattered
over the whole constant, and flash charges every read a whole `flash_chunk_bytes` chunk
(isa/SPEC.md, cost model), so from flash the active rows of a tile cost more chunk time
than the layer's dense, contiguous stream. Layers in flash stay dense (`in_flash`), unless a
window is asked for (`--window K`, cimc/backend/plan/window.py): then their neuron-major
rows stay in flash and the rows of the active neurons are copied, whole and contiguous,
into a DRAM cache that keeps the neurons of the last K runs (`cached`).

Under `predict` the graph carries low-rank predictors (cimc/quant/predictor.py, pass
`predict-sparsity`): each masked up-projection (`q.linear.masked`) whose tiles are in DRAM
loads only the columns of the neurons its mask names (`predicted`,
cimc/backend/lower/predicted_linear.py); its down-projection, fed by the masked output
through an activation with f(0) = 0 (SiLU and GELU too), is sparse as under `exact`.
Masked layers in flash stay dense (then masked) unless a window is asked for: then their
neuron-major columns are cached in DRAM like the down-projections' rows; when an FFN's
up-projection (its only masked layer) and its down-projection are both cached, they are
bundled (`bundles`): neuron j's up column and down row are one contiguous record of one
flash constant, copied by one `dma.m` into one cache, which both layers gather from.
"""

from __future__ import annotations

from dataclasses import dataclass

from cimc.backend.plan.memory import MemoryPlan
from cimc.backend.plan.streaming import StreamPlan
from cimc.errors import CimcError
from cimc.ir.graph import Graph, Node
from cimc.quant.dialect import QLinear, QLut, QMaskedLinear, QMul, QRampLut, QRequant

MODES = ("none", "exact", "predict")


@dataclass(frozen=True)
class SparsityPlan:
    """The layers that load only their active rows (from DRAM)."""

    mode: str
    layers: tuple[str, ...] = ()  # graph node names of the sparse q.linear layers
    in_flash: tuple[str, ...] = ()  # sparse or masked, left dense: their rows are in flash
    window: int | None = None  # --window K: runs whose active neurons stay in the cache
    cached: tuple[str, ...] = ()  # sparse layers whose rows are in flash, cached in DRAM
    predicted: tuple[str, ...] = ()  # masked layers loading their predicted columns (DRAM)
    # (masked up-projection, its down-projection), both cached: one neuron-major record
    # per neuron, the up column then the down row, one cache (row-column bundling)
    bundles: tuple[tuple[str, str], ...] = ()

    def bundle_of(self, layer: str) -> tuple[str, str] | None:
        return next((pair for pair in self.bundles if layer in pair), None)

    def __contains__(self, layer: object) -> bool:
        return layer in self.layers

    @property
    def own_loads(self) -> tuple[str, ...]:
        """The layers that load their weights themselves (not from the weight image)."""
        return (*self.layers, *self.predicted)


def zero_preserving(op: QLut) -> bool:
    """Does the table map code 0 and every negative code to 0 (exactly sparse)?"""
    table = op.plan.table
    return bool((table[: 128 + 1] == 0).all())


def _source(graph: Graph, name: str) -> Node:
    """The producer of `name`, through requantizations (REQ(0) = 0, so they keep zeros:
    e.g. the per-channel requant that outlier smoothing puts after an activation)."""
    node = graph.node(name)
    while isinstance(node.op, QRequant):
        node = graph.node(node.inputs[0])
    return node


def _sparse_producer(graph: Graph, node: Node) -> bool:
    """Is the layer's input an exactly sparse activation (or a product with one)?"""
    src = _source(graph, node.inputs[0])
    if isinstance(src.op, QLut):
        return zero_preserving(src.op)
    if isinstance(src.op, QMul):
        return any(_sparse_producer_of(graph, name) for name in src.inputs)
    return False


def _sparse_producer_of(graph: Graph, name: str) -> bool:
    op = _source(graph, name).op
    return isinstance(op, QLut) and zero_preserving(op)


def _predicted_producer(graph: Graph, node: Node) -> bool:
    """Is the layer's input zero wherever a predictor's mask is (an activation with
    f(0) = 0 of a masked linear, or a product with one)?"""
    src = _source(graph, node.inputs[0])
    names = src.inputs if isinstance(src.op, QMul) else (src.name,)
    return any(_masked_activation(graph, n) for n in names)


def _masked_activation(graph: Graph, name: str) -> bool:
    node = _source(graph, name)
    if not isinstance(node.op, QLut | QRampLut) or int(node.op.plan.table[128]) != 0:
        return False
    return isinstance(_source(graph, node.inputs[0]).op, QMaskedLinear)


def _activation_fed(graph: Graph, node: Node) -> bool:
    """Is the layer fed by an activation table (an FFN's down-projection, sparse or not)?"""
    src = _source(graph, node.inputs[0])
    names = src.inputs if isinstance(src.op, QMul) else (src.name,)
    return any(isinstance(_source(graph, n).op, QLut) for n in names)


def plan_sparsity(
    graph: Graph, mode: str, stream: StreamPlan | None, memory: MemoryPlan | None
) -> SparsityPlan:
    """The sparse layers of `graph` under `mode` (see the module doc)."""
    if mode not in MODES:
        raise CimcError(f"unknown sparsity {mode!r}; use one of {', '.join(MODES)}", "sparsity")
    if mode == "none" or stream is None or memory is None:
        return SparsityPlan(mode)
    linears = [n for n in graph.nodes() if isinstance(n.op, QLinear)]
    pinned = {e.tile.layer for e in stream.image if stream.phases[e.phase].bank == -1}
    pinned = pinned if stream.streamed else set()
    if mode == "predict":
        return _predict_plan(graph, linears, pinned, memory)
    layers = [n.name for n in linears if _sparse_producer(graph, n) and n.name not in pinned]
    if not layers:
        fed = [n for n in linears if _activation_fed(graph, n)]
        what = f"%{fed[0].name}'s input activation" if fed else "no linear layer's input"
        raise CimcError(
            f"--sparsity exact needs an exactly sparse activation (ReLU-like: code 0 for "
            f"every negative input) before a streamed linear layer, and {what} is not one "
            "(SiLU and GELU are not exactly sparse); use --sparsity none, or predict "
            "(a predictor's approximation)",
            "sparsity",
        )
    in_flash = tuple(name for name in layers if not in_dram_only(memory, name))
    return SparsityPlan(mode, tuple(n for n in layers if n not in in_flash), in_flash)


def in_dram_only(memory: MemoryPlan, layer: str) -> bool:
    """Did the memory plan keep every tile of the layer in DRAM?"""
    return all(t.space == "dram" for t in memory.tiles if t.entry.tile.layer == layer)


def _predict_plan(
    graph: Graph, linears: list[Node], pinned: set[str], memory: MemoryPlan
) -> SparsityPlan:
    """Masked layers and the down-projections after them (see the module doc)."""
    masked = [n.name for n in linears if isinstance(n.op, QMaskedLinear)]
    if not masked:
        raise CimcError(
            "--sparsity predict needs the predict-sparsity pass after quantize (it adds "
            "the predictors); the default pipeline runs it",
            "sparsity",
        )
    down = [
        n.name
        for n in linears
        if type(n.op) is QLinear and n.name not in pinned and _predicted_producer(graph, n)
    ]
    int8 = {n.name for n in linears if isinstance(n.op, QLinear) and n.op.plan.weight_bits == 8}
    maskable = [n for n in masked if n not in pinned and n in int8]
    predicted = tuple(n for n in maskable if in_dram_only(memory, n))
    in_flash = tuple(n for n in (*down, *maskable) if not in_dram_only(memory, n))
    layers = tuple(n for n in down if n not in in_flash)
    return SparsityPlan("predict", layers, in_flash, predicted=predicted)


def masked_source(graph: Graph, layer: str) -> str | None:
    """The masked linear a down-projection's input comes from, through an activation with
    f(0) = 0 (and requantizations), when it is the only one (an ungated FFN)."""
    src = _source(graph, graph.node(layer).inputs[0])
    if not _masked_activation(graph, src.name):
        return None
    return _source(graph, src.inputs[0]).name
