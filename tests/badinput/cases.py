"""The bad-input corpus: each case builds its files in a scratch folder and names the
`cimc` command line and the one stderr line expected (a regex, `{d}` = the folder).

Kinds: inputs files, arch files, assembly and constants files, command-line usage.
"""

# ruff: noqa: E501  (the corpus is a table: one case per line reads better than wrapped)

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from cimc.resources import isa_dir

PROG = "matmul_2core.cimasm"
INPUTS = "matmul_2core.inputs.npz"
CONSTS = "matmul_2core.safetensors"
MARKER = "UNPICKLED"  # created if anything ever unpickles a payload


@dataclass(frozen=True)
class Bad:
    id: str
    setup: Callable[[Path], list[str]]  # files in the folder -> argv after `cimc`
    expect: str  # regex for the single stderr line; `{d}` is the folder, `{p}` the program


class Evil:
    """Unpickling this creates the marker file: proof that a payload was (not) unpickled."""

    def __init__(self, folder: Path) -> None:
        self.marker = folder / MARKER

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def _npz(d: Path, **arrays: np.ndarray) -> str:
    path = d / "in.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return str(path)


def _run_with(**arrays: np.ndarray) -> Callable[[Path], list[str]]:
    return lambda d: ["run", str(d / PROG), "--inputs", _npz(d, **arrays)]


def _x(dtype: type = np.int8, shape: tuple[int, ...] = (8, 64)) -> np.ndarray:
    return np.ones(shape, dtype)


def _arch(edit: Callable[[str], str]) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        path = d / "arch.toml"
        path.write_text(edit((isa_dir() / "arch" / "tiny.toml").read_text()))
        return ["report", str(d / PROG), "--arch", str(path)]

    return setup


def _set(key: str, value: str) -> Callable[[str], str]:
    """Replace the value of `key = ...` (the first line with that exact key)."""
    return lambda text: re.sub(rf"(?m)^{key} = [^#\n]*", f"{key} = {value}", text, count=1)


def _drop(key: str) -> Callable[[str], str]:
    return lambda text: re.sub(rf"(?m)^{key} = .*\n", "", text, count=1)


def _program(edit: Callable[[str], str]) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        path = d / PROG
        path.write_text(edit(path.read_text()))
        return ["run", str(path), "--inputs", str(d / INPUTS)]

    return setup


def _consts(change: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> Callable:
    def setup(d: Path) -> list[str]:
        save_file(change(load_file(str(d / CONSTS))), str(d / CONSTS))
        return ["run", str(d / PROG), "--inputs", str(d / INPUTS)]

    return setup


def _consts_bytes(data: Callable[[Path], bytes]) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        (d / CONSTS).write_bytes(data(d))
        return ["run", str(d / PROG), "--inputs", str(d / INPUTS)]

    return setup


def _symlinked_consts(d: Path) -> list[str]:
    outside = d / "outside"
    outside.mkdir()
    inside = d / "prog"
    inside.mkdir()
    (d / CONSTS).rename(outside / CONSTS)
    (inside / CONSTS).symlink_to(outside / CONSTS)
    (d / PROG).rename(inside / PROG)
    return ["run", str(inside / PROG), "--inputs", str(d / INPUTS)]


def _garbage_member(d: Path) -> list[str]:
    path = d / "in.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", b"\x93NUMPY\x01\x00garbage")
    return ["run", str(d / PROG), "--inputs", str(path)]


def _file(name: str, data: bytes) -> Callable[[Path], str]:
    def make(d: Path) -> str:
        (d / name).write_bytes(data)
        return str(d / name)

    return make


_P = "{d}/" + PROG
_DECL_X = _P + r":10:1: input 'x' "

INPUT_CASES = [
    Bad("input-wrong-name", _run_with(z=_x()), rf"^{_P}: unknown input 'z'; the program's inputs are: x$"),
    Bad("input-missing", _run_with(), rf"^{_DECL_X}is missing$"),
    Bad("input-no-option", lambda d: ["run", str(d / PROG)], rf"^{_DECL_X}is missing$"),
    Bad("input-extra", _run_with(x=_x(), extra=_x()), rf"^{_P}: unknown input 'extra'; the program's inputs are: x$"),
    Bad("input-int16", _run_with(x=_x(np.int16)), rf"^{_DECL_X}has dtype int16; the program declares i8\[8x64\]$"),
    Bad("input-uint8", _run_with(x=_x(np.uint8)), rf"^{_DECL_X}has dtype uint8; the program declares i8\[8x64\]$"),
    Bad("input-float32", _run_with(x=_x(np.float32)), rf"^{_DECL_X}has dtype float32; the program declares i8\[8x64\]$"),
    Bad("input-nan", _run_with(x=np.full((8, 64), np.nan)), rf"^{_DECL_X}has dtype float64; the program declares i8\[8x64\]$"),
    Bad("input-complex", _run_with(x=_x(np.complex64)), rf"^{_DECL_X}has dtype complex64;"),
    Bad("input-structured", _run_with(x=np.zeros((8, 64), [("a", "i1")])), rf"^{_DECL_X}has dtype \[\('a', 'i1'\)\];"),
    Bad("input-shape", _run_with(x=_x(shape=(8, 32))), rf"^{_DECL_X}has shape \(8, 32\); the program declares i8\[8x64\]$"),
    Bad("input-shape-3d", _run_with(x=_x(shape=(2, 8, 64))), rf"^{_DECL_X}has shape \(2, 8, 64\);"),
    Bad("input-scalar", _run_with(x=np.int8(3)), rf"^{_DECL_X}has shape \(\);"),
    Bad(
        "input-pickled-object",
        lambda d: ["run", str(d / PROG), "--inputs", _npz(d, x=np.array([Evil(d)], dtype=object))],
        r"^{d}/in.npz: cannot read the inputs \(an \.npz of arrays is expected\): "
        r"Object arrays cannot be loaded when allow_pickle=False$",
    ),
    Bad(
        "input-not-npz",
        lambda d: ["run", str(d / PROG), "--inputs", _file("in.npz", b"x,y\n1,2\n")(d)],
        r"^{d}/in.npz: cannot read the inputs \(an \.npz of arrays is expected\): ",
    ),
    Bad(
        "input-pickle-file",
        lambda d: ["run", str(d / PROG), "--inputs", _file("in.npz", pickle.dumps(Evil(d)))(d)],
        r"^{d}/in.npz: cannot read the inputs \(an \.npz of arrays is expected\): ",
    ),
    Bad("input-bad-member", _garbage_member, r"^{d}/in.npz: cannot read the inputs \(an \.npz of arrays is expected\): "),
    Bad("input-missing-file", lambda d: ["run", str(d / PROG), "--inputs", str(d / "nope.npz")], r"^{d}/nope.npz: inputs file not found$"),
    Bad("input-directory", lambda d: ["run", str(d / PROG), "--inputs", str(d)], r"^{d}: cannot read the inputs \(an \.npz of arrays is expected\): "),
]  # fmt: skip

_A = r"^{d}/arch.toml: "
ARCH_CASES = [
    Bad("arch-zero-cores", _arch(_set("cores", "0")), _A + r"field 'chip.cores': must be > 0, got 0$"),
    Bad("arch-negative-latency", _arch(_set("dram_latency_cycles", "-1")), _A + r"field 'memory.dram_latency_cycles': must be >= 0, got -1$"),
    Bad("arch-unknown-field", _arch(lambda t: t.replace("[chip]\n", "[chip]\nbogus = 1\n")), _A + r"unknown field 'chip.bogus'; expected one of: clock_mhz, cores, mesh, "),
    Bad("arch-unknown-section", _arch(lambda t: t + "\n[extra]\nx = 1\n"), _A + r"unknown field 'extra'; expected one of: area, chip, core, "),
    Bad("arch-missing-field", _arch(_drop("clock_mhz")), _A + r"field 'chip.clock_mhz' is missing$"),
    Bad("arch-missing-section", _arch(lambda t: t.split("[energy]")[0]), _A + r"section \[energy\] is missing$"),
    Bad("arch-missing-name", _arch(_drop("name")), _A + r"field 'name': must be a non-empty string$"),
    Bad("arch-string-number", _arch(_set("clock_mhz", '"fast"')), _A + r"field 'chip.clock_mhz': must be a number, got 'fast'$"),
    Bad("arch-float-count", _arch(_set("cores", "1.5")), _A + r"field 'chip.cores': must be an integer, got 1.5$"),
    Bad("arch-bool", _arch(_set("macros", "true")), _A + r"field 'core.macros': must be a number, got True$"),
    Bad("arch-nan", _arch(_set("dram_gbps", "nan")), _A + r"field 'memory.dram_gbps': must be finite, got nan$"),
    Bad("arch-not-toml", _arch(lambda t: "this is not toml\n"), _A + r"invalid TOML: "),
    Bad("arch-not-utf8", lambda d: ["report", str(d / PROG), "--arch", _file("arch.toml", b"\xff\xfename")(d)], _A + r"not a UTF-8 TOML file: invalid start byte at byte 0$"),
    Bad("arch-mesh-mismatch", _arch(_set("mesh", "[3, 1]")), _A + r"field 'chip.mesh': 3x1 = 3 routers but chip.cores = 2; the mesh product must equal the core count$"),
    Bad("arch-mesh-type", _arch(_set("mesh", "[2]")), _A + r"field 'chip.mesh': must be a list of two integers \[X, Y\]$"),
    Bad("arch-negative-leakage", _arch(_set("macro_mw", "-0.5")), _A + r"field 'leakage.macro_mw': must be >= 0, got -0.5$"),
    Bad("arch-zero-macro-area", _arch(_set("macro_mm2", "0")), _A + r"field 'area.macro_mm2': must be > 0, got 0$"),
    Bad("arch-missing-area", _arch(lambda t: t.split("[area]")[0]), _A + r"section \[area\] is missing$"),
    Bad("arch-zero-macros", _arch(_set("macros", "0")), _A + r"field 'core.macros': must be > 0, got 0$"),
    Bad("arch-scratchpad-too-small", _arch(_set("scratchpad_bytes", "64")), _A + r"field 'core.scratchpad_bytes': 64 bytes cannot hold one MVM's operands \(32 input bytes \+ 128 output bytes\)$"),
    Bad("arch-1tib-dram", _arch(_set("dram_bytes", "1099511627776")), _A + r"field 'memory.dram_bytes': at most 274,877,906,944 \(resource limit\), got 1099511627776$"),
    Bad("arch-huge-macro", _arch(lambda t: _set("cols", "65536")(_set("rows", "65536")(t))), _A + r"field 'macro.cols': 65536x65536 cells per macro, at most 16,777,216 \(resource limit\)$"),
    Bad("arch-tiny-clock", _arch(_set("clock_mhz", "1e-30")), _A + r"field 'chip.clock_mhz': below 1e-06 \(resource limit\), got 1e-30$"),
    Bad("arch-chunk-not-pow2", _arch(_set("flash_chunk_bytes", "3000")), _A + r"field 'memory.flash_chunk_bytes': must be a power of two, got 3000$"),
    Bad("arch-bits-divide", _arch(_set("bits_per_cycle", "3")), _A + r"field 'macro.bits_per_cycle': must divide macro.input_bits \(8\), got 3$"),
    Bad("arch-link-bytes", _arch(_set("noc_bits_per_cycle", "12")), _A + r"field 'chip.noc_bits_per_cycle': must be a positive multiple of 8, got 12$"),
    Bad("arch-other-name", _arch(_set("name", '"other"')), rf"^{_P}:1:1: program was compiled for arch 'tiny', not 'other'; validate it with --arch tiny or recompile$"),
    Bad("arch-file-missing", lambda d: ["report", str(d / PROG), "--arch", str(d / "no.toml")], r"^{d}/no.toml: architecture file not found$"),
    Bad("arch-unknown-preset", lambda d: ["report", str(d / PROG), "--arch", "huge"], r"^--arch: unknown architecture preset 'huge'; presets: default, large, tiny, zigzag-dimc$"),
]  # fmt: skip


def _linear_onnx(d: Path, k: int = 1024) -> tuple[str, str]:
    """A one-MatMul model (x f32[1x4xK] @ w f32[Kx64], node 'fc') and calibration inputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((k, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(d / "lin.onnx"))
    np.savez(d / "calib.npz", x=np.ones((1, 4, k), np.float32))
    return str(d / "lin.onnx"), str(d / "calib.npz")


def compile_with_scratchpad(sp: int) -> Callable[[Path], list[str]]:
    """`cimc compile` of the linear model for `tiny` with a `sp`-byte scratchpad, which the
    arch check accepts (it holds one MVM) but the model's lowering may not fit."""

    def setup(d: Path) -> list[str]:
        model, calib = _linear_onnx(d)
        arch = d / f"sp{sp}.toml"
        arch.write_text(
            _set("scratchpad_bytes", str(sp))((isa_dir() / "arch" / "tiny.toml").read_text())
        )
        return [
            "compile",
            model,
            "--arch",
            str(arch),
            "--calibration",
            calib,
            "-o",
            str(d / "o.cimasm"),
        ]

    return setup


_SP = r"arch field 'core.scratchpad_bytes'"
MODEL_CASES = [
    Bad("compile-sp-full", compile_with_scratchpad(1024), r"^scratchpad of core 0: pass lower failed: scratchpad of core 0 is full: cannot place \d+ bytes \(largest free block \d+ of 1024\); raise " + _SP + r" to at least \d+ bytes$"),
    Bad("compile-sp-one-token", compile_with_scratchpad(4096), r"^%y \(fc\): pass lower failed: scratchpad too small for one token of this matmul: " + _SP + r" is 4096 bytes, this model needs at least \d+; raise it or pick a preset with a larger scratchpad$"),
]  # fmt: skip

_C = _P + r": cannot read constants file {d}/" + CONSTS + ": "
ASM_CASES = [
    Bad("consts-missing-file", _program(lambda t: t.replace(CONSTS, "nothere.safetensors")), rf"^{_P}: constants file {{d}}/nothere.safetensors not found$"),
    Bad("consts-missing-tensor", _consts(lambda c: {k: v for k, v in c.items() if k != "b"}), rf"^{_P}:8:1: constant 'b' is missing from the constants file$"),
    Bad("consts-wrong-dtype", _consts(lambda c: {**c, "w": c["w"].astype(np.int16)}), rf"^{_P}:7:1: constant 'w' has dtype int16; the program declares i8\[64x64\]$"),
    Bad("consts-wrong-shape", _consts(lambda c: {**c, "w": c["w"][:32]}), rf"^{_P}:7:1: constant 'w' has shape \(32, 64\); the program declares i8\[64x64\]$"),
    Bad("consts-escape", _program(lambda t: t.replace(CONSTS, "../" + CONSTS)), rf"^{_P}:2:9: constants file '\.\./{CONSTS}' must name a file inside the program's folder; put it beside the program$"),
    Bad("consts-absolute", _program(lambda t: t.replace(CONSTS, "/etc/passwd")), rf"^{_P}:2:9: constants file '/etc/passwd' must be a relative path; put it beside the program$"),
    Bad("consts-symlink-escape", _symlinked_consts, rf"^{{d}}/prog/{PROG}:2:9: constants file '{CONSTS}' is a link to {{d}}/outside/{CONSTS}, outside the program's folder; copy it beside the program$"),
    Bad("consts-garbage", _consts_bytes(lambda d: b"not safetensors at all"), _C),
    Bad("consts-pickle", _consts_bytes(lambda d: pickle.dumps(Evil(d))), _C),
    Bad("asm-syntax", _program(lambda t: t.replace("  halt\n", "  halt sp[\n", 1)), rf"^{_P}:27:11: syntax error: unexpected end of line; expected a name or an integer$"),
    Bad("asm-unknown-opcode", _program(lambda t: t.replace("  add ", "  addd ", 1)), rf"^{_P}:23:3: unknown opcode 'addd'; did you mean 'add'\?$"),
    Bad("asm-long-number", _program(lambda t: t.replace("42, 0", "9" * 5000 + ", 0")), rf"^{_P}:25:77: number 999999999999\.\.\. is too long; write at most 40 digits$"),
    Bad("asm-wrong-arch", _program(lambda t: t.replace(".arch tiny", ".arch huge")), rf"^{_P}:1:1: unknown architecture preset 'huge'; presets: "),
]  # fmt: skip

CLI_CASES = [
    Bad("cli-unknown-command", lambda d: ["frob"], r"^cimc: error: argument COMMAND: invalid choice: 'frob' \(choose from .*\); see 'cimc --help'$"),
    Bad("cli-no-command", lambda d: [], r"^cimc: error: the following arguments are required: COMMAND; see 'cimc --help'$"),
    Bad("cli-missing-program", lambda d: ["run"], r"^cimc run: error: the following arguments are required: PROGRAM\.cimasm; see 'cimc run --help'$"),
    Bad("cli-unknown-option", lambda d: ["report", str(d / PROG), "--fast"], r"^cimc: error: unrecognized arguments: --fast; see 'cimc --help'$"),
    Bad("cli-bad-count", lambda d: ["report", str(d / PROG), "--layers", "-3"], r"^cimc report: error: argument --layers: expected a count >= 0, got '-3'; see 'cimc report --help'$"),
    Bad("cli-program-missing", lambda d: ["run", str(d / "nope.cimasm")], r"^{d}/nope.cimasm: cannot read the program: No such file or directory$"),
    Bad("cli-program-directory", lambda d: ["report", str(d)], r"^{d}: cannot read the program: Is a directory$"),
    Bad("cli-program-binary", lambda d: ["report", _file("b.cimasm", b"\xff\x00\x01")(d)], r"^{d}/b.cimasm: cannot read the program: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte$"),
    Bad("cli-output-missing-folder", lambda d: ["run", str(d / PROG), "--inputs", str(d / INPUTS), "-o", str(d / "no" / "y.npz")], r"^{d}/no/y.npz: cannot write here: the folder does not exist$"),
    Bad("cli-trace-missing-folder", lambda d: ["report", str(d / PROG), "--trace", str(d / "no" / "t.json")], r"^{d}/no/t.json: cannot write here: the folder does not exist$"),
    Bad("cli-output-is-folder", lambda d: ["run", str(d / PROG), "--inputs", str(d / INPUTS), "-o", str(d)], r"^{d}: cannot write the outputs: Is a directory$"),
]  # fmt: skip

_GRAPH = """graph @g {
  %x = input {meaning = "float"} : f32[2, 4]
  %w = constant @w : f32[4, 4]
  %y = linear(%x, %w) : f32[2, 4]
  %z = neg(%w) : f32[4, 4]
  return "y" = %y, "z" = %z
}
"""


def _opt(text: str = _GRAPH, *args: str, arrays: dict[str, np.ndarray] | None = None) -> Callable:
    """`cimc opt {d}/g.ir ARGS` on `text`, with g.ir.safetensors beside it holding `arrays`."""

    def setup(d: Path) -> list[str]:
        (d / "g.ir").write_text(text)
        save_file(
            arrays if arrays is not None else {"w": np.eye(4, dtype=np.float32)},
            str(d / "g.ir.safetensors"),
        )
        return ["opt", str(d / "g.ir"), *args]

    return setup


_G = r"^{d}/g.ir:"
OPT_CASES = [  # more in tests/test_cli_opt.py (in process: each cimc start imports torch)
    Bad("opt-missing-file", lambda d: ["opt", str(d / "nope.ir")], r"^{d}/nope.ir: cannot read the IR: No such file or directory$"),
    Bad("opt-no-file", lambda d: ["opt", "-p", "dce"], r"^arguments: an IR file \('-': standard input\) is required \(or --list-passes\)$"),
    Bad("opt-no-data", _opt(arrays={}), _G + r"3:17: no data for @w; put it in {d}/g.ir.safetensors, give --constants FILE, or fill it with --random-constants SEED$"),
    Bad("opt-constants-garbage", lambda d: _opt()(d) + ["--constants", _file("c.safetensors", b"garbage")(d)], r"^{d}/c.safetensors: cannot read the constants: "),
    Bad("opt-unknown-pass", _opt(_GRAPH, "-p", "dce,frob"), r"^pipeline: unknown pass 'frob' \(known: .*cse.*\)$"),
    Bad("opt-pass-fails", _opt(_GRAPH, "-p", "check-canonical"), r"^@g: pass check-canonical failed: 1 node\(s\) not in canonical form: %z: neg of constants only: fold it \(fold-constants\)$"),
    Bad("opt-output-suffix", lambda d: _opt(_GRAPH, "-o", str(d / "x.safetensors"))(d), r"^{d}/x.safetensors: IR text cannot go to a .safetensors file; name it FILE.ir$"),
]  # fmt: skip

CASES = INPUT_CASES + ARCH_CASES + ASM_CASES + CLI_CASES + MODEL_CASES + OPT_CASES


def expected(case: Bad, folder: Path) -> str:
    return case.expect.replace("{d}", re.escape(str(folder)))


def no_marker(folder: Path) -> bool:
    return not any(p.name == MARKER for p in folder.rglob("*")) and not os.path.exists(MARKER)
