"""The hand-written programs in isa/examples/ run and equal an independent torch computation.

Each reference below is written from the program's description with torch integer ops; it
shares only the stored constants (tables, multipliers) with the program.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from cimc.machine.arch import load_arch
from cimc.machine.interpreter import run_program
from cimc.machine.parser import load_program
from cimc.machine.printer import print_program
from cimc.machine.schedule import simulate
from cimc.machine.validator import validate
from cimc.resources import isa_dir

EXAMPLES = isa_dir() / "examples"
NAMES = ["double_buffer", "layernorm", "matmul_2core", "softmax_rows"]


def _load(name: str) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray], np.ndarray]:
    path = EXAMPLES / f"{name}.cimasm"
    program = load_program(path)
    inputs = dict(np.load(EXAMPLES / f"{name}.inputs.npz", allow_pickle=False))
    out = run_program(program, load_arch(program.arch_name), inputs).outputs["y"]
    consts = {
        k: torch.from_numpy(v).to(torch.int64)
        for k, v in load_file(str(path.with_suffix(".safetensors"))).items()
    }
    return consts, inputs, out


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).to(torch.int64)


def _rshr(x: torch.Tensor, s: int) -> torch.Tensor:
    return (x + (1 << (s - 1))) >> s if s else x


def _req(x: torch.Tensor, m: torch.Tensor | int, s: int, zp: torch.Tensor | int) -> torch.Tensor:
    return torch.clamp(_rshr(x * m, s) + zp, -128, 127)


def _round_div(n: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """floor((n + floor(d / 2)) / d) = floor(n / d + 1/2): the programs' rounding."""
    return torch.div(n + d // 2, d, rounding_mode="floor")


@pytest.mark.parametrize("name", NAMES)
def test_example_is_canonical_and_valid(name: str) -> None:
    text = (EXAMPLES / f"{name}.cimasm").read_text()
    program = load_program(EXAMPLES / f"{name}.cimasm")
    assert print_program(program) == text
    validate(program, load_arch(program.arch_name))


def test_matmul_2core() -> None:
    c, inputs, out = _load("matmul_2core")
    acc = _t(inputs["x"]) @ c["w"] + c["b"]
    np.testing.assert_array_equal(out, _req(acc, c["mult"], 42, 0).numpy())
    assert len(np.unique(out)) > 20  # not saturated: the test sees the arithmetic


def test_softmax_rows() -> None:
    c, inputs, out = _load("softmax_rows")
    x = _t(inputs["x"])
    d = torch.clamp(x - x.amax(dim=1, keepdim=True), min=-128)
    e = c["exp_table"][0, d + 128]
    total = e.sum(dim=1, keepdim=True)
    np.testing.assert_array_equal(out, _round_div(127 * e, total).numpy())
    # probabilities of a row sum to ~127 (each rounded once)
    assert (abs(out.astype(int).sum(axis=1) - 127) <= 16).all()


def test_layernorm() -> None:
    c, inputs, out = _load("layernorm")
    x = _t(inputs["x"])
    n = x.shape[1]
    centered = n * x - x.sum(dim=1, keepdim=True)
    d = torch.tensor([[int(np.sqrt(int(v)))] for v in (centered**2).sum(dim=1)])
    # exact integer square root, checked independently of any float rounding
    for v, r in zip((centered**2).sum(dim=1).tolist(), d[:, 0].tolist(), strict=True):
        assert r * r <= v < (r + 1) * (r + 1)
    z = _round_div(256 * centered, torch.clamp(d, min=1))
    want = _req(z * c["gamma"], 1 << 30, 37, c["beta"])
    np.testing.assert_array_equal(out, want.numpy())
    assert (out[3] == c["beta"][0].clamp(-128, 127).numpy()).all()  # the constant row


def test_double_buffer() -> None:
    c, inputs, out = _load("double_buffer")
    acc = _t(inputs["x"]) @ c["w"]
    np.testing.assert_array_equal(out, _req(acc, 1518500250, 43, -3).numpy())


def test_double_buffering_overlaps_and_pays_off() -> None:
    path = EXAMPLES / "double_buffer.cimasm"
    program = load_program(path)
    arch = load_arch("tiny")
    items = {i.pc: i for i in simulate(program, arch).items}
    # tile 1's DMA (pc 2) runs while tile 0 is loaded into m0 and multiplied (pc 3, 4)
    assert items[2].start < items[4].end and items[4].start < items[2].end
    single = Path(path).read_text().replace("sp[0x1400]", "sp[0x1000]")
    from cimc.machine.parser import parse_program

    single_program = parse_program(single, str(path))
    assert simulate(single_program, arch).makespan > simulate(program, arch).makespan
