"""Lowering of the canonical ops that stay integer after quantize: position ids, mask logic.

These ops run on integer or bool values (never on codes with a scale), exactly as the
golden's torch kernels do: every step is an exact vector instruction on int64
intermediates, and a result that does not fit the value's dtype is a run-time error of the
final store (the golden refuses it too). Bools are i8 0/1 on the machine.

- add / sub / mul / max / min     one instruction, the second operand broadcast
- equal                           t = a - b; y = sel(t, 0, 1)
- greater (a > b) / less (a < b)  t = a - b (less: times -1); y = min(max(t, 0), 1)
- logical not / and / or          sel(a, 0, 1) / min(a, b) / max(a, b) on 0/1
- where                           sel(cond, a, b)
- cumsum over the last axis       log-step (Hillis-Steele) scan in two i64 buffers:
                                  after the step of width k, element j holds the sum of
                                  x[j-2k+1 .. j]; ceil(log2 n) steps of an `add` over
                                  columns k.. and a `mov` of columns ..k
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cimc.backend.builder.alloc import cols
from cimc.backend.builder.asm import ProgramBuilder, Scratch
from cimc.backend.lower.elementwise import rowwise
from cimc.backend.lower.emitter import Emitter
from cimc.errors import CimcError
from cimc.ir.graph import Node
from cimc.ir.op_base import Op
from cimc.ir.ops import (
    Add,
    CumSum,
    Equal,
    Greater,
    Less,
    LogicalAnd,
    LogicalNot,
    LogicalOr,
    Maximum,
    Minimum,
    Mul,
    Sub,
    Where,
)
from cimc.machine.program import DTYPE_BYTES, View

MNEMONICS: dict[type[Op], str] = {
    Add: "add",
    Sub: "sub",
    Mul: "mul",
    Maximum: "max",
    Minimum: "min",
    LogicalAnd: "min",  # on 0/1
    LogicalOr: "max",
}


def _integer(node: Node, em: Emitter) -> None:
    """These lowerings take integer / bool values only (codes go through q-ops)."""
    for name in (*node.inputs, node.name):
        if em.graph.node(name).type.dtype.is_float:
            raise CimcError(
                f"{node.op.NAME} on float values has no lowering: quantize the graph first",
                node.where,
            )


def _operands(em: Emitter, node: Node, full: int) -> list[View]:
    """Operand views against the result's shape: the first `full` materialized to it,
    the rest as 2-D broadcasts (1xC, Rx1, 1x1 or RxC)."""
    shape = node.type.shape
    views = []
    for k in range(len(node.inputs)):
        if k < full and em.shape(node, k) != shape:
            views.append(em.expanded(node, k, shape))
        elif k < full:
            views.append(em.operand(node, k))
        else:
            views.append(em.broadcast(node, k, shape))
    return views


def lower_binary(em: Emitter, node: Node, op: Op) -> None:
    _integer(node, em)
    mnemonic = MNEMONICS[type(op)]
    b = em.b

    def body(sc: Scratch, ins: list[View], out: View) -> None:
        b.emit(sc.core, mnemonic, out, ins[0], ins[1])

    rowwise(b, _operands(em, node, 1), em.result(node), body, 0)


def lower_compare(em: Emitter, node: Node, op: Op) -> None:
    _integer(node, em)
    b = em.b

    def body(sc: Scratch, ins: list[View], out: View) -> None:
        t = sc("i64", out.rows, out.cols)
        if isinstance(op, Equal):
            b.emit(sc.core, "sub", t, ins[0], ins[1])
            b.emit(sc.core, "sel", out, t, 0, 1)
            return
        b.emit(sc.core, "sub", t, ins[0], ins[1])
        if isinstance(op, Less):  # a < b: b - a > 0
            b.emit(sc.core, "mul", t, t, -1)
        b.emit(sc.core, "max", t, t, 0)
        b.emit(sc.core, "min", out, t, 1)

    width = node.type.shape[-1] if node.type.shape else 1
    rowwise(b, _operands(em, node, 1), em.result(node), body, DTYPE_BYTES["i64"] * width)


def lower_not(em: Emitter, node: Node, op: LogicalNot) -> None:
    b = em.b

    def body(sc: Scratch, ins: list[View], out: View) -> None:
        b.emit(sc.core, "sel", out, ins[0], 0, 1)

    rowwise(b, _operands(em, node, 1), em.result(node), body, 0)


def lower_where(em: Emitter, node: Node, op: Where) -> None:
    _integer(node, em)
    b = em.b

    def body(sc: Scratch, ins: list[View], out: View) -> None:
        b.emit(sc.core, "sel", out, ins[0], ins[1], ins[2])

    rowwise(b, _operands(em, node, 1), em.result(node), body, 0)


def lower_cumsum(em: Emitter, node: Node, op: CumSum) -> None:
    _integer(node, em)
    shape = node.type.shape
    if op.axis != len(shape) - 1:
        raise CimcError(
            f"cumsum over axis {op.axis} of {list(shape)} has no lowering: only the last axis "
            "scans (transpose the axis last)",
            node.where,
        )
    n = shape[-1]
    b = em.b

    def body(sc: Scratch, ins: list[View], out: View) -> None:
        scan(b, sc, ins[0], out, op.exclusive, op.reverse)

    rowwise(b, [em.operand(node, 0)], em.result(node), body, 2 * DTYPE_BYTES["i64"] * n)


def scan(b: ProgramBuilder, sc: Scratch, x: View, out: View, exclusive: bool, rev: bool) -> None:
    """out = running sums of x's rows (log-step scan on i64, one range-checked store)."""
    n = x.cols
    cur, nxt = sc("i64", x.rows, n), sc("i64", x.rows, n)
    b.emit(sc.core, "mov", cur, x)
    k = 1
    while k < n:
        # forward: nxt[j] = cur[j] + cur[j-k] for j >= k, cur[j] below; reverse: mirrored
        head, tail = (cols(cur, 0, n - k), cols(cur, k, n))
        if rev:
            b.emit(sc.core, "add", cols(nxt, 0, n - k), head, tail)
            b.emit(sc.core, "mov", cols(nxt, n - k, n), cols(cur, n - k, n))
        else:
            b.emit(sc.core, "add", cols(nxt, k, n), tail, head)
            b.emit(sc.core, "mov", cols(nxt, 0, k), cols(cur, 0, k))
        cur, nxt = nxt, cur
        k *= 2
    if not exclusive:
        b.emit(sc.core, "mov", out, cur)
        return
    edge = n - 1 if rev else 0  # the first element of the scan holds 0
    b.emit(sc.core, "fill", cols(out, edge, edge + 1), 0)
    if n > 1:
        if rev:
            b.emit(sc.core, "mov", cols(out, 0, n - 1), cols(cur, 1, n))
        else:
            b.emit(sc.core, "mov", cols(out, 1, n), cols(cur, 0, n - 1))


LOWERINGS: dict[type[Op], Callable[[Emitter, Node, Any], None]] = {
    **dict.fromkeys(MNEMONICS, lower_binary),
    Equal: lower_compare,
    Less: lower_compare,
    Greater: lower_compare,
    LogicalNot: lower_not,
    Where: lower_where,
    CumSum: lower_cumsum,
}
