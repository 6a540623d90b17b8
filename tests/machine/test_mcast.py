"""NoC multicast `mcast {CORES}, S, TAG`: core-set syntax (parse, print, fast path, errors),
interpretation, validator rules (peers, matching, races via mcast -> recv), cost (XY tree)
and schedule placement."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace

import numpy as np
import pytest

from cimc.errors import CimcError
from cimc.machine.arch import load_arch
from cimc.machine.cost import instr_cost
from cimc.machine.fastparse import fast_tree
from cimc.machine.interpreter import run_program
from cimc.machine.parser import lark_tree, parse_program
from cimc.machine.printer import print_cores, print_program
from cimc.machine.program import CoreSet
from cimc.machine.schedule import simulate
from cimc.machine.validator import validate
from tests.machine.test_parser_fastpath import _same

DEFAULT, LARGE = load_arch("default"), load_arch("large")  # 2x2 mesh, 8x8 mesh
MSG = "sp[0x0]:i32[2x4]"


def _one(line: str, arch: str = "large") -> str:
    return f".arch {arch}\n.core 0\n  {line}\n  halt\n"


def _parse_error(line: str) -> str:
    with pytest.raises(CimcError) as info:
        parse_program(_one(line), "t.cimasm")
    return str(info.value)


# --- syntax ------------------------------------------------------------------------------


def test_core_set_parses_and_prints_canonically() -> None:
    sets_text = ("{1,3-5,7}", "{4,5}", "{0-2,6,7,9,10,11}")
    text = _one("\n  ".join(f"mcast {c}, {MSG}, {t}" for t, c in enumerate(sets_text)))
    program = parse_program(text)
    sets = [i.operands[0] for i in program.cores[0].instrs[:3]]
    assert sets == [CoreSet((1, 3, 4, 5, 7)), CoreSet((4, 5)), CoreSet((0, 1, 2, 6, 7, 9, 10, 11))]
    assert [print_cores(s.cores) for s in sets] == ["{1,3-5,7}", "{4,5}", "{0-2,6,7,9-11}"]
    printed = print_program(program)
    assert "mcast    {4,5}, sp[0x0]:i32[2x4], 1" in printed
    assert parse_program(printed) == program
    assert print_program(parse_program(printed)) == printed


@pytest.mark.parametrize(
    "line",
    [
        f"mcast {{ 1 , 3-5 ,7 }}, {MSG}, 0",
        f"mcast\t{{\t2-3\t}}\t,{MSG},0 ; c",
        f"mcast {{0}}, {MSG}, 0",
        f"mcast {{3,1}}, {MSG}, 0",  # syntactically fine; the builder rejects the order
    ],
)
def test_fast_path_and_lark_agree_on_core_sets(line: str) -> None:
    text = _one(line)
    fast = fast_tree(text)
    assert fast is not None
    _same(fast, lark_tree(text))


@pytest.mark.parametrize(
    ("operand", "want"),
    [
        ("{3,1}", "t.cimasm:3:12: core 1 does not follow core 3"),
        ("{2,2}", "t.cimasm:3:12: core 2 does not follow core 2"),
        ("{1,1-3}", "t.cimasm:3:12: core 1 does not follow core 1"),
        ("{5-3}", "t.cimasm:3:10: empty core range 5-3; write it as 3-5"),
        ("{1024}", "t.cimasm:3:10: core 1024 is out of range; core ids are below 1024"),
        ("{1,2-2000}", "t.cimasm:3:12: core 2000 is out of range"),
        ("{}", "t.cimasm:3:10: syntax error: unexpected '}'"),
        ("{ }", "t.cimasm:3:11: syntax error: unexpected '}'"),
        ("{0x1}", "t.cimasm:3:11: syntax error: unexpected 'x1'; expected ',' or '}'"),
    ],
)
def test_bad_core_sets_are_one_line_errors_at_the_place(operand: str, want: str) -> None:
    message = _parse_error(f"mcast {operand}, {MSG}, 0")
    assert message.startswith(want)
    assert "\n" not in message


def test_operand_kind_errors() -> None:
    assert _parse_error(f"send {{1}}, {MSG}, 0").startswith(
        "t.cimasm:3:8: 'send' operand 1 (core): must be an integer (core id), not a core set"
    )
    assert _parse_error(f"mcast 1, {MSG}, 0").startswith(
        "t.cimasm:3:9: 'mcast' operand 1 (cores): must be a core set {A,B-C}, not an integer"
    )
    assert "tag 70000 is out of range" in _parse_error(f"mcast {{1}}, {MSG}, 70000")


# --- interpreter and validator -------------------------------------------------------------

HEAD = ".arch default\n.input x dram[0x0] i32[2x4]\n{outs}.region buf gb[0x0] 1024\n"
OUTS = "".join(f".output y{c} dram[{0x100 * c:#x}] i32[2x4]\n" for c in (1, 2, 3))


def _program(*streams: str, outs: str = "") -> str:
    body = "".join(f".core {c}\n{s}  halt\n" for c, s in enumerate(streams))
    return HEAD.format(outs=outs) + body


def _validate(text: str) -> None:
    validate(parse_program(text, "m.cimasm"), DEFAULT)


def _invalid(text: str) -> str:
    with pytest.raises(CimcError) as info:
        _validate(text)
    return str(info.value)


SENDER = f"  dma {MSG}, dram[x]:i32[2x4]\n  mcast {{1-3}}, {MSG}, 5\n"


def _receiver(core: int) -> str:
    dst = f"sp[{0x40 * core:#x}]:i32[2x4]"  # a different address on each core
    return f"  recv 0, {dst}, 5\n  dma dram[y{core}]:i32[2x4], {dst}\n"


def test_mcast_delivers_one_copy_to_each_core() -> None:
    text = _program(SENDER, *(_receiver(c) for c in (1, 2, 3)), outs=OUTS)
    program = parse_program(text, "m.cimasm")
    validate(program, DEFAULT)
    x = np.arange(8, dtype=np.int32).reshape(2, 4) * -1000
    out = run_program(program, DEFAULT, {"x": x}, consts={})
    for c in (1, 2, 3):
        np.testing.assert_array_equal(out.outputs[f"y{c}"], x)
    assert out.stats.opcode_counts["mcast"] == 1 and out.stats.opcode_counts["recv"] == 3


def test_recv_mismatching_the_mcast_is_reported() -> None:
    bad = "  recv 0, sp[0x80]:i32[1x4], 5\n"
    message = _invalid(_program(SENDER, _receiver(1), bad, _receiver(3), outs=OUTS))
    assert message.startswith("m.cimasm:")
    assert "recv of i32[1x4] from core 0 tag 5 does not match the i32[2x4] sent at line" in message
    program = parse_program(_program(SENDER, _receiver(1), bad, _receiver(3), outs=OUTS))
    with pytest.raises(CimcError, match=r"matching mcast \(line \d+\) sent i32\[2x4\]"):
        run_program(program, DEFAULT, {"x": np.zeros((2, 4), np.int32)}, consts={})


def test_mcast_to_a_core_without_section_names_it() -> None:
    message = _invalid(_program(f"  mcast {{1,3}}, {MSG}, 5\n", f"  recv 0, {MSG}, 5\n"))
    assert "mcast names core 3, which has no '.core 3' section" in message


def test_unmatched_mcast_and_recv() -> None:
    missing = _program(SENDER, _receiver(1), "", _receiver(3), outs=OUTS)
    assert "mcast to core 2 tag 5 has no matching recv on core 2" in _invalid(missing)
    stray = _program("", f"  recv 0, {MSG}, 9\n")
    assert "recv from core 0 tag 9 has no matching send or mcast on core 0" in _invalid(stray)


def test_mcast_orders_gb_write_before_reads_after_recv() -> None:
    write = "  dma gb[buf]:i32[2x4], sp[0x0]:i32[2x4]\n"
    read = "  dma sp[0x100]:i32[2x4], gb[buf]:i32[2x4]\n"
    token = "sp[0x200]:i8[1x1]"
    mcast = f"  mcast {{1,2}}, {token}, 3\n"
    _validate(_program(write + mcast, f"  recv 0, {token}, 3\n", f"  recv 0, {token}, 3\n" + read))
    early = _program(write + mcast, f"  recv 0, {token}, 3\n", read + f"  recv 0, {token}, 3\n")
    assert "races with core 0's gb write" in _invalid(early)


@pytest.mark.parametrize(
    ("cores", "want"),
    [
        ((), "names no core"),
        ((2, 1), "ascending, each once"),
        ((1, 1), "ascending, each once"),
        ((1, 5000), "mcast names core 5000, which has no '.core 5000' section"),
    ],
)
def test_validator_rechecks_core_sets_built_in_python(cores: tuple[int, ...], want: str) -> None:
    program = parse_program(_program(f"  mcast {{1}}, {MSG}, 5\n", f"  recv 0, {MSG}, 5\n"))
    stream = program.cores[0]
    mcast = replace(stream.items[0], operands=(CoreSet(cores), *stream.items[0].operands[1:]))
    stream = replace(stream, items=(mcast, *stream.items[1:]))
    with pytest.raises(CimcError, match=want):
        validate(replace(program, cores=(stream, *program.cores[1:])), DEFAULT)


# --- cost and schedule ---------------------------------------------------------------------


def test_tree_links_by_hand_on_8x8_mesh() -> None:
    assert LARGE.tree_links(0, (3, 5)) == 5  # one row: the farthest column
    assert LARGE.tree_links(27, (11, 43)) == 4  # (3,3) to (3,1) and (3,5): down 2, up 2
    assert LARGE.tree_links(0, (9, 17, 2)) == 2 + 2  # row to x=2, column x=1 up to y=2
    assert LARGE.tree_links(63, (0, 7, 56)) == 7 + 7 + 7  # row 7 then columns 0 and 7
    assert LARGE.tree_links(5, (5,)) == 0


def test_tree_links_between_max_and_sum_of_hops() -> None:
    rng = random.Random(7)
    for _ in range(300):
        src = rng.randrange(64)
        dests = tuple(sorted(rng.sample(range(64), rng.randint(1, 12))))
        hops = [LARGE.hops(src, d) for d in dests]
        assert max(hops) <= LARGE.tree_links(src, dests) <= sum(hops)
    for a, b in itertools.combinations(range(64), 2):  # one destination: the XY route
        assert LARGE.tree_links(a, (b,)) == LARGE.hops(a, b)


@pytest.mark.parametrize(("arch", "cores"), [(DEFAULT, "{1-3}"), (LARGE, "{7,9,63}")])
def test_mcast_cost_formula(arch, cores: str) -> None:
    program = parse_program(_one(f"mcast {cores}, sp[0x0]:i32[16x16], 0", arch.name))
    instr = program.cores[0].instrs[0]
    dests = instr.operands[0].cores
    bits = 16 * 16 * 4 * 8
    cost = instr_cost(instr, 0, arch)
    far = max(arch.hops(0, d) for d in dests)
    chip = arch.chip
    assert cost.unit == "noc"
    assert cost.cycles == math.ceil(bits / chip.noc_bits_per_cycle) + far * chip.noc_hop_cycles
    links = arch.tree_links(0, dests)
    assert cost.energy.noc == pytest.approx(bits * links * arch.energy.noc_pj_per_bit_hop)
    assert links < sum(arch.hops(0, d) for d in dests)  # cheaper than separate sends


def test_schedule_recvs_follow_the_single_mcast() -> None:
    program = parse_program(_program(SENDER, *(_receiver(c) for c in (1, 2, 3)), outs=OUTS))
    schedule = simulate(program, DEFAULT)
    mcasts = [s for s in schedule.items if s.instr.opcode == "mcast"]
    assert len(mcasts) == 1 and mcasts[0].core == 0
    recvs = [s for s in schedule.items if s.instr.opcode == "recv"]
    assert sorted(s.core for s in recvs) == [1, 2, 3]
    for r in recvs:
        assert r.end >= mcasts[0].end + 1
    noc0 = [s for s in schedule.items if s.core == 0 and s.cost.unit == "noc"]
    assert noc0 == mcasts
