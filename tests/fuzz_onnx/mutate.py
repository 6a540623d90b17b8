"""Mutations of small exported ONNX models: each returns the bytes of a damaged file.

    data = mutate(base_bytes, random.Random(seed))   # (mutation name, bytes)

Mutations work on the protobuf (wrong types, absurd shapes, cycles, missing initializers,
dangling inputs, wrong attribute types, unknown ops, opsets out of range...) or on the raw
bytes (truncation, bit flips). Several may be stacked.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import onnx
from onnx import TensorProto

Mutator = Callable[[onnx.ModelProto, random.Random], None]
HUGE = (10**12, 10**6, 2**40, 2**62, -5, 0, 7)
TYPES = [v for v in TensorProto.DataType.values() if v != TensorProto.UNDEFINED] + [0, 99]


def _node(model: onnx.ModelProto, rng: random.Random) -> onnx.NodeProto | None:
    nodes = model.graph.node
    return nodes[rng.randrange(len(nodes))] if nodes else None


def wrong_input_type(model: onnx.ModelProto, rng: random.Random) -> None:
    for vi in rng.sample(list(model.graph.input), k=min(1, len(model.graph.input))):
        vi.type.tensor_type.elem_type = rng.choice(TYPES)


def wrong_initializer_type(model: onnx.ModelProto, rng: random.Random) -> None:
    if model.graph.initializer:
        rng.choice(model.graph.initializer).data_type = rng.choice(TYPES)


def absurd_input_shape(model: onnx.ModelProto, rng: random.Random) -> None:
    if not model.graph.input:
        return
    dims = rng.choice(model.graph.input).type.tensor_type.shape.dim
    if dims:
        dim = dims[rng.randrange(len(dims))]
        dim.dim_value = rng.choice(HUGE)


def absurd_initializer_dims(model: onnx.ModelProto, rng: random.Random) -> None:
    if model.graph.initializer:
        tensor = rng.choice(model.graph.initializer)
        if tensor.dims:
            tensor.dims[rng.randrange(len(tensor.dims))] = rng.choice(HUGE)
        else:
            tensor.dims.append(rng.choice(HUGE))


def absurd_constant_shape(model: onnx.ModelProto, rng: random.Random) -> None:
    """A Reshape / Expand / ConstantOfShape target shape of ~10^12 elements."""
    shape = onnx.helper.make_tensor("absurd", TensorProto.INT64, [3], [10**4, 10**4, 10**4])
    node = onnx.helper.make_node("ConstantOfShape", ["absurd_shape"], ["absurd_out"])
    const = onnx.helper.make_node("Constant", [], ["absurd_shape"], value=shape)
    add = _node(model, rng)
    if add is None or not add.input:
        return
    model.graph.node.insert(0, node)
    model.graph.node.insert(0, const)
    add.input[rng.randrange(len(add.input))] = "absurd_out"


def cycle(model: onnx.ModelProto, rng: random.Random) -> None:
    """Feed an early node from a later node's output."""
    nodes = model.graph.node
    if len(nodes) < 2:
        return
    i, j = sorted(rng.sample(range(len(nodes)), 2))
    if nodes[i].input and nodes[j].output:
        nodes[i].input[rng.randrange(len(nodes[i].input))] = nodes[j].output[0]


def self_loop(model: onnx.ModelProto, rng: random.Random) -> None:
    node = _node(model, rng)
    if node is not None and node.input and node.output:
        node.input[0] = node.output[0]


def missing_initializer(model: onnx.ModelProto, rng: random.Random) -> None:
    if model.graph.initializer:
        del model.graph.initializer[rng.randrange(len(model.graph.initializer))]


def dangling_input(model: onnx.ModelProto, rng: random.Random) -> None:
    node = _node(model, rng)
    if node is not None and node.input:
        node.input[rng.randrange(len(node.input))] = f"nowhere_{rng.randrange(100)}"


def dangling_output(model: onnx.ModelProto, rng: random.Random) -> None:
    model.graph.output[0].name = "never_produced" if model.graph.output else ""


def drop_node(model: onnx.ModelProto, rng: random.Random) -> None:
    if model.graph.node:
        del model.graph.node[rng.randrange(len(model.graph.node))]


def shuffle_nodes(model: onnx.ModelProto, rng: random.Random) -> None:
    nodes = list(model.graph.node)
    rng.shuffle(nodes)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def wrong_attribute_type(model: onnx.ModelProto, rng: random.Random) -> None:
    nodes = [n for n in model.graph.node if n.attribute]
    if not nodes:
        return
    attr = rng.choice(rng.choice(nodes).attribute)
    value = rng.choice((1.5, "text", [1, 2, 3], [0.5], -(10**12), b"raw"))
    attr.CopyFrom(onnx.helper.make_attribute(attr.name, value))


def drop_attribute(model: onnx.ModelProto, rng: random.Random) -> None:
    nodes = [n for n in model.graph.node if n.attribute]
    if nodes:
        node = rng.choice(nodes)
        del node.attribute[rng.randrange(len(node.attribute))]


def absurd_attribute(model: onnx.ModelProto, rng: random.Random) -> None:
    """axis/perm/epsilon values out of range."""
    nodes = [n for n in model.graph.node if n.attribute]
    if not nodes:
        return
    attr = rng.choice(rng.choice(nodes).attribute)
    if attr.type == onnx.AttributeProto.INT:
        attr.i = rng.choice((-(10**9), 10**9, 2**62, -1, 99))
    elif attr.type == onnx.AttributeProto.INTS and attr.ints:
        attr.ints[rng.randrange(len(attr.ints))] = rng.choice((99, -99, 10**12))
    elif attr.type == onnx.AttributeProto.FLOAT:
        attr.f = rng.choice((float("nan"), float("inf"), -1.0, 0.0))


def unknown_op(model: onnx.ModelProto, rng: random.Random) -> None:
    node = _node(model, rng)
    if node is not None:
        node.op_type = rng.choice(("FooBar", "", "Conv", "LSTM", "matmul", "Loop"))


def wrong_domain(model: onnx.ModelProto, rng: random.Random) -> None:
    node = _node(model, rng)
    if node is not None:
        node.domain = rng.choice(("com.microsoft", "x.y", "ai.onnx.ml"))


def opset_out_of_range(model: onnx.ModelProto, rng: random.Random) -> None:
    version = rng.choice((-1, 0, 1, 7, 12, 22, 23, 10**6, 2**62))
    if model.opset_import:
        model.opset_import[0].version = version
    if rng.random() < 0.3:
        del model.opset_import[:]


def wrong_arity(model: onnx.ModelProto, rng: random.Random) -> None:
    node = _node(model, rng)
    if node is None:
        return
    if node.input and rng.random() < 0.5:
        del node.input[rng.randrange(len(node.input))]
    else:
        node.input.append(rng.choice([*node.input, ""]) if node.input else "")


def corrupt_raw_data(model: onnx.ModelProto, rng: random.Random) -> None:
    """raw_data shorter/longer than the dims say."""
    tensors = [t for t in model.graph.initializer if t.raw_data]
    if tensors:
        t = rng.choice(tensors)
        cut = rng.randrange(len(t.raw_data) + 1)
        t.raw_data = t.raw_data[:cut] + (b"\x00" * rng.choice((0, 3, 8)))


def nan_weights(model: onnx.ModelProto, rng: random.Random) -> None:
    tensors = [t for t in model.graph.initializer if t.data_type == TensorProto.FLOAT]
    if tensors and tensors[0].raw_data:
        t = rng.choice(tensors)
        t.raw_data = b"\x00\x00\xc0\x7f" * (len(t.raw_data) // 4)


def duplicate_output_name(model: onnx.ModelProto, rng: random.Random) -> None:
    if len(model.graph.node) >= 2 and model.graph.node[0].output:
        rng.choice(model.graph.node[1:]).output[0] = model.graph.node[0].output[0]


def rename_input(model: onnx.ModelProto, rng: random.Random) -> None:
    if model.graph.input:
        model.graph.input[0].name = rng.choice(("", "x y", "../../etc", "é"))


def drop_input_shape(model: onnx.ModelProto, rng: random.Random) -> None:
    if model.graph.input:
        model.graph.input[0].type.tensor_type.ClearField("shape")


def symbolic_dims(model: onnx.ModelProto, rng: random.Random) -> None:
    for vi in model.graph.input:
        for dim in vi.type.tensor_type.shape.dim:
            if rng.random() < 0.5:
                dim.dim_param = rng.choice(("batch", "seq", "N"))


PROTO_MUTATORS: dict[str, Mutator] = {
    f.__name__: f
    for f in (
        wrong_input_type,
        wrong_initializer_type,
        absurd_input_shape,
        absurd_initializer_dims,
        absurd_constant_shape,
        cycle,
        self_loop,
        missing_initializer,
        dangling_input,
        dangling_output,
        drop_node,
        shuffle_nodes,
        wrong_attribute_type,
        drop_attribute,
        absurd_attribute,
        unknown_op,
        wrong_domain,
        opset_out_of_range,
        wrong_arity,
        corrupt_raw_data,
        nan_weights,
        duplicate_output_name,
        rename_input,
        drop_input_shape,
        symbolic_dims,
    )
}


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))]


def flip_bytes(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def mutate(base: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One to three stacked proto mutations, or a byte-level one (1 in 5)."""
    if rng.random() < 0.2:
        fn = rng.choice((truncate, flip_bytes))
        return fn.__name__, fn(base, rng)
    model = onnx.ModelProto()
    model.ParseFromString(base)
    names = rng.sample(sorted(PROTO_MUTATORS), k=rng.choice((1, 1, 1, 2, 3)))
    for name in names:
        PROTO_MUTATORS[name](model, rng)
    return "+".join(names), model.SerializeToString()
