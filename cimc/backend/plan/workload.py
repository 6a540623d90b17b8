"""The backend's abstract input: the work of one inference, in program order.

Why an abstract workload and not the quantized graph: tiling, mapping, streaming and the
lower bound only need matmul shapes, token counts, weight sizes and dependencies. Keeping
them on this small record lets the planner be tested on any shape (odd dims, BERT-base,
decode steps) without building a model, and the quantized-IR lowering only has to produce
one `Workload`.

Three kinds of work:
- `MatmulLayer`: static int8 weight [k x n] (reduction x outputs), `vectors` input rows.
- `DynamicMatmul`: `count` independent [vectors x k] @ [k x n] products whose right
  operand is computed at run time (attention QK^T and PV, one per head).
- `VectorWork`: element-wise / reduction work on the vector units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cimc.errors import CimcError


@dataclass(frozen=True)
class MatmulLayer:
    """A static-weight matmul y[vectors x n] = x[vectors x k] @ W[k x n], W int8 (or int4,
    `weight_bits` = 4: two weights a macro cell and a byte of the weight image)."""

    name: str
    k: int
    n: int
    vectors: int
    weight_bytes: int = 0
    depends_on: tuple[str, ...] = ()
    weight_bits: int = 8

    def __post_init__(self) -> None:
        _check_positive(self.name, k=self.k, n=self.n, vectors=self.vectors)
        if self.weight_bits not in (4, 8):
            raise CimcError(f"weight_bits must be 4 or 8, got {self.weight_bits}", self.name)
        packed = self.k * packed_cols(self.n, self.weight_bits)
        if self.weight_bytes == 0:
            object.__setattr__(self, "weight_bytes", packed)
        if self.weight_bytes != packed:
            raise CimcError(
                f"weight_bytes {self.weight_bytes} != {packed} (k rows of {self.n} "
                f"{self.weight_bits}-bit weights, packed in bytes); omit weight_bytes",
                f"workload item {self.name}",
            )


def packed_cols(n: int, bits: int) -> int:
    """Bytes (macro cells) of a row of n weights of `bits` bits: int4 pairs share one."""
    return n if bits == 8 else (n + 1) // 2


@dataclass(frozen=True)
class DynamicMatmul:
    """`count` products [vectors x k] @ [k x n] whose right operand is run-time data."""

    name: str
    k: int
    n: int
    vectors: int
    count: int = 1
    depends_on: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_positive(self.name, k=self.k, n=self.n, vectors=self.vectors, count=self.count)

    @property
    def operand_bytes(self) -> int:
        """int8 bytes written into macros if this is lowered onto macros."""
        return self.count * self.k * self.n

    @property
    def macs(self) -> int:
        return self.count * self.vectors * self.k * self.n


@dataclass(frozen=True)
class VectorWork:
    """`elements` outputs of `ops_per_element` vector-unit operations each."""

    name: str
    elements: int
    ops_per_element: int = 1
    depends_on: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_positive(self.name, elements=self.elements, ops_per_element=self.ops_per_element)


WorkItem = MatmulLayer | DynamicMatmul | VectorWork


@dataclass(frozen=True)
class Workload:
    """Work items in program order; dependencies point only to earlier items."""

    items: tuple[WorkItem, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, int] = {}
        for position, item in enumerate(self.items):
            where = f"workload item {item.name}"
            if item.name in index:
                raise CimcError("duplicate work item name", where)
            for dep in item.depends_on:
                if dep not in index:
                    raise CimcError(f"depends on '{dep}', which is not an earlier item", where)
            index[item.name] = position
        object.__setattr__(self, "_index", index)

    def position(self, name: str) -> int:
        return self._index[name]

    def item(self, name: str) -> WorkItem:
        return self.items[self._index[name]]

    @property
    def layers(self) -> tuple[MatmulLayer, ...]:
        """Static-weight layers in program order."""
        return tuple(item for item in self.items if isinstance(item, MatmulLayer))

    @property
    def weight_bytes(self) -> int:
        return sum(layer.weight_bytes for layer in self.layers)


def _check_positive(name: str, **dims: int) -> None:
    for dim, value in dims.items():
        if value <= 0:
            raise CimcError(f"{dim} must be positive, got {value}", f"workload item {name}")


@dataclass(frozen=True)
class TransformerDims:
    """Shape of a transformer stack, enough to derive its `Workload`."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    tokens: int
    kv_heads: int = 0  # 0: same as heads (no GQA)
    context: int = 0  # attended positions; 0: same as tokens (prefill / encoder)
    gated_mlp: bool = False  # LLaMA-style gate/up/down instead of fc1/fc2

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise CimcError("hidden must be a multiple of heads", "transformer dims")
        if self.kv_heads and self.heads % self.kv_heads:
            raise CimcError("heads must be a multiple of kv_heads", "transformer dims")


def transformer_workload(dims: TransformerDims) -> Workload:
    """The per-inference work of `dims.layers` pre/post-norm transformer blocks."""
    items: list[WorkItem] = []
    previous: tuple[str, ...] = ()
    for index in range(dims.layers):
        block = _block(dims, f"layer{index}", previous)
        items.extend(block)
        previous = (block[-1].name,)
    return Workload(tuple(items))


def _block(dims: TransformerDims, prefix: str, previous: tuple[str, ...]) -> list[WorkItem]:
    tokens, hidden = dims.tokens, dims.hidden
    head_dim = hidden // dims.heads
    kv_width = (dims.kv_heads or dims.heads) * head_dim
    context = dims.context or tokens
    p = prefix + "."
    items: list[WorkItem] = [
        MatmulLayer(p + "q", hidden, hidden, tokens, depends_on=previous),
        MatmulLayer(p + "k", hidden, kv_width, tokens, depends_on=previous),
        MatmulLayer(p + "v", hidden, kv_width, tokens, depends_on=previous),
        DynamicMatmul(p + "qk", head_dim, context, tokens, dims.heads, (p + "q", p + "k")),
        VectorWork(p + "softmax", dims.heads * tokens * context, 6, (p + "qk",)),
        DynamicMatmul(p + "pv", context, head_dim, tokens, dims.heads, (p + "softmax", p + "v")),
        MatmulLayer(p + "o", hidden, hidden, tokens, depends_on=(p + "pv",)),
        VectorWork(p + "norm1", tokens * hidden, 8, (p + "o",)),
    ]
    if dims.gated_mlp:
        items += [
            MatmulLayer(p + "gate", hidden, dims.intermediate, tokens, depends_on=(p + "norm1",)),
            MatmulLayer(p + "up", hidden, dims.intermediate, tokens, depends_on=(p + "norm1",)),
            VectorWork(p + "act", tokens * dims.intermediate, 2, (p + "gate", p + "up")),
        ]
    else:
        items += [
            MatmulLayer(p + "fc1", hidden, dims.intermediate, tokens, depends_on=(p + "norm1",)),
            VectorWork(p + "act", tokens * dims.intermediate, 1, (p + "fc1",)),
        ]
    down = p + ("down" if dims.gated_mlp else "fc2")
    items += [
        MatmulLayer(down, dims.intermediate, hidden, tokens, depends_on=(p + "act",)),
        VectorWork(p + "norm2", tokens * hidden, 8, (down,)),
    ]
    return items
