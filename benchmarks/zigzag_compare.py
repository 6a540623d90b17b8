"""cimc's compiled programs vs zigzag-dse 3.9.1's best mappings, layer by layer, on one
hardware description.

Both tools model the cimc arch preset `--arch` (default `zigzag-dimc`: one 28 nm DIMC array
of 128 x 128 int8 weights with bit-serial inputs, a 256 KB SRAM, DRAM at 64 bit/cycle):
zigzag-dse reads an accelerator written from that preset (`accelerator`), laid out as its
own ZigZag-IMC `dimc.yaml`. What cannot be matched stays zigzag's: its register levels
(`rf_1B`, `rf_2B`), its MAC energy and clock (its DIMC model at 28 nm; cimc's preset copies
them), and the separate write costs of SRAM and DRAM (cimc has one energy per byte). One
difference is deliberate: dimc.yaml's `sram_256KB` holds 262,144 bits (32 KiB; zigzag's
sizes are bits), the cimc preset's scratchpad 256 KiB: zigzag gets the 256 KiB.

The layers (`LAYERS`): BERT-base's FFN up (768 -> 3072), FFN down (3072 -> 768) and fused
QKV (768 -> 2304), a LLaMA-style gated FFN (768 -> 2 x 2048 -> 768, SiLU gate) and a
ResNet 3x3 convolution (64 -> 64 channels at 56 x 56, padding 1), each at batch (tokens,
or images for the convolution) 1 and 128. cimc column: the layer as a torch module through
torch.export and the whole pipeline, checked bit-exact against the integer golden, costed
by cimc's schedule (makespan) and energy model (dynamic energy: zigzag-dse models no
leakage). zigzag column: its best mapping by latency (LOMA search, `default_imc` spatial
hints); a multi-layer block is the sum of its layers. For the FFN up layer at batch 1 and
128, `--hand` also costs a hand-written program (`hand_program`).

Run by hand (zigzag-dse is not a dependency of cimc):
    pip install zigzag-dse six
    python benchmarks/zigzag_compare.py [--batch 1 128] [--layers ffn-up conv3x3] [--hand]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cimc.errors import CimcError
from cimc.machine.arch import Arch, arch_from_dict, load_arch, read_arch_toml
from cimc.machine.interpreter import run_program
from cimc.machine.parser import parse_program
from cimc.machine.summary import CostSummary, summarize
from cimc.machine.validator import validate

WEIGHT_BITS = 8
# dimc.yaml's output register holds 16 bits: 32-bit partial sums do not map at all
PRECISION = {"W": WEIGHT_BITS, "I": 8, "O": 16, "O_final": 8}


@dataclass(frozen=True)
class Layer:
    key: str  # --layers name
    title: str
    module: Callable[[], Any]  # the torch module cimc compiles
    example: Callable[[int], Any]  # its input at a batch
    zigzag: Callable[[int], list[dict[str, Any]]]  # zigzag-dse's layers at a batch
    weights: int  # weight bytes (int8)


def gemm(name: str, batch: int, k_in: int, n_out: int) -> dict[str, Any]:
    return {
        "name": name,
        "operator_type": "Gemm",
        "equation": "O[b][k]+=W[c][k]*I[b][c]",
        "loop_dims": ["B", "K", "C"],
        "loop_sizes": [batch, n_out, k_in],
        "operand_precision": PRECISION,
    }


def conv(name: str, batch: int, c_in: int, c_out: int, size: int, kernel: int) -> dict[str, Any]:
    """A stride-1 'same' convolution, as zigzag-dse's ONNX parser writes one."""
    pad = kernel // 2
    return {
        "name": name,
        "operator_type": "Conv",
        "equation": "O[b][k][oy][ox]+=W[k][c][fy][fx]*I[b][c][iy][ix]",
        "dimension_relations": ["ix=1*ox+1*fx", "iy=1*oy+1*fy"],
        "loop_dims": ["B", "K", "C", "OY", "OX", "FY", "FX"],
        "loop_sizes": [batch, c_out, c_in, size, size, kernel, kernel],
        "operand_precision": PRECISION,
        "pr_loop_dims": ["IX", "IY"],
        "pr_loop_sizes": [size + 2 * pad, size + 2 * pad],
        "padding": [[pad, pad], [pad, pad]],
    }


def _linear(k_in: int, n_out: int) -> Any:
    import torch

    return torch.nn.Linear(k_in, n_out)


def _gated_ffn(hidden: int, inner: int) -> Any:
    import torch

    class GatedFFN(torch.nn.Module):
        """LLaMA's MLP: down(silu(gate(x)) * up(x)), no biases."""

        def __init__(self) -> None:
            super().__init__()
            self.gate = torch.nn.Linear(hidden, inner, bias=False)
            self.up = torch.nn.Linear(hidden, inner, bias=False)
            self.down = torch.nn.Linear(inner, hidden, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.down(torch.nn.functional.silu(self.gate(x)) * self.up(x))

    return GatedFFN()


def _tokens(width: int) -> Callable[[int], Any]:
    import torch

    return lambda batch: torch.randn(batch, width)


def _images(channels: int, size: int) -> Callable[[int], Any]:
    import torch

    return lambda batch: torch.randn(batch, channels, size, size)


LAYERS = [
    Layer("ffn-up", "FFN up 768->3072", lambda: _linear(768, 3072), _tokens(768),
          lambda b: [gemm("up", b, 768, 3072)], 768 * 3072),
    Layer("ffn-down", "FFN down 3072->768", lambda: _linear(3072, 768), _tokens(3072),
          lambda b: [gemm("down", b, 3072, 768)], 3072 * 768),
    Layer("qkv", "QKV fused 768->2304", lambda: _linear(768, 3 * 768), _tokens(768),
          lambda b: [gemm("qkv", b, 768, 3 * 768)], 768 * 3 * 768),
    Layer("gated-ffn", "gated FFN 768->2x2048->768", lambda: _gated_ffn(768, 2048), _tokens(768),
          lambda b: [gemm("gate", b, 768, 2048), gemm("up", b, 768, 2048),
                     gemm("down", b, 2048, 768)], 3 * 768 * 2048),
    Layer("conv3x3", "conv 3x3 64->64 56x56", lambda: _conv(64, 64, 3), _images(64, 56),
          lambda b: [conv("conv", b, 64, 64, 56, 3)], 64 * 64 * 9),
]  # fmt: skip


def _conv(c_in: int, c_out: int, kernel: int) -> Any:
    import torch

    return torch.nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)


def accelerator(arch: Arch) -> dict[str, Any]:
    """zigzag-dse's IMC accelerator for a one-core cimc arch, in dimc.yaml's layout: the
    macros' cells (written at the arch's weight-write energy), zigzag's input and output
    registers, the scratchpad as the SRAM level and DRAM, with the arch's sizes, widths and
    energies (zigzag's sizes are bits); several macros per core become a third array
    dimension."""
    if arch.chip.cores != 1:
        raise SystemExit(f"--arch {arch.name}: zigzag-dse models one core, not {arch.chip.cores}")
    e, sp_bits, dram_bits = arch.energy, arch.chip.noc_bits_per_cycle, arch.dram_bytes_per_cycle * 8
    if dram_bits != int(dram_bits):
        raise SystemExit(f"--arch {arch.name}: DRAM moves {dram_bits} bit/cycle, not whole bits")

    def port(name: str, kind: str, low: int, high: int, *allocation: str) -> dict[str, Any]:
        return {"name": name, "type": kind, "bandwidth_min": low, "bandwidth_max": high,
                "allocation": list(allocation)}  # fmt: skip

    def memory(size: int, r: float, w: float, operands: list[str], ports: list[Any],
               served: list[str]) -> dict[str, Any]:  # fmt: skip
        return {"size": size, "r_cost": r, "w_cost": w, "area": 0, "latency": 1,
                "operands": operands, "ports": ports, "served_dimensions": served}  # fmt: skip

    dims = ["D1", "D2", "D3"] if arch.core.macros > 1 else ["D1", "D2"]
    cells = memory(WEIGHT_BITS, 0, e.weight_write_pj_per_bit * WEIGHT_BITS, ["I2"],
                   [port("rw_port_1", "read_write", 8, 8, "I2, fh", "I2, tl")], [])  # fmt: skip
    cells["latency"] = 0
    rf_in = memory(8, 0.021, 0.021, ["I1"], [port("r_port_1", "read", 8, 8, "I1, tl"),
                   port("w_port_1", "write", 8, 8, "I1, fh")], ["D1"])  # fmt: skip
    rf_out = memory(16, 0.021, 0.021, ["O"], [
        port("r_port_1", "read", 16, 16, "O, tl"), port("r_port_2", "read", 16, 16, "O, th"),
        port("w_port_1", "write", 16, 16, "O, fh"), port("w_port_2", "write", 16, 16, "O, fl"),
    ], ["D2"])  # fmt: skip
    sp_access = e.sp_pj_per_byte * sp_bits / 8  # cimc: one energy per byte, read or write
    sram = memory(arch.core.scratchpad_bytes * 8, sp_access, sp_access, ["I1", "O"], [
        port("r_port_1", "read", 64, sp_bits, "I1, tl", "O, tl", "O, th"),
        port("w_port_1", "write", 64, sp_bits, "I1, fh", "O, fh", "O, fl"),
    ], dims)  # fmt: skip
    dram_access = e.dram_pj_per_byte * dram_bits / 8
    everything = [f"{op}, {d}" for op in ("I1", "I2") for d in ("fh", "tl")]
    everything += [f"O, {d}" for d in ("fh", "tl", "fl", "th")]
    dram = memory(arch.memory.dram_bytes * 8, dram_access, dram_access, ["I1", "I2", "O"],
                  [port("rw_port_1", "read_write", int(dram_bits), int(dram_bits), *everything)],
                  dims)  # fmt: skip
    sizes = [arch.macro.cols, arch.macro.rows] + ([arch.core.macros] if len(dims) == 3 else [])
    return {
        "name": arch.name,
        "memories": {
            "cells": cells,
            "rf_1B": rf_in,
            "rf_2B": rf_out,
            f"sram_{arch.core.scratchpad_bytes // 1024}KB": sram,
            "dram": dram,
        },  # fmt: skip
        "operational_array": {
            "is_imc": True,
            "imc_type": "digital",
            "input_precision": [arch.macro.input_bits, WEIGHT_BITS],
            "bit_serial_precision": arch.macro.bits_per_cycle,
            "dimensions": dims,
            "sizes": sizes,
        },
    }


def zigzag(layers: list[dict[str, Any]], arch: Arch) -> dict[str, Any]:
    """zigzag-dse's IMC flow for the arch, once per layer (its multi-layer flow wants a
    chain of layers); its best mapping by latency, summed over the layers; energies in pJ."""
    import yaml
    import zigzag as zz
    from zigzag.api import get_hardware_performance_zigzag

    logging.disable(logging.WARNING)
    mapping = Path(zz.__file__).parent / "inputs" / "mapping" / "default_imc.yaml"
    runs = []
    with tempfile.TemporaryDirectory() as dump:
        hardware = Path(dump) / "accelerator.yaml"
        hardware.write_text(yaml.safe_dump(accelerator(arch), sort_keys=False))
        for layer in layers:
            _energy, _cycles, tclk, _area, cmes = get_hardware_performance_zigzag(
                [{"id": 0, **layer}], str(hardware), str(mapping), opt="latency",
                dump_folder=dump, in_memory_compute=True, loma_show_progress_bar=False,
            )  # fmt: skip
            runs.append(cmes[0][1][0][0])
    dram_pj = {str(op): 0.0 for c in runs for op in c.mem_energy_breakdown}
    for c in runs:
        for op, levels in c.mem_energy_breakdown.items():
            dram_pj[str(op)] += float(levels[-1])
    return {
        "cycles": sum(float(c.latency_total2) for c in runs),
        "energy_pj": sum(float(c.energy_total) for c in runs),
        "mac_pj": sum(float(c.mac_energy) for c in runs),
        "dram_bytes": sum(dram_pj.values()) / arch.energy.dram_pj_per_byte,
        "dram_bytes_by_operand": {
            op: pj / arch.energy.dram_pj_per_byte for op, pj in dram_pj.items()
        },
        "ideal_cycles": sum(float(c.ideal_temporal_cycle) for c in runs),
        "macs": sum(math.prod(layer["loop_sizes"]) for layer in layers),
        "tclk_ns": float(tclk),
        "spatial": [str(c.spatial_mapping) for c in runs],
    }


@dataclass(frozen=True)
class Compiled:
    summary: CostSummary
    weight_loads: float  # weight bytes written into macros / weight bytes
    compile_s: float
    verify_s: float


def compiled(layer: Layer, batch: int, arch: Arch) -> Compiled:
    """The layer compiled by cimc (random weights, seeded), proved bit-exact against the
    integer golden on the interpreter, and costed."""
    import torch

    from cimc.pipeline import PipelineOptions, compile_model
    from cimc.reference.float_model import default_inputs
    from cimc.verify import verify_compiled, weight_bytes_loaded

    torch.manual_seed(batch)
    exported = torch.export.export(layer.module().eval(), (layer.example(batch),))
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # the note on generated calibration
        result = compile_model(exported, arch, PipelineOptions())
    compile_s = time.perf_counter() - started
    inputs = default_inputs(result.float_graph, seed=0)
    report = verify_compiled(result.compiled, result.float_graph, inputs, with_figures=False)
    if not report.bit_exact:
        raise SystemExit(f"{layer.title}, batch {batch}: the compiled program is not bit-exact")
    program = result.compiled.program
    loads = weight_bytes_loaded(program) / layer.weights
    verify_s = time.perf_counter() - started - compile_s
    return Compiled(summarize(program, arch), loads, compile_s, verify_s)


def hand_program(batch: int, k_in: int = 768, n_out: int = 3072, t: int = 128) -> str:
    """k_in -> n_out by hand on zigzag-dimc: x stays in the scratchpad, the weight tiles
    stream from DRAM through two buffers, each output block accumulates in int32 and is
    requantized to int8 before going back to DRAM."""
    x, acc, bufs, yblk = 0x0, batch * k_in, (0x28000, 0x2C000), 0x30000
    assert acc + batch * t * 4 <= bufs[0]
    lines = [
        ".arch zigzag-dimc",
        f".input   x dram[0x0] i8[{batch}x{k_in}]",
        f".input   w dram[0x100000] i8[{k_in}x{n_out}]",
        f".output  y dram[0x800000] i8[{batch}x{n_out}]",
        "",
        ".core 0",
        f"  dma sp[{x:#x}]:i8[{batch}x{k_in}], dram[x]:i8[{batch}x{k_in}]",
    ]
    tiles = [(j, k) for j in range(n_out // t) for k in range(k_in // t)]

    def load(i: int) -> str:  # DMA tile i into its buffer
        j, k = tiles[i]
        src = f"dram[w+{k * t * n_out + j * t:#x}]:i8[{t}x{t}/{n_out}]"
        return f"  dma sp[{bufs[i % 2]:#x}]:i8[{t}x{t}], {src}"

    lines.append(load(0))
    for i, (j, k) in enumerate(tiles):
        if i + 1 < len(tiles):  # prefetch: in-order issue would otherwise serialize DMA and mload
            lines.append(load(i + 1))
        op = "mvm" if k == 0 else "mvm.acc"
        lines += [
            f"  mload m0, sp[{bufs[i % 2]:#x}]:i8[{t}x{t}]",
            f"  {op} sp[{acc:#x}]:i32[{batch}x{t}], sp[{x + k * t:#x}]:i8[{batch}x{t}/{k_in}], m0",
        ]
        if k == k_in // t - 1:
            lines += [
                f"  req sp[{yblk:#x}]:i8[{batch}x{t}], sp[{acc:#x}]:i32[{batch}x{t}], "
                "1518500250, 45, 0, -128, 127",
                f"  dma dram[y+{j * t:#x}]:i8[{batch}x{t}/{n_out}], sp[{yblk:#x}]:i8[{batch}x{t}]",
            ]
    return "\n".join([*lines, "  halt"]) + "\n"


def hand(batch: int, arch: Arch | None = None) -> CostSummary:
    """The hand-written 768 -> 3072 program, run on random codes and checked, then costed."""
    arch = arch or load_arch("zigzag-dimc")
    program = parse_program(hand_program(batch), f"linear_b{batch}.cimasm")
    validate(program, arch)
    rng = np.random.default_rng(batch)
    x = rng.integers(-128, 128, (batch, 768), dtype=np.int8)
    w = rng.integers(-127, 128, (768, 3072), dtype=np.int8)
    y = run_program(program, arch, {"x": x, "w": w}).outputs["y"]
    acc = x.astype(np.int64) @ w.astype(np.int64)
    want = np.clip(((acc * 1518500250) + (1 << 44)) >> 45, -128, 127)
    assert np.array_equal(y, want), "the benchmark program computes the wrong thing"
    return summarize(program, arch)


HEAD = (f"{'layer':28}{'batch':>6}{'zz cycles':>13}{'cimc cycles':>13}{'c/zz':>6}"
        f"{'zz uJ':>10}{'cimc uJ':>10}{'c/zz':>6}{'zz DRAM MB':>11}{'cimc DRAM MB':>13}"
        f"{'w loads':>8}{'zz MAC util':>12}{'cimc MAC util':>14}")  # fmt: skip


def row(
    title: str, batch: int, arch: Arch, zz: dict[str, Any], cm: CostSummary, loads: float
) -> str:
    """One line of the table. MAC utilization, the same for both: the cycles the MACs take
    with every cell of every macro busy / the cycles taken."""
    zz_uj = zz["energy_pj"] / 1e6
    cm_uj = cm.dynamic_energy_uj  # zigzag-dse models no leakage
    cm_dram = sum(v for k, v in cm.bytes_moved.items() if "dram" in k)
    per_cycle = arch.core.macros * arch.macro_bytes / arch.mvm_cycles_per_vector
    assert zz["macs"] == cm.macs, f"{title}: zigzag's layers are not cimc's ({zz['macs']:,} MACs)"
    cm_util = cm.macs / per_cycle / cm.makespan_cycles
    zz_util = zz["macs"] / per_cycle / zz["cycles"]
    return (
        f"{title:28}{batch:>6}{zz['cycles']:>13,.0f}{cm.makespan_cycles:>13,}"
        f"{cm.makespan_cycles / zz['cycles']:>6.2f}{zz_uj:>10.2f}{cm_uj:>10.2f}"
        f"{cm_uj / zz_uj:>6.2f}{zz['dram_bytes'] / 1e6:>11.2f}{cm_dram / 1e6:>13.2f}"
        f"{loads:>8.2f}{zz_util:>12.1%}{cm_util:>14.1%}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="zigzag-dimc", help="a one-core cimc preset or file")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 128])
    parser.add_argument("--layers", nargs="+", choices=[la.key for la in LAYERS],
                        default=[la.key for la in LAYERS])  # fmt: skip
    parser.add_argument("--hand", action="store_true", help="also the hand-written FFN up")
    parser.add_argument("--details", action="store_true", help="zigzag's spatial mappings")
    parser.add_argument("--dram-mib", type=int, help="the arch's DRAM capacity, for both tools")
    args = parser.parse_args(argv)
    data = read_arch_toml(args.arch)
    if args.dram_mib:
        data["memory"]["dram_bytes"] = args.dram_mib << 20
    arch = arch_from_dict(data, args.arch)
    if args.hand and arch.name != "zigzag-dimc":
        parser.error("--hand: the hand-written program is written for --arch zigzag-dimc")
    print(
        f"arch {arch.name} (DRAM {arch.memory.dram_bytes >> 20} MiB): cimc compiled "
        "(bit-exact) vs zigzag-dse's best mapping (latency)"
    )
    print(HEAD)
    for layer in (la for la in LAYERS if la.key in args.layers):
        for batch in args.batch:
            zz = zigzag(layer.zigzag(batch), arch)
            try:
                cm = compiled(layer, batch, arch)
            except CimcError as e:  # e.g. the activations do not fit the arch's DRAM
                print(f"{layer.title:28}{batch:>6}{zz['cycles']:>13,.0f}  cimc: {e}", flush=True)
                continue
            print(row(layer.title, batch, arch, zz, cm.summary, cm.weight_loads), flush=True)
            print(f"{'':34}cimc: compile {cm.compile_s:.1f} s, verify {cm.verify_s:.1f} s, "
                  f"bound {cm.summary.lower_bound_cycles:,} ({cm.summary.lower_bound_reason}), "
                  f"MAC {cm.summary.energy_breakdown_uj['mac']:.2f} uJ; zigzag: MAC "
                  f"{zz['mac_pj'] / 1e6:.2f} uJ, ideal {zz['ideal_cycles']:,.0f} cycles",
                  file=sys.stderr)  # fmt: skip
            if args.details:
                moved = ", ".join(
                    f"{op} {b / 1e6:.2f}" for op, b in zz["dram_bytes_by_operand"].items()
                )
                cm_moved = ", ".join(
                    f"{k} {v / 1e6:.2f}" for k, v in cm.summary.bytes_moved.items()
                )
                print(f"{'':34}cimc MB moved: {cm_moved}", file=sys.stderr)
                print(f"{'':34}zigzag DRAM MB by operand: {moved}; spatial: "
                      f"{'; '.join(zz['spatial'])}", file=sys.stderr)  # fmt: skip
    if args.hand:
        for batch in args.batch:
            zz, cm_hand = zigzag(LAYERS[0].zigzag(batch), arch), hand(batch, arch)
            print(row("FFN up, hand-written", batch, arch, zz, cm_hand, 1.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
