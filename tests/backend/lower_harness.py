"""Shared harness of the lowering tests: build, validate, print/parse, run, compare."""

from __future__ import annotations

import numpy as np
import torch

from cimc.backend.builder.asm import ProgramBuilder
from cimc.machine.arch import Arch, load_arch
from cimc.machine.interpreter import run_program
from cimc.machine.parser import parse_program
from cimc.machine.printer import print_program
from cimc.machine.validator import validate

ARCHS = ("tiny", "default")
_ARCH_CACHE: dict[str, Arch] = {}


def arch(name: str) -> Arch:
    if name not in _ARCH_CACHE:
        _ARCH_CACHE[name] = load_arch(name)
    return _ARCH_CACHE[name]


def run(b: ProgramBuilder, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validate the built program, check it survives print -> parse, run it."""
    program, consts = b.build("lowered.cimasm", "lowered.safetensors")
    validate(program, b.arch)
    text = print_program(program)
    assert parse_program(text, "lowered.cimasm") == program
    return run_program(program, b.arch, inputs, consts).outputs


def codes(rng: np.random.Generator, shape: tuple[int, ...], bits: int) -> np.ndarray:
    """Random integer codes covering the full two's-complement range of `bits`."""
    lim = 1 << (bits - 1)
    return rng.integers(-lim, lim, size=shape, dtype=np.int64)


def np_dtype(bits: int) -> type:
    return {8: np.int8, 16: np.int16, 32: np.int32, 64: np.int64}[bits]


def assert_exact(got: np.ndarray, want: torch.Tensor) -> None:
    w = want.numpy().astype(np.int64).reshape(got.shape)
    bad = np.argwhere(got.astype(np.int64) != w)
    if bad.size:
        at = tuple(bad[0])
        raise AssertionError(f"{len(bad)} mismatches, first at {at}: {got[at]} != {w[at]}")
