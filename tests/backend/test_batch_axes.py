"""The batch-axis rules (cimc/backend/plan/batch_axes.py) and the micro-batch graph
(cimc/backend/plan/micro_batch.py) on small hand-built graphs, and the micro graph checked
by execution: the integer golden of the full graph on a batch equals, value by value, the
golden of the micro graph on each micro-batch's slice, on quantized BERT / GPT-2 / LLaMA."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from cimc.backend.plan.batch_axes import batch_axes, batch_size
from cimc.backend.plan.micro_batch import MicroBatches, split_batch
from cimc.errors import CimcError
from cimc.ir import DType, Graph, TensorType
from cimc.ir import ops as O
from cimc.quant.calibrate import calibrate, calibration_data
from cimc.quant.dialect import QAttention, QMatMul
from cimc.quant.golden import run_golden
from cimc.quant.plans import plan_attention, plan_matmul
from cimc.quant.quantize import quantize_graph
from tests.differential.zoo_graphs import FAMILIES, quantized, zoo_feeds, zoo_graph

B, S, H = 4, 3, 8
MIX = ": micro-batches would not be independent"  # how a refusal of a mixing op goes on


def _quantized(g: Graph) -> Graph:
    return quantize_graph(g, calibrate(g, calibration_data(g, None, count=2, seed=0)))


def _float_graph(body: Callable[[Graph, str], str], shape: tuple[int, ...] = (B, S, H)) -> Graph:
    """x: f32 input of `shape` through a linear layer, then `body`; its value the output."""
    g = Graph("t")
    x = g.add_input("x", TensorType(shape, DType.F32))
    w = np.random.default_rng(0).normal(0, 0.3, (shape[-1], H)).astype(np.float32)
    lin = g.add_node(O.Linear(), [x, g.add_constant(w, "w")], "lin")
    g.set_outputs([("y", body(g, lin))])
    return g


def _int_graph(shape: tuple[int, ...] = (B, S, H)) -> tuple[Graph, str]:
    g = Graph("t")
    return g, g.add_input("x", TensorType(shape, DType.I8))


def _refused(g: Graph, node: str, message: str) -> None:
    """batch_axes refuses `g` at `node` in one line: 'pipeline at %node: ...'."""
    with pytest.raises(CimcError) as e:
        batch_axes(g, batch_size(g))
    text = str(e.value)
    assert "\n" not in text
    assert e.value.location is not None and e.value.location.startswith(f"pipeline at %{node}")
    assert message in e.value.message and "use --mapping spread" in e.value.message


# ---- batch axes that a pipeline accepts ------------------------------------------------


def test_batch_stays_leading_through_merging_reshapes_transposes_and_expands() -> None:
    def body(g: Graph, x: str) -> str:
        flat = g.add_node(O.Reshape((B * S, H)), [x], "flat")  # [B*S, H]: batch merged
        sm = g.add_node(O.Softmax(1), [flat], "sm")
        back = g.add_node(O.Reshape((B, S, H)), [sm], "back")
        tr = g.add_node(O.Transpose((0, 2, 1)), [back], "tr")  # [B, H, S]
        mm = g.add_node(O.MatMul(), [back, tr], "mm")  # [B, S, S]: batched, rows apart
        mean = g.add_node(O.ReduceMean((2,), keepdim=True), [mm], "mean")  # [B, S, 1]
        wide = g.add_node(O.Expand((B, S, 5)), [mean], "wide")
        four = g.add_node(O.Reshape((1, B, S, 5)), [wide], "four")  # batch on axis 1
        return g.add_node(O.Gather(0, 0), [four], "first")  # [B, S, 5]: axis 0 again

    q = _quantized(_float_graph(body))
    axes = batch_axes(q, batch_size(q))
    assert batch_size(q) == B
    assert [q.node(k).op.NAME for k in ("sm", "mm", "mean")] == [
        "q.softmax",
        "q.matmul",
        "q.reduce",
    ]
    assert [axes[k] for k in ("flat", "sm", "back", "tr", "mm", "mean", "wide")] == [0] * 7
    assert axes["four"] == 1 and axes["first"] == 0


def test_values_computed_from_constants_alone_carry_no_batch() -> None:
    g, x = _int_graph()
    c = g.add_constant(np.arange(S * H, dtype=np.int8).reshape(S, H), "c")
    c2 = g.add_node(O.Add(), [c, c], "c2")  # constants only: the same for every element
    g.set_outputs([g.add_node(O.Add(), [x, c2], "y")])
    axes = batch_axes(g, B)
    assert axes["c"] is None and axes["c2"] is None and axes["y"] == 0


def test_reductions_slices_and_concats_off_the_batch_axis_keep_it() -> None:
    def body(g: Graph, x: str) -> str:
        s = g.add_node(O.Slice(1, 0, 2), [x], "s")  # [B, 2, H]
        cat = g.add_node(O.Concat(1), [s, x], "cat")  # [B, 5, H]
        last = g.add_node(O.Gather(1, -1), [cat], "last")  # [B, H]
        return g.add_node(O.ReduceMax((1,), keepdim=True), [last], "mx")  # [B, 1]

    q = _quantized(_float_graph(body))
    axes = batch_axes(q, B)
    assert [axes[k] for k in ("s", "cat", "last", "mx")] == [0, 0, 0, 0]


def test_a_value_whose_batch_is_its_only_axis_is_refused() -> None:
    """[B] is stored as one row of B entries: a micro-batch is no block of rows."""
    q = _quantized(_float_graph(lambda g, x: g.add_node(O.ReduceMax((1, 2)), [x], "mx")))
    _refused(q, "mx", "the batch is axis 0 of [4]: its micro-batches are not whole rows")


def test_integer_cumsum_and_slices_along_other_axes_keep_the_batch() -> None:
    g, x = _int_graph()
    wide = g.add_node(O.Cast(DType.I32), [x], "wide")
    cs = g.add_node(O.CumSum(1), [wide], "cs")
    g.set_outputs([g.add_node(O.Slice(2, 1, 7, 2), [cs], "sl")])
    assert batch_axes(g, B) == {"x": 0, "wide": 0, "cs": 0, "sl": 0}


# ---- refusals: one line, naming the node -----------------------------------------------


@pytest.mark.parametrize(
    ("make", "node", "message"),
    [
        (
            lambda g, x: g.add_node(O.Slice(0, 0, 2), [x], "cut"),
            "cut",
            "slice slices, gathers or sums along the batch" + MIX,
        ),
        (
            lambda g, x: g.add_node(O.Gather(0, 1), [x], "pick"),
            "pick",
            "gather slices, gathers or sums along the batch" + MIX,
        ),
        (
            lambda g, x: g.add_node(O.CumSum(0), [x], "run"),
            "run",
            "cumsum slices, gathers or sums along the batch" + MIX,
        ),
        (
            lambda g, x: g.add_node(O.Concat(0), [x, x], "cat"),
            "cat",
            "concat slices, gathers or sums along the batch" + MIX,
        ),
        (
            lambda g, x: g.add_node(
                O.Concat(2), [x, g.add_constant(np.zeros((B, S, 2), np.int8))], "mix"
            ),
            "mix",
            "concat concatenates batch and non-batch operands" + MIX,
        ),
        (
            lambda g, x: g.add_node(O.Reshape((2, B // 2 * S, H)), [x], "split"),
            "split",
            "splits the batch axis",
        ),
        (
            lambda g, x: g.add_node(O.Transpose((1, 0, 2)), [x], "swap"),
            "swap",
            "the batch is axis 1 of [3, 4, 8]",
        ),
        (
            lambda g, x: g.add_node(O.Transpose((1, 2, 0)), [x], "last"),
            "last",
            "the batch is axis 2 of [3, 8, 4]",
        ),
        (lambda g, x: g.add_node(O.Neg(), [x], "neg"), "neg", "no batch rule for neg"),
        (
            lambda g, x: g.add_node(
                O.Add(), [x, g.add_constant(np.ones((B, S, H), np.int8))], "per"
            ),
            "per",
            "an operand without the batch has 4 entries along it",
        ),
    ],
    ids=[
        "slice",
        "gather",
        "cumsum",
        "concat",
        "concat-const",
        "reshape",
        "transpose",
        "batch-last",
        "unknown-op",
        "per-batch-constant",
    ],  # fmt: skip
)
def test_ops_that_mix_or_scatter_batch_elements_are_refused(
    make: Callable[[Graph, str], str], node: str, message: str
) -> None:
    g, x = _int_graph()
    g.set_outputs([make(g, x)])
    _refused(g, node, message)


def test_a_reduction_over_the_batch_is_refused() -> None:
    q = _quantized(_float_graph(lambda g, x: g.add_node(O.ReduceSum((0,), True), [x], "total")))
    _refused(q, "total", "q.reduce reduces over the batch" + MIX)


def test_operands_with_the_batch_on_different_axes_are_refused() -> None:
    g = Graph("t")
    a = g.add_input("a", TensorType((B, 1, H), DType.I8))
    b = g.add_input("b", TensorType((B, H), DType.I8))
    g.set_outputs([g.add_node(O.Add(), [a, b], "outer")])  # [B, B, H]: every pair
    _refused(
        g,
        "outer",
        "add aligns the batch of its operands on different axes" + MIX,
    )


def test_a_matmul_along_the_batch_is_refused() -> None:
    """ones [1, B] @ x [B, H]: the batch (x's rows) is the reduction axis K."""
    plan = plan_matmul(0.1, 0.1, 0.1, 8, B)
    g = Graph("t")
    x = g.add_input("x", TensorType((B, H), DType.I8))
    ones = g.add_constant(np.ones((1, B), np.int8), "ones")
    g.set_outputs([g.add_node(QMatMul(scale=0.1, bits=8, plan=plan), [ones, x], "mm")])
    _refused(
        g,
        "mm",
        "q.matmul multiplies along the batch (its right operand's reduction axis)" + MIX,
    )


def test_attention_over_the_batch_is_refused() -> None:
    """q, k, v of [1, 1, B, D]: the batch is the sequence axis attention mixes."""
    g, x = _int_graph((B, H))
    seq = g.add_node(O.Reshape((1, 1, B, H)), [x], "as_seq")
    plan = plan_attention(0.1, 0.1, 0.1, H**-0.5, 0.01, 8, H, 10.0)
    att = g.add_node(QAttention(scale=0.01, bits=8, plan=plan), [seq, seq, seq], "att")
    g.set_outputs([att])
    _refused(
        g,
        "att",
        "q.attention combines elements along the batch" + MIX,
    )


def test_batch_size_needs_inputs_that_agree() -> None:
    g = Graph("t")
    a = g.add_input("a", TensorType((4, 3), DType.I8))
    b = g.add_input("b", TensorType((2, 3), DType.I8))
    g.set_outputs([a, b])
    with pytest.raises(CimcError, match="graph inputs disagree .*\\(%a 4, %b 2\\)") as e:
        batch_size(g)
    assert e.value.location == "pipeline" and "\n" not in str(e.value)
    scalar = Graph("s")
    scalar.set_outputs([scalar.add_input("k", TensorType((), DType.I8))])
    with pytest.raises(CimcError, match="no input with a batch axis"):
        batch_size(scalar)


# ---- the micro graph ---------------------------------------------------------------------


def test_split_batch_refuses_batch_1_and_uneven_counts() -> None:
    g, x = _int_graph((1, S, H))
    g.set_outputs([x])
    with pytest.raises(CimcError, match="^pipeline: batch 1: nothing to pipeline") as e:
        split_batch(g)
    assert e.value.location == "pipeline" and "\n" not in str(e.value)
    g, x = _int_graph()
    g.set_outputs([g.add_node(O.Add(), [x, x], "y")])
    for count in (1, 3, 8):
        with pytest.raises(CimcError, match=f"{count} micro-batches do not split the batch of 4"):
            split_batch(g, count)
    assert split_batch(g).count == B  # default: one element per micro-batch


def test_micro_graph_keeps_names_and_order_and_divides_spelled_shapes() -> None:
    g, x = _int_graph()
    c = g.add_constant(np.arange(H, dtype=np.int8), "c")
    cc = g.add_node(O.Add(), [c, c], "cc")
    flat = g.add_node(O.Reshape((B * S, H)), [x], "flat")
    y = g.add_node(O.Add(), [flat, cc], "y")
    u = g.add_node(O.Reshape((B, 1, S * H)), [y], "u")
    e = g.add_node(O.Expand((B, 2, S * H)), [u], "e")
    g.set_outputs([("out", e)])
    m = split_batch(g, 2)
    assert [n.name for n in m.micro.nodes()] == [n.name for n in g.nodes()]
    assert m.micro.outputs == g.outputs and (m.batch, m.count) == (B, 2)
    shapes = {n.name: n.type.shape for n in m.micro.nodes()}
    assert shapes == {
        "x": (2, S, H), "c": (H,), "cc": (H,), "flat": (2 * S, H), "y": (2 * S, H),
        "u": (2, 1, S * H), "e": (2, 2, S * H),
    }  # fmt: skip
    assert m.micro.node("flat").op == O.Reshape((2 * S, H))
    assert m.micro.node("e").op == O.Expand((2, 2, S * H))
    assert m.carries("y") and not m.carries("cc")
    assert [m.row_range("y", k) for k in (0, 1)] == [(0, 2 * S), (2 * S, 4 * S)]
    assert m.row_range("e", 1) == (4, 8)  # [2*2 x S*H] rows per micro-batch
    assert g.node("flat").type.shape == (B * S, H)  # the full graph is left alone


def _slices(m: MicroBatches, values: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """Micro-batch k's part of every value: its block along the value's batch axis."""
    b = m.batch // m.count
    out = {}
    for name, value in values.items():
        axis = m.axes[name]
        out[name] = value if axis is None else np.take(value, range(k * b, (k + 1) * b), axis)
    return out


def _check_micro_runs(g: Graph, feeds: dict[str, np.ndarray], count: int) -> MicroBatches:
    """Golden of the micro graph on each slice == that slice of the full golden, for
    every value of the graph."""
    m = split_batch(g, count)
    full = run_golden(g, feeds, keep_all=True).values
    parts = [run_golden(m.micro, _slices(m, feeds, k), keep_all=True).values for k in range(count)]
    for name, value in full.items():
        axis = m.axes[name]
        if axis is None:
            assert all(np.array_equal(p[name], value) for p in parts), name
        else:
            joined = np.concatenate([p[name] for p in parts], axis)
            assert joined.shape == value.shape and np.array_equal(joined, value), name
    return m


def test_micro_graph_runs_like_the_full_graph_on_a_hand_built_graph() -> None:
    def body(g: Graph, x: str) -> str:
        flat = g.add_node(O.Reshape((B * S, H)), [x], "flat")
        sm = g.add_node(O.Softmax(1), [flat], "sm")
        back = g.add_node(O.Reshape((1, B, S, H)), [sm], "back")
        return g.add_node(O.Gather(0, 0), [back], "first")

    q = _quantized(_float_graph(body))
    feeds = {"x": np.random.default_rng(3).normal(0, 1, (B, S, H)).astype(np.float32)}
    m = _check_micro_runs(q, feeds, 2)
    assert m.axes["back"] == 1


def test_the_execution_check_can_fail() -> None:
    """A micro graph that shares a value across elements (a sum over the batch, were it
    allowed) would differ: the same check on such a graph finds it."""
    g, x = _int_graph()
    wide = g.add_node(O.Cast(DType.I32), [x], "wide")
    g.set_outputs([g.add_node(O.CumSum(1), [wide], "cs")])
    feeds = {"x": np.random.default_rng(0).integers(-9, 9, (B, S, H)).astype(np.int8)}
    m = split_batch(g, 2)
    full = run_golden(g, feeds, keep_all=True).values
    wrong = {"x": np.roll(feeds["x"], 1, axis=0)}  # a slice that is not micro-batch 0's
    part = run_golden(m.micro, _slices(m, wrong, 0), keep_all=True).values
    assert not np.array_equal(part["cs"], full["cs"][:2])


@pytest.mark.parametrize("family", FAMILIES)
def test_micro_graph_runs_like_the_full_graph_on_zoo_models(family: str) -> None:
    batch, seq = 4, 8
    q = quantized(zoo_graph(family, batch, seq))
    m = _check_micro_runs(q, zoo_feeds(batch, seq, seed=1), 2)
    assert m.count == 2 and m.axes["input_ids"] == 0
    assert any(n.op.NAME == "q.attention" for n in m.micro.nodes())
    assert sum(m.carries(n.name) for n in m.micro.nodes()) > len(m.micro.nodes()) // 2
