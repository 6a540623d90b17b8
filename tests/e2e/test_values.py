"""Placement of graph values (cimc/backend/builder/values.py): kinds, liveness reuse, gb -> dram."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from cimc.backend.builder.values import GB_SHARE, REUSE_LAG, decl_name, plan_values, rows_cols
from cimc.ir.graph import Graph
from cimc.ir.ops import Reshape, Transpose
from cimc.ir.types import DType, TensorType
from tests.e2e.e2e_helpers import arch


def _chain(shape: tuple[int, ...], length: int) -> Graph:
    """x -> t0 -> t1 -> ... (transposes back and forth), output the last."""
    g = Graph("chain")
    v = g.add_input("x", TensorType(shape, DType.I16), "float")
    for k in range(length):
        v = g.add_node(Transpose((1, 0)), [v], name=f"t{k}")
    g.set_outputs([("y", v)])
    return g


def test_kinds_and_liveness_reuse() -> None:
    g = _chain((8, 16), 6)
    plan = plan_values(g, arch("tiny"), lag=0)
    kinds = {n: plan.slots[n].kind for n in ("x", "t0", "t4", "t5")}
    assert kinds == {"x": "input", "t0": "pool", "t4": "pool", "t5": "output"}
    # at most two values are live at once: t(k) is read only by t(k+1)
    assert plan.pool_bytes == {"gb": 2 * 8 * 16 * 2}
    offsets = {plan.slots[f"t{k}"].offset for k in range(5)}
    assert offsets == {0, 256}
    for k in range(4):
        assert plan.slots[f"t{k}"].offset != plan.slots[f"t{k + 1}"].offset


def test_freed_slots_wait_reuse_lag_nodes_when_gb_has_room() -> None:
    g = _chain((8, 16), 12)
    plan = plan_values(g, arch("tiny"))
    offsets = [plan.slots[f"t{k}"].offset for k in range(11)]
    # t(k) is last read by t(k+1); its slot is free again REUSE_LAG nodes after that
    for k, off in enumerate(offsets):
        assert off not in offsets[k + 1 : k + 2 + REUSE_LAG]
    assert plan.pool_bytes == {"gb": (REUSE_LAG + 2) * 8 * 16 * 2}
    # when waiting would push a value out of gb, slots are reused at once instead
    tiny = arch("tiny")
    rows = int(tiny.memory.gb_bytes * GB_SHARE) // (2 * 64 * 3)
    tight = plan_values(_chain((rows, 64), 6), tiny)
    assert {tight.slots[f"t{k}"].space for k in range(5)} == {"gb"}
    assert tight == plan_values(_chain((rows, 64), 6), tiny, lag=0)


def test_reshape_is_a_free_alias_kept_alive_by_its_users() -> None:
    g = Graph("alias")
    x = g.add_input("x", TensorType((4, 6), DType.I8), "float")
    a = g.add_node(Transpose((1, 0)), [x], name="a")
    r = g.add_node(Reshape((2, 12)), [a], name="r")
    b = g.add_node(Transpose((1, 0)), [r], name="b")  # reads a through the alias
    c = g.add_node(Transpose((1, 0)), [b], name="c")
    g.set_outputs([("y", c)])
    plan = plan_values(g, arch("tiny"))
    assert plan.slots["r"].kind == "alias" and plan.slots["r"].root == "a"
    assert plan.last_use["a"] == [n.name for n in g.nodes()].index("b")
    assert plan.slots["a"].offset != plan.slots["b"].offset


def test_values_beyond_the_gb_share_go_to_dram() -> None:
    tiny = arch("tiny")
    rows = int(tiny.memory.gb_bytes * GB_SHARE) // (2 * 64) + 1  # one i16 value too big
    plan = plan_values(_chain((rows, 64), 3), tiny)
    assert {plan.slots[f"t{k}"].space for k in range(2)} == {"dram"}
    small = plan_values(_chain((8, 64), 3), tiny)
    assert {small.slots[f"t{k}"].space for k in range(2)} == {"gb"}


def test_rows_cols_and_names() -> None:
    assert rows_cols(()) == (1, 1)
    assert rows_cols((2, 3, 5)) == (6, 5)
    assert decl_name("/layer.0/attn/MatMul:0") == "_layer.0_attn_MatMul_0"
    assert decl_name("0abc") == "v_0abc"


def test_plan_is_deterministic() -> None:
    g = _chain((8, 16), 5)
    a, b = plan_values(g, arch("default")), plan_values(g, arch("default"))
    assert a == b
    assert replace(a, pool_bytes={}) != a
    assert np.all([a.slots[n].kind != "host" for n in a.slots])


def test_no_reuse_lag_when_the_weights_stream() -> None:
    """An MLP whose tiles outnumber tiny's macros streams its weights: slots are reused at
    once there (the lag measured slower with streaming)."""
    from cimc.quant.quantize import quantize_model
    from tests.e2e.e2e_helpers import float_input, import_module, mlp

    x = float_input((1, 8, 64))
    qgraph = quantize_model(import_module(mlp((64,) * 6), x)).graph
    tiny = arch("tiny")
    assert plan_values(qgraph, tiny) == plan_values(qgraph, tiny, lag=0)
    assert plan_values(qgraph, tiny) != plan_values(qgraph, tiny, lag=REUSE_LAG)
