"""The constants file: read back as views of the mapped file, and flash constants read in
place by the interpreter (cimc/machine/mapped_consts.py, consts_file.py, flash.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from cimc.errors import CimcError
from cimc.ir.mapped import mapping_of
from cimc.machine.arch import load_arch
from cimc.machine.consts_file import load_consts
from cimc.machine.flash import FlashConsts
from cimc.machine.interpreter import run_program
from cimc.machine.mapped_consts import MappedConsts
from cimc.machine.parser import parse_program
from cimc.machine.tensor_writer import save_tensors

rng = np.random.default_rng(5)


def _arrays() -> dict[str, np.ndarray]:
    """Every machine dtype, odd sizes (the header padding), an empty tensor, names that
    sort differently by dtype than by name, and a name JSON must escape."""
    return {
        "weights.img": rng.integers(-127, 128, (1, 1001), dtype=np.int8),
        "a.bias": rng.integers(-(2**31), 2**31, (1, 7), dtype=np.int32),
        "z.mult": rng.integers(-(2**62), 2**62, (3, 5), dtype=np.int64),
        "m.tab": rng.integers(-(2**15), 2**15, (2, 3), dtype=np.int16),
        "b.empty": np.zeros((0, 4), np.int8),
        'q"uote\\d\tümlaut': np.arange(3, dtype=np.int8).reshape(1, 3),
    }


def _write(arrays: dict[str, np.ndarray], path: Path) -> None:
    save_tensors(arrays, path, {})


def test_written_file_reads_back_in_safetensors(tmp_path: Path) -> None:
    arrays = _arrays()
    _write(arrays, tmp_path / "mine.safetensors")
    back = load_file(str(tmp_path / "mine.safetensors"))
    assert back.keys() == arrays.keys()
    assert all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in arrays.items())


def test_mapped_views_read_the_file_in_place(tmp_path: Path) -> None:
    arrays = _arrays()
    _write(arrays, tmp_path / "c.safetensors")
    mapped = MappedConsts(tmp_path / "c.safetensors")
    assert set(mapped.entries) == set(arrays)
    for name, want in arrays.items():
        got = mapped.array(name)
        assert got.dtype == want.dtype and np.array_equal(got, want)
        assert not got.flags.writeable
    assert mapping_of(mapped.array("weights.img")) is not None  # the file, not a copy


def test_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    save_file({"f": np.zeros((1, 3), np.float32)}, str(path))
    with pytest.raises(CimcError, match="holds 'f' as F32; constants are i8"):
        MappedConsts(path).array("f")
    path.write_bytes((10**6).to_bytes(8, "little") + b"{}")
    with pytest.raises(CimcError, match="header of 1000000 bytes, longer than the file"):
        MappedConsts(path)
    path.write_bytes(b"\x05")
    with pytest.raises(CimcError, match="shorter than a safetensors header"):
        MappedConsts(path)


PROGRAM = """.arch tiny
.consts  k.safetensors
.const   a       flash[0x40]     i32[1x4]
.const   b       flash[0x50]     i32[1x4]
.output  y       dram[0x0]       i32[1x4]
.output  z       dram[0x10]      i32[1x4]

.core 0
  dma      dram[y]:i32[1x4], flash[a]:i32[1x4]
  dma      dram[z]:i32[1x4], flash[{span}]:i32[1x4]
  halt
"""


def _run(tmp_path: Path, span: str) -> dict[str, np.ndarray]:
    text = PROGRAM.format(span=span)
    path = tmp_path / "p.cimasm"
    path.write_text(text)
    _write({"a": A, "b": B}, tmp_path / "k.safetensors")
    program = parse_program(text, str(path))
    return run_program(program, load_arch("tiny"), {}, load_consts(program)).outputs


A, B = np.array([[1, -2, 3, -4]], np.int32), np.array([[5, 6, -7, 8]], np.int32)


def test_flash_constants_are_read_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Views inside one constant never fill the flat flash memory; a view spanning two
    (0x48: a's last 2 words, b's first 2) reads it, filled from both: the same bytes."""

    def no_copy(self: FlashConsts, flat: np.ndarray) -> None:
        raise AssertionError("flash constants were copied")

    with monkeypatch.context() as m:
        m.setattr(FlashConsts, "copy_into", no_copy)
        out = _run(tmp_path, "0x50")
    assert out["y"].tolist() == A.tolist() and out["z"].tolist() == B.tolist()
    out = _run(tmp_path, "0x48")
    assert out["y"].tolist() == A.tolist()
    assert out["z"].tolist() == [[3, -4, 5, 6]]


def test_flash_segments() -> None:
    flash = FlashConsts()
    flash.add(0x100, np.arange(8, dtype=np.int16))
    flash.add(0x0, np.arange(4, dtype=np.int8))
    raw, offset = flash.find(0x104, 0x110) or (None, 0)
    assert raw is not None and offset == 4 and raw.size == 16
    assert flash.find(0x2, 0x8) is None  # runs past the 4-byte segment
    assert flash.find(0x80, 0x90) is None  # no constant there
    flat = np.zeros(0x120, np.uint8)
    flash.copy_into(flat)
    assert flat[0x100:0x110].view(np.int16).tolist() == list(range(8))
    flash.add(0x10E, np.full(4, -1, np.int8))  # overlaps: only the flat memory is exact now
    assert flash.overlapping and flash.find(0x100, 0x102) is None
