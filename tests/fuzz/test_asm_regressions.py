"""Regressions found by the fuzzer and the bad-input corpus, one test per finding."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from cimc.errors import CimcError
from cimc.machine import semantics
from cimc.machine.arch import arch_from_dict, load_arch
from cimc.machine.consts_file import load_consts
from cimc.machine.interpreter import memory_extents, run_program
from cimc.machine.parser import parse_program
from cimc.machine.validator import validate
from cimc.resources import isa_dir


def _tiny(**memory: int) -> dict:
    data = tomllib.loads((isa_dir() / "arch" / "tiny.toml").read_text())
    data["memory"].update(memory)
    return data


def test_decimal_with_leading_zeros() -> None:
    # int(text, 0) refused "048": a crash; the grammar allows it, so it means 48.
    program = parse_program(".arch tiny\n.core 0\n  fill sp[0400]:i8[1x1], -010\n  halt\n")
    fill = program.instrs(0)[0]
    assert fill.operands[0].addr == 400 and fill.operands[1].value == -10  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("operand", "col"),
    [("sp[0x0]:i8[1x1], 9{n}", 25), ("sp[0x0]:i8[9{n}x1], 1", 19), ("sp[9{n}]:i8[1x1], 1", 11)],
)
def test_numbers_too_long_for_int_conversion(operand: str, col: int) -> None:
    # Python refuses int() of more than 4300 digits: a ValueError escaped the parser.
    line = "  fill " + operand.format(n="9" * 5000)
    with pytest.raises(CimcError, match=rf"^p:3:{col}: number 9+\.\.\. is too long"):
        parse_program(f".arch tiny\n.core 0\n{line}\n  halt\n", "p")


def test_huge_memories_are_refused_by_the_arch_loader() -> None:
    # A 1 TiB DRAM was accepted, then np.zeros(2^40) raised MemoryError in the interpreter.
    with pytest.raises(CimcError, match=r"'memory.dram_bytes': at most .* \(resource limit\)"):
        arch_from_dict(_tiny(dram_bytes=1 << 40))
    with pytest.raises(CimcError, match=r"'memory.dram_gbps': below 1e-06"):
        arch_from_dict(_tiny(dram_gbps=1e-320))  # bytes / bandwidth overflowed to inf


def test_interpreter_allocates_only_what_the_program_addresses() -> None:
    arch = arch_from_dict(_tiny(dram_bytes=256 << 30))  # far more than this host's RAM
    text = (
        ".arch tiny\n.input x dram[0x1000] i8[1x4]\n.output y dram[0x3000000000] i8[1x4]\n"
        ".core 0\n  dma sp[0x0]:i8[1x4], dram[x]:i8[1x4]\n  dma dram[y]:i8[1x4], sp[0x0]:i8[1x4]\n"
        "  halt\n"
    )
    program = parse_program(text, "p")
    validate(program, arch)
    with pytest.raises(CimcError, match=r"^p: the program addresses .* at most 4,294,967,296"):
        run_program(program, arch, {"x": np.arange(4, dtype=np.int8).reshape(1, 4)})
    small = parse_program(text.replace("0x3000000000", "0x30000000"), "p")
    x = np.arange(4, dtype=np.int8).reshape(1, 4)
    assert memory_extents(small) == {"dram": 0x30000004, "sp": 4}  # 768 MiB, lazily zero
    memory_extents(small)["sp"] = 0  # a copy: the program's cached extents stay as they are
    assert small.extents == {"dram": 0x30000004, "sp": 4}
    np.testing.assert_array_equal(run_program(small, arch, {"x": x}).outputs["y"], x)


def test_unreadable_constants_and_arch_files(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2, 2, dtype=torch.bfloat16)}, str(tmp_path / "c.safetensors"))
    text = ".arch tiny\n.consts c.safetensors\n.const w flash[0x0] i8[2x2]\n"
    program = parse_program(text, str(tmp_path / "p.cimasm"))
    with pytest.raises(
        CimcError, match=r"p.cimasm:3:1: constant 'w' has dtype bfloat16; the program declares i8"
    ):
        load_consts(program)  # once a TypeError escaped (numpy has no bfloat16 unless ml_dtypes)
    save_file({"w": torch.zeros(1 << 20, dtype=torch.int8)}, str(tmp_path / "c.safetensors"))
    with pytest.raises(CimcError, match=r"p.cimasm:3:1: constant 'w' has shape \(1048576,\)"):
        load_consts(program)  # refused from the header, before the tensor is read
    (tmp_path / "a.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(CimcError, match="not a UTF-8 TOML file"):
        load_arch(tmp_path / "a.toml")


def test_host_out_of_memory_is_a_located_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_memory(*operands: object) -> np.ndarray:  # any kernel signature
        raise MemoryError

    monkeypatch.setitem(semantics._BINARY, "add", no_memory)
    text = ".arch tiny\n.core 0\n  add sp[0x0]:i8[1x1], sp[0x0]:i8[1x1], 1\n  halt\n"
    with pytest.raises(CimcError, match=r"^p:3:3: core 0: add: the host ran out of memory"):
        run_program(parse_program(text, "p"), load_arch("tiny"), {})


def test_one_row_view_with_a_huge_stride_runs() -> None:
    # The row stride of a 1-row view is never used, but numpy refused strides >= 2^63 bytes:
    # "ValueError: Maximum allowed dimension exceeded" escaped the interpreter.
    text = (
        ".arch tiny\n.output y dram[0x0] i32[1x3]\n.core 0\n"
        "  fill sp[0x10]:i32[1x3], 7\n"
        "  sel sp[0x40]:i32[1x3], 1, sp[0x10]:i32[1x3/18446744073709551616], 0\n"
        "  dma dram[y]:i32[1x3], sp[0x40]:i32[1x3]\n  halt\n"
    )
    program = parse_program(text, "p")
    validate(program, load_arch("tiny"))
    y = run_program(program, load_arch("tiny"), {}).outputs["y"]
    np.testing.assert_array_equal(y, [[7, 7, 7]])


def test_constants_path_with_a_control_character(tmp_path: Path) -> None:
    # atheris: a NUL byte in the .consts path made pathlib raise "embedded null byte".
    text = ".arch tiny\n.consts soft\x01\x00max.safetensors\n.core 0\n  halt\n"
    program = parse_program(text, str(tmp_path / "p.cimasm"))
    with pytest.raises(CimcError, match=r"p.cimasm:2:9: .* contains a control character"):
        validate(program, load_arch("tiny"))
    with pytest.raises(CimcError, match=r"p.cimasm:2:9: .* contains a control character"):
        load_consts(program)
