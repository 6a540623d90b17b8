"""The canonical graph IR.

The op contract: each op class (cimc/ir/ops_tensor.py, ops_math.py, ops_nn.py) declares its
attributes, arity, constant operands and type rule; its float semantics is its kernel in
cimc/reference/kernels.py; the importers' normal form is cimc/passes/check_canonical.py.

Build a graph with `Graph`; ops are frozen dataclasses from `cimc.ir.ops`::

    import numpy as np
    from cimc.ir import DType, Graph, TensorType
    from cimc.ir.ops import Attention, LayerNorm, Linear, Reshape, Softmax

    g = Graph("tiny")
    x = g.add_input("x", TensorType((1, 8, 16), DType.F32))          # meaning="float"
    ids = g.add_input("input_ids", TensorType((1, 8), DType.I64), meaning="token_ids")
    w = g.add_constant(np.zeros((16, 32), np.float32), name="fc.weight")  # stored [K, N]
    b = g.add_constant(np.zeros(32, np.float32), name="fc.bias")
    h = g.add_node(Linear(), [x, w, b], name="fc", loc="/layer0/fc/MatMul")
    s = g.add_node(Softmax(axis=-1), [h])      # axis normalized to 2; name defaults to "softmax"
    g.set_outputs([("probs", s)])              # (output name, node name) pairs, in order
    g.verify()

Rules worth knowing:
- `add_node` returns the node's actual name: a taken name gets a suffix (``fc_1``), a
  missing name defaults to the op name. `add_input` keeps its name (inputs are fed by it).
- The result type is inferred; bad operands raise `CimcError` located at the node
  (``%fc (/layer0/fc/MatMul): linear input f32[1, 8, 15] has K=15 but ...``).
- Ops are normalized on insertion: negative axes/perm entries/gather index made positive,
  reduce axes sorted, a single -1 in reshape resolved, slice bounds clamped.
- `linear` and `embedding` need constant weights/tables (operands created by add_constant).
- `graph.nodes()` is topological with ties in insertion order; `graph.node(name)` gives a
  `Node(name, op, inputs, type, loc)`; `users`, `replace_all_uses`, `replace_op`,
  `set_inputs`, `remove_node`, `dead_code_elimination`, `copy`, `verify` rewrite/check it.
- Text form: `cimc.ir.printer.print_graph(g)` / `cimc.ir.parser.parse_graph(text, constants)`;
  on disk FILE.ir + FILE.ir.safetensors (`cimc.ir.ir_file`), read by `cimc opt`.
"""

from cimc.ir.graph import Graph, Node
from cimc.ir.op_base import Op
from cimc.ir.types import DType, TensorType

__all__ = ["DType", "Graph", "Node", "Op", "TensorType"]
