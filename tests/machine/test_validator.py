"""Validator semantics beyond the malformed corpus: what is accepted, ordering, races."""

from __future__ import annotations

import time

import pytest

from cimc.errors import CimcError
from cimc.machine.arch import load_arch
from cimc.machine.parser import parse_program
from cimc.machine.program import CoreStream, Imm, Instr, MacroRef, Program, View
from cimc.machine.validator import consts_path_problem, validate

HEAD = ".arch {arch}\n.input x dram[0x1000] i8[4x8]\n.region buf gb[0x0] 1024\n\n"


def _validate(body: str, arch: str = "tiny") -> None:
    program = parse_program(HEAD.format(arch=arch) + body, "t.cimasm")
    validate(program, load_arch(arch))


def _error(body: str, arch: str = "tiny") -> str:
    with pytest.raises(CimcError) as info:
        _validate(body, arch)
    return str(info.value)


def _cores(*streams: str) -> str:
    return "".join(f".core {i}\n{s}  halt\n" for i, s in enumerate(streams))


WRITE_X = "  dma dram[x]:i8[4x8], sp[0x0]:i8[4x8]\n"
READ_X = "  dma sp[0x0]:i8[4x8], dram[x]:i8[4x8]\n"


def test_arch_mismatch_names_both() -> None:
    program = parse_program(HEAD.format(arch="tiny") + _cores(""), "t.cimasm")
    with pytest.raises(CimcError, match="compiled for arch 'tiny', not 'default'"):
        validate(program, load_arch("default"))


def test_barrier_orders_shared_accesses() -> None:
    _validate(_cores(WRITE_X + "  barrier\n", "  barrier\n" + READ_X))
    assert "races with core 0's dram write" in _error(_cores(WRITE_X, READ_X))


def test_order_survives_later_epochs() -> None:
    _validate(_cores(WRITE_X + "  barrier\n  barrier\n", "  barrier\n  barrier\n" + READ_X))


def test_barrier_orders_only_across_it() -> None:
    # read before the barrier, write after it: ordered. Both after it: a race.
    _validate(_cores("  barrier\n" + WRITE_X, READ_X + "  barrier\n"))
    assert "race" in _error(_cores("  barrier\n" + WRITE_X, "  barrier\n" + READ_X))


def test_reads_by_many_cores_do_not_race() -> None:
    _validate(_cores(READ_X, READ_X))


def test_same_core_accesses_do_not_race() -> None:
    _validate(_cores(WRITE_X + READ_X + WRITE_X, ""))


def test_interleaved_strided_columns_do_not_race() -> None:
    left = "  dma dram[x]:i8[4x4/8], sp[0x0]:i8[4x4]\n"
    right = "  dma dram[x+0x4]:i8[4x4/8], sp[0x0]:i8[4x4]\n"
    _validate(_cores(left, right))
    overlap = "  dma dram[x+0x3]:i8[4x4/8], sp[0x0]:i8[4x4]\n"
    assert "dram write [0x1003, 0x101f)" in _error(_cores(left, overlap))


def test_send_recv_chain_orders_accesses_transitively() -> None:
    token = "sp[0x100]:i8[1x1]"
    chain = _cores(
        WRITE_X + f"  send 1, {token}, 0\n",
        f"  recv 0, {token}, 0\n  send 2, {token}, 0\n",
        f"  recv 1, {token}, 0\n" + READ_X,
        "",
    )
    _validate(chain, "default")
    broken = chain.replace(f"  recv 1, {token}, 0\n" + READ_X, READ_X + f"  recv 1, {token}, 0\n")
    assert "core 2: dram read" in _error(broken, "default")


def test_macro_load_from_gb_races_with_a_gb_write() -> None:
    writer = "  dma gb[buf]:i8[8x8], sp[0x0]:i8[8x8]\n"
    loader = "  mload m0, gb[buf]:i8[8x8]\n"
    assert "gb read [0x0, 0x40) races with core 0's gb write" in _error(_cores(writer, loader))
    _validate(_cores(writer + "  barrier\n", "  barrier\n" + loader))


def test_fifo_matching_pairs_in_order() -> None:
    a, b = "sp[0x0]:i8[1x4]", "sp[0x0]:i8[2x4]"
    _validate(
        _cores(f"  send 1, {a}, 7\n  send 1, {b}, 7\n", f"  recv 0, {a}, 7\n  recv 0, {b}, 7\n")
    )
    swapped = _cores(
        f"  send 1, {a}, 7\n  send 1, {b}, 7\n", f"  recv 0, {b}, 7\n  recv 0, {a}, 7\n"
    )
    assert "recv of i8[2x4] from core 0 tag 7 does not match the i8[1x4]" in _error(swapped)


def test_three_core_cycle_is_a_deadlock() -> None:
    v = "sp[0x0]:i8[1x1]"
    body = _cores(
        f"  recv 2, {v}, 0\n  send 1, {v}, 0\n",
        f"  recv 0, {v}, 0\n  send 2, {v}, 0\n",
        f"  recv 1, {v}, 0\n  send 0, {v}, 0\n",
        "",
    )
    message = _error(body, "default")
    assert "deadlock: core 0 waits" in message and "core 2 waits" in message


def test_send_is_buffered_so_crossed_sends_do_not_deadlock() -> None:
    v = "sp[0x0]:i8[1x1]"
    _validate(
        _cores(f"  send 1, {v}, 0\n  recv 1, {v}, 0\n", f"  send 0, {v}, 0\n  recv 0, {v}, 0\n")
    )


def test_unwritten_cells_are_tracked_per_window() -> None:
    load = "  mload m2[0:8,4:12], sp[0x100]:i8[8x8]\n"
    _validate(_cores(load + "  mvm sp[0x400]:i32[2x4], sp[0x0]:i8[2x4], m2[4:8,8:12]\n", ""))
    bad = load + "  mvm sp[0x400]:i32[2x4], sp[0x0]:i8[2x4], m2[4:8,10:14]\n"
    assert "reads m2 cell (4, 12)" in _error(_cores(bad, ""))


def test_python_built_programs_are_checked_against_the_table() -> None:
    arch = load_arch("tiny")
    flash_dst = Instr("dma", (View("flash", 0, "i8", 1, 1, 1), View("sp", 0, "i8", 1, 1, 1)))
    program = Program("tiny", None, (), (CoreStream(0, (flash_dst, Instr("halt", ()))),))
    with pytest.raises(CimcError, match="flash is read-only"):
        validate(program, arch)
    unsized = Instr("mload", (MacroRef(0, 0, 0, 0, 0, whole=True), View("sp", 0, "i8", 2, 2, 2)))
    program = Program("tiny", None, (), (CoreStream(0, (unsized, Instr("halt", ()))),))
    with pytest.raises(CimcError, match="was not sized"):
        validate(program, arch)
    bad_tag = Instr("send", (Imm(0), View("sp", 0, "i8", 1, 1, 1), Imm(-1)))
    program = Program("tiny", None, (), (CoreStream(0, (bad_tag, Instr("halt", ()))),))
    with pytest.raises(CimcError, match="tag -1 is out of range"):
        validate(program, arch)


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("w.safetensors", True),
        ("sub/dir/w.safetensors", True),
        ("a/../w.safetensors", True),
        ("./w.safetensors", True),
        ("../w.safetensors", False),
        ("a/../../w.safetensors", False),
        ("/abs/w.safetensors", False),
        ("C:\\w.safetensors", False),
        ("..\\w.safetensors", False),
        (".", False),
    ],
)
def test_consts_path_must_stay_inside(path: str, ok: bool) -> None:
    assert (consts_path_problem(path) is None) == ok


def test_large_program_validates_quickly() -> None:
    # 2 cores x 6k instructions, shared traffic in every epoch: the analysis must scale
    # (unordered pairs are searched per epoch, not over the whole program).
    epoch0 = "  dma dram[x]:i8[4x8], sp[0x0]:i8[4x8]\n  add sp[0x40]:i8[4x8], sp[0x0]:i8[4x8], 1\n"
    epoch1 = "  dma sp[0x0]:i8[4x8], dram[x]:i8[4x8]\n  add sp[0x40]:i8[4x8], sp[0x0]:i8[4x8], 1\n"
    a = (epoch0 + "  barrier\n" + "  barrier\n") * 1500
    b = ("  barrier\n" + epoch1 + "  barrier\n") * 1500
    program = parse_program(HEAD.format(arch="tiny") + _cores(a, b))
    start = time.perf_counter()
    validate(program, load_arch("tiny"))
    assert time.perf_counter() - start < 4.0


def test_constants_are_read_only_row_by_row() -> None:
    head = ".arch tiny\n.const w dram[0x100] i8[4x8]\n\n"
    gap = "  dma dram[0xfc]:i8[2x4/36], sp[0x0]:i8[2x4]\n"  # rows at 0xfc and 0x120: around w
    validate(parse_program(head + _cores(gap)), load_arch("tiny"))
    into = "  dma dram[0xfc]:i8[2x4/35], sp[0x0]:i8[2x4]\n"  # second row ends inside w
    with pytest.raises(CimcError, match="writes constant 'w'"):
        validate(parse_program(head + _cores(into)), load_arch("tiny"))
