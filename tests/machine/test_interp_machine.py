"""Interpreter semantics of macros, data movement, multi-core sync, and run-time errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from cimc.errors import CimcError
from cimc.machine.arch import load_arch
from cimc.machine.interpreter import run_program
from cimc.machine.parser import parse_program

RNG = np.random.default_rng(3)


def run(text: str, arch: str = "tiny", consts: dict | None = None, trace: bool = False, **inputs):
    program = parse_program(text, "p.cimasm")
    return run_program(program, load_arch(arch), inputs, consts=consts or {}, trace=trace)


MVM = """.arch {arch}
.input   x       dram[0x0]       i8[{n}x{r}]
.input   w       dram[0x10000]   i8[{r}x{c}]
.output  y       dram[0x20000]   i32[{n}x{c}]

.core 0
  dma      sp[0x0]:i8[{n}x{r}], dram[x]:i8[{n}x{r}]
  dma      sp[{wa}]:i8[{r}x{c}], dram[w]:i8[{r}x{c}]
  mload    m1, sp[{wa}]:i8[{r}x{c}]
  mvm      sp[{ya}]:i32[{n}x{c}], sp[0x0]:i8[{n}x{r}], m1
  {extra}
  dma      dram[y]:i32[{n}x{c}], sp[{ya}]:i32[{n}x{c}]
  halt
"""


def test_mvm_extremes_full_macro() -> None:
    """A 128-row macro full of -128 x -128 products: exact, the largest per-tile sum."""
    n, r, c = 64, 128, 128
    x = np.full((n, r), -128, np.int8)
    x[1] = 127
    w = RNG.choice(np.array([-128, 127], np.int8), (r, c))
    w[:, 0] = -128
    out = run(
        MVM.format(arch="default", n=n, r=r, c=c, extra="", wa="0x4000", ya="0x8000"),
        "default",
        x=x,
        w=w,
    )
    want = x.astype(np.int64) @ w.astype(np.int64)
    assert want[0, 0] == 128 * 128 * 128
    np.testing.assert_array_equal(out.outputs["y"], want)
    assert out.stats.macs == n * r * c


TINY = {"wa": "0x400", "ya": "0x800"}


def test_mvm_acc_and_int32_overflow() -> None:
    n, r, c = 4, 32, 32
    x = RNG.integers(-128, 128, (n, r), dtype=np.int8)
    w = RNG.integers(-128, 128, (r, c), dtype=np.int8)
    acc = f"mvm.acc  sp[0x800]:i32[{n}x{c}], sp[0x0]:i8[{n}x{r}], m1"
    out = run(MVM.format(arch="tiny", n=n, r=r, c=c, extra=acc, **TINY), x=x, w=w)
    np.testing.assert_array_equal(out.outputs["y"], 2 * (x.astype(np.int64) @ w.astype(np.int64)))
    # 2^31 / (32 * 128 * 128) = 4096 accumulations of the extreme product overflow int32.
    x[:] = -128
    w[:] = -128
    loop = "\n  ".join([acc] * 4096)
    with pytest.raises(CimcError, match=r"p.cimasm:4105:3: core 0: mvm.acc: result 2147483648"):
        run(MVM.format(arch="tiny", n=n, r=r, c=c, extra=loop, **TINY), x=x, w=w)


def test_mvm_window_and_transpose_load() -> None:
    text = """.arch tiny
.input   w       dram[0x0]       i8[8x16]
.input   x       dram[0x100]     i8[3x16]
.output  y       dram[0x200]     i32[3x8]

.core 0
  dma      sp[0x0]:i8[8x16], dram[w]:i8[8x16]
  dma      sp[0x100]:i8[3x16], dram[x]:i8[3x16]
  mload.t  m2[4:20,10:18], sp[0x0]:i8[8x16]
  mvm      sp[0x200]:i32[3x8], sp[0x100]:i8[3x16], m2[4:20,10:18]
  dma      dram[y]:i32[3x8], sp[0x200]:i32[3x8]
  halt
"""
    w = RNG.integers(-128, 128, (8, 16), dtype=np.int8)
    x = RNG.integers(-128, 128, (3, 16), dtype=np.int8)
    out = run(text, w=w, x=x)
    np.testing.assert_array_equal(out.outputs["y"], x.astype(np.int64) @ w.T.astype(np.int64))


@pytest.mark.parametrize(
    ("load", "window", "error"),
    [
        # a partial load: the first cell of the window it did not reach
        ("  fill     sp[0x0]:i8[4x8], 1\n  mload    m0, sp[0x0]:i8[4x8]\n", "m0[0:5,0:8]",
         r"p.cimasm:8:3: core 0: mvm: macro m0 cell \(4, 0\) is read before any mload"),
        # nothing loaded: the window's first cell
        ("", "m3[2:7,1:9]", r"p.cimasm:6:3: core 0: mvm: macro m3 cell \(2, 1\) is read before"),
    ],
)  # fmt: skip
def test_unwritten_macro_cells_are_an_error(load: str, window: str, error: str) -> None:
    text = f""".arch tiny
.output  y       dram[0x0]       i32[1x8]

.core 0
{load}  fill     sp[0x100]:i8[1x5], 1
  mvm      sp[0x200]:i32[1x8], sp[0x100]:i8[1x5], {window}
  halt
"""
    with pytest.raises(CimcError, match=error):
        run(text)


def test_partial_loads_that_cover_the_macro_make_it_whole() -> None:
    """Four quarter windows, then one mvm over the whole macro: every cell written."""
    loads = "".join(
        f"  mload    m0[{r}:{r + 16},{c}:{c + 16}], sp[{0x400 * q:#x}]:i8[16x16]\n"
        for q, (r, c) in enumerate([(0, 0), (0, 16), (16, 0), (16, 16)])
    )
    text = (
        ".arch tiny\n.input w dram[0x0] i8[64x16]\n.output y dram[0x1000] i32[1x32]\n.core 0\n"
        + "".join(
            f"  dma      sp[{0x400 * q:#x}]:i8[16x16], dram[0x{0x100 * q:x}]:i8[16x16]\n"
            for q in range(4)
        )
        + loads
        + "  fill     sp[0x2000]:i8[1x32], 1\n"
        "  mvm      sp[0x2100]:i32[1x32], sp[0x2000]:i8[1x32], m0\n"
        "  dma      dram[y]:i32[1x32], sp[0x2100]:i32[1x32]\n  halt\n"
    )
    w = RNG.integers(-128, 128, (64, 16)).astype(np.int8)
    got = run(text, w=w).outputs["y"]
    blocks = [w[16 * q : 16 * q + 16] for q in range(4)]  # quarter q = rows 16q..16q+15 of w
    macro = np.block([[blocks[0], blocks[1]], [blocks[2], blocks[3]]]).astype(np.int64)
    np.testing.assert_array_equal(got, macro.sum(axis=0, keepdims=True))


def test_macro_state_written_bits_round_trip() -> None:
    from cimc.machine.state import MacroState

    state = MacroState(np.zeros((4, 6), np.int8))
    assert state.unwritten((slice(0, 4), slice(0, 6))) == (0, 0) and not state.mask().any()
    state.write((slice(1, 3), slice(2, 5)), np.ones((2, 3), np.int8))
    assert state.unwritten((slice(1, 3), slice(2, 5))) is None
    assert state.unwritten((slice(1, 3), slice(1, 5))) == (0, 0)  # column 1: window coords
    mask = state.mask()
    assert mask.sum() == 6 and mask[1:3, 2:5].all()
    copy = MacroState(np.zeros((4, 6), np.int8))
    copy.restore(state.weights, mask)
    np.testing.assert_array_equal(copy.mask(), mask)
    copy.write((slice(0, 4), slice(0, 6)), np.full((4, 6), 2, np.int8))
    assert copy.all_written and copy.written is None and copy.mask().all()


@pytest.mark.parametrize(
    ("operand", "fragment"),
    [("m4", "macro m4 does not exist"), ("m0[0:33,0:4]", "outside the 32x32 macro")],
)
def test_macro_bounds(operand: str, fragment: str) -> None:
    rows = 33 if "33" in operand else 4
    text = f""".arch tiny
.output  y       dram[0x0]       i32[1x4]

.core 0
  mload    {operand}, sp[0x0]:i8[{rows}x4]
  halt
"""
    with pytest.raises(CimcError, match=fragment):
        run(text)


def test_dma_strided_and_gather() -> None:
    text = """.arch tiny
.input   t       dram[0x0]       i16[10x4]
.input   i       dram[0x100]     i32[3x1]
.output  y       dram[0x200]     i16[3x4]
.output  z       dram[0x300]     i16[2x2]

.core 0
  dma      sp[0x0]:i32[3x1], dram[i]:i32[3x1]
  gather   sp[0x40]:i16[3x4], dram[t]:i16[10x4], sp[0x0]:i32[3x1]
  dma      dram[y]:i16[3x4], sp[0x40]:i16[3x4]
  dma      gb[0x10]:i16[2x2/3], dram[t+0x2]:i16[2x2/4]
  dma      dram[z]:i16[2x2], gb[0x10]:i16[2x2/3]
  halt
"""
    t = RNG.integers(-1000, 1000, (10, 4)).astype(np.int16)
    idx = np.array([[9], [0], [4]], np.int32)
    out = run(text, t=t, i=idx)
    np.testing.assert_array_equal(out.outputs["y"], t[[9, 0, 4]])
    np.testing.assert_array_equal(out.outputs["z"], t[0:2, 1:3])
    with pytest.raises(CimcError, match=r"gather: index 10 in row 1 is outside the table's 0..9"):
        run(text, t=t, i=np.array([[1], [10], [2]], np.int32))


def test_alignment_and_bounds_errors() -> None:
    base = ".arch tiny\n.output y dram[0x0] i32[1x1]\n\n.core 0\n  {line}\n  halt\n"
    with pytest.raises(CimcError, match=r"p.cimasm:5:3: core 0: fill: sp\[0x2\] is not aligned"):
        run(base.format(line="fill sp[0x2]:i32[1x1], 0"))
    with pytest.raises(CimcError, match=r"outside sp \(16384 bytes\)"):
        run(base.format(line="fill sp[0x3ff0]:i32[2x4], 0"))


SENDRECV = """.arch tiny
.input   x       dram[0x0]       i32[2x4]
.output  y       dram[0x100]     i32[2x4]
.output  z       dram[0x200]     i32[2x4]

.core 0
  dma      sp[0x0]:i32[2x4], dram[x]:i32[2x4]
  send     1, sp[0x0]:i32[2x4], 7
  add      sp[0x0]:i32[2x4], sp[0x0]:i32[2x4], 100
  send     1, sp[0x0]:i32[2x4], 7
  send     1, sp[0x0]:i32[1x4], 8
  barrier
  halt
.core 1
  recv     0, sp[0x100]:i32[1x4], 8
  recv     0, sp[0x0]:i32[2x4], 7
  recv     0, sp[0x40]:i32[2x4], 7
  dma      dram[y]:i32[2x4], sp[0x0]:i32[2x4]
  dma      dram[z]:i32[2x4], sp[0x40]:i32[2x4]
  barrier
  halt
"""


def test_send_recv_fifo_per_tag() -> None:
    x = np.arange(8, dtype=np.int32).reshape(2, 4)
    out = run(SENDRECV, x=x, trace=True)
    np.testing.assert_array_equal(out.outputs["y"], x)  # first send on tag 7 first
    np.testing.assert_array_equal(out.outputs["z"], x + 100)
    # core 1 blocks on its first recv until core 0 ran: the trace shows the round robin.
    order = [(e.core, e.instr.opcode) for e in out.trace]
    assert order[:6] == [(0, "dma"), (0, "send"), (0, "add"), (0, "send"), (0, "send"), (1, "recv")]
    assert out.stats.opcode_counts == {
        "add": 1,
        "barrier": 2,
        "dma": 3,
        "halt": 2,
        "recv": 3,
        "send": 3,
    }
    recv_event = next(e for e in out.trace if e.instr.opcode == "recv")
    np.testing.assert_array_equal(recv_event.writes[0], x[:1] + 100)


def test_recv_shape_mismatch() -> None:
    bad = SENDRECV.replace("recv     0, sp[0x100]:i32[1x4], 8", "recv     0, sp[0x100]:i32[2x2], 8")
    with pytest.raises(CimcError, match=r"p.cimasm:15:3: core 1: recv: receives i32\[2x2\] but"):
        run(bad, x=np.zeros((2, 4), np.int32))


def test_deadlock_names_every_core() -> None:
    text = """.arch tiny
.output  y       dram[0x0]       i32[1x1]

.core 0
  recv     1, sp[0x0]:i32[1x1], 0
  send     1, sp[0x0]:i32[1x1], 0
  halt
.core 1
  barrier
  halt
"""
    with pytest.raises(CimcError) as info:
        run(text)
    msg = str(info.value)
    assert msg.startswith("p.cimasm:5:3: deadlock: core 0 waits at line 5 `recv 1, sp[0x0]")
    assert "core 1 waits at line 9 `barrier`" in msg


def test_recv_waits_across_rounds_for_a_relayed_message() -> None:
    # core 0 needs core 1's message, which core 1 can only send after core 2's arrives: core
    # 0 waits two rounds (the loop skips it until its FIFO has a message), then finishes.
    text = """.arch default
.output  y       dram[0x0]       i32[1x4]

.core 0
  recv     1, sp[0x0]:i32[1x4], 5
  dma      dram[y]:i32[1x4], sp[0x0]:i32[1x4]
  halt
.core 1
  recv     2, sp[0x0]:i32[1x4], 4
  add      sp[0x0]:i32[1x4], sp[0x0]:i32[1x4], 1
  send     0, sp[0x0]:i32[1x4], 5
  halt
.core 2
  fill     sp[0x0]:i32[1x4], 40
  send     1, sp[0x0]:i32[1x4], 4
  halt
"""
    out = run(text, arch="default", trace=True)
    np.testing.assert_array_equal(out.outputs["y"], [[41] * 4])
    assert [(e.core, e.instr.opcode) for e in out.trace] == [
        (2, "fill"), (2, "send"), (2, "halt"),
        (1, "recv"), (1, "add"), (1, "send"), (1, "halt"),
        (0, "recv"), (0, "dma"), (0, "halt"),
    ]  # fmt: skip
    assert out.stats.steps == 10


def test_stream_without_halt_is_a_run_time_error() -> None:
    # The validator rejects this statically; the interpreter must not run off the end
    # of an unvalidated program either.
    text = """.arch tiny
.output  y       dram[0x0]       i32[1x4]

.core 0
  fill     sp[0x0]:i32[1x4], 1
  dma      dram[y]:i32[1x4], sp[0x0]:i32[1x4]
"""
    with pytest.raises(CimcError, match=r"p.cimasm:6:1: core 0: stream ends without halt"):
        run(text)


def test_barrier_orders_shared_memory() -> None:
    text = """.arch tiny
.output  y       dram[0x0]       i32[1x4]

.core 0
  barrier
  dma      sp[0x0]:i32[1x4], gb[0x0]:i32[1x4]
  add      sp[0x0]:i32[1x4], sp[0x0]:i32[1x4], 1
  dma      dram[y]:i32[1x4], sp[0x0]:i32[1x4]
  halt
.core 1
  fill     sp[0x0]:i32[1x4], 41
  dma      gb[0x0]:i32[1x4], sp[0x0]:i32[1x4]
  barrier
  halt
"""
    assert run(text).outputs["y"].tolist() == [[42] * 4]


def test_input_validation() -> None:
    text = (
        ".arch tiny\n.input x dram[0x0] i8[2x3]\n.output y dram[0x0] i8[2x3]\n\n.core 0\n  halt\n"
    )
    ok = np.arange(6, dtype=np.int8).reshape(1, 2, 3)
    assert run(text, x=ok).outputs["y"].tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(CimcError, match=r"p.cimasm:2:1: input 'x' is missing"):
        run(text)
    with pytest.raises(CimcError, match="unknown input 'z'; the program's inputs are: x"):
        run(text, x=ok, z=ok)
    with pytest.raises(
        CimcError, match=r"input 'x' has dtype float32; the program declares i8\[2x3\]"
    ):
        run(text, x=ok.astype(np.float32))
    with pytest.raises(CimcError, match=r"input 'x' has shape \(3, 2\)"):
        run(text, x=ok.reshape(3, 2))


def test_consts_file(tmp_path: Path) -> None:
    text = """.arch tiny
.consts  k.safetensors
.const   b       flash[0x40]     i32[1x4]
.output  y       dram[0x0]       i32[1x4]

.core 0
  dma      dram[y]:i32[1x4], flash[b]:i32[1x4]
  halt
"""
    path = tmp_path / "p.cimasm"
    path.write_text(text)
    save_file({"b": np.array([[1, -2, 3, -4]], np.int32)}, str(tmp_path / "k.safetensors"))
    program = parse_program(text, str(path))
    out = run_program(program, load_arch("tiny"), {})
    assert out.outputs["y"].tolist() == [[1, -2, 3, -4]]
    save_file({"c": np.zeros((1, 4), np.int32)}, str(tmp_path / "k.safetensors"))
    with pytest.raises(CimcError, match=r"p.cimasm:3:1: constant 'b' is missing"):
        run_program(program, load_arch("tiny"), {})
    escape = parse_program(text.replace("k.safetensors", "../k.safetensors"), str(path))
    with pytest.raises(CimcError, match="must name a file inside the program's folder"):
        run_program(escape, load_arch("tiny"), {})


def test_core_missing_on_arch() -> None:
    text = ".arch tiny\n.output y dram[0x0] i8[1x1]\n\n.core 0\n  halt\n.core 2\n  halt\n"
    with pytest.raises(CimcError, match="core 2 does not exist on 'tiny'"):
        run(text)


def test_large_preset_far_cores() -> None:
    """64 cores: data crosses the 8x8 mesh corner to corner; memories are allocated lazily."""
    text = """.arch large
.output  y       dram[0x0]       i32[1x4]

.core 0
  fill     sp[0x7fff0]:i32[1x4], -5
  send     63, sp[0x7fff0]:i32[1x4], 1
  halt
.core 63
  recv     0, sp[0x0]:i32[1x4], 1
  dma      dram[y]:i32[1x4], sp[0x0]:i32[1x4]
  halt
"""
    assert run(text, "large").outputs["y"].tolist() == [[-5] * 4]
    from cimc.machine.schedule import simulate

    items = {
        (i.core, i.pc): i for i in simulate(parse_program(text, "p"), load_arch("large")).items
    }
    send = items[(0, 1)]
    assert send.end - send.start == 1 + 14  # 128 bits over a 256-bit link, 14 hops
