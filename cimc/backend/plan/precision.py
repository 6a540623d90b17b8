"""The precision the macros compute at is the precision the cost model times.

A DIMC macro streams its inputs bit-serially: `macro.input_bits` cycles' worth of bits per
input vector (cimc/machine/cost.py). cimc's quantizer feeds the macros 8-bit activation
codes (the int8 operands of linear, matmul and attention), so a preset whose macros take
fewer input bits would be timed for data it does not compute: the compiler refuses it,
naming the first macro operation, rather than report the cost of other hardware. (The
interpreter enforces the same rule on every `mvm`, SPEC section 4.)
"""

from __future__ import annotations

from cimc.errors import CimcError
from cimc.ir.graph import Graph
from cimc.machine.arch import Arch
from cimc.quant.dialect import QLinear, QMatMul, RunTimeMacroOperands

MACRO_INPUT_BITS = 8  # the bits of the activation codes the quantizer gives the macros


def check_input_bits(graph: Graph, arch: Arch) -> None:
    """Refuse a preset whose macros take other than the graph's macro input bits."""
    if arch.macro.input_bits == MACRO_INPUT_BITS:
        return
    for node in graph.nodes():
        if isinstance(node.op, QLinear | QMatMul | RunTimeMacroOperands):
            raise CimcError(
                f"{node.op.NAME} feeds the macros {MACRO_INPUT_BITS}-bit activation codes but "
                f"preset '{arch.name}' has macro.input_bits = {arch.macro.input_bits}: its "
                f"timing would not be of the data computed; use a preset with "
                f"macro.input_bits = {MACRO_INPUT_BITS}",
                node.where,
            )
