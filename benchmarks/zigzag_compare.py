"""cimc's cost model vs zigzag-dse 3.9.1 on ZigZag-IMC's dimc.yaml, one 768 -> 3072 linear.

Both tools model the same hardware: one 28 nm DIMC array of 128 x 128 int8 weights with
bit-serial inputs, a 256 KB SRAM, DRAM at 64 bit/cycle (cimc: the `zigzag-dimc` preset).
zigzag-dse searches its own mapping; cimc is costed twice: a hand-written program
(`cimc_program`: x stays in the scratchpad, the 144 weight tiles stream from DRAM through
two buffers, each output block accumulates in int32 and is requantized to int8 before
going back to DRAM) and the program cimc's compiler makes of the same layer (`compiled`:
an nn.Linear through torch.export and the whole pipeline, checked bit-exact against the
integer golden), with its weight bytes loaded over the weight bytes.

Run by hand (zigzag-dse is not a dependency of cimc):
    pip install zigzag-dse six
    python benchmarks/zigzag_compare.py [--batch 1 128]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np

from cimc.machine.arch import load_arch
from cimc.machine.interpreter import run_program
from cimc.machine.parser import parse_program
from cimc.machine.summary import CostSummary, summarize
from cimc.machine.validator import validate

K_IN, N_OUT, T = 768, 3072, 128


def zigzag(batch: int) -> dict[str, object]:
    """Run zigzag-dse's IMC flow on dimc.yaml for the layer; energies in pJ."""
    import zigzag as zz
    from zigzag.api import get_hardware_performance_zigzag

    logging.disable(logging.WARNING)
    root = Path(zz.__file__).parent / "inputs"
    layer = {
        "id": 0,
        "name": "fc",
        "operator_type": "Gemm",
        "equation": "O[b][k]+=W[c][k]*I[b][c]",
        "loop_dims": ["B", "K", "C"],
        "loop_sizes": [batch, N_OUT, K_IN],
        # dimc.yaml's output register holds 16 bits: 32-bit partial sums do not map at all
        "operand_precision": {"W": 8, "I": 8, "O": 16, "O_final": 8},
    }
    with tempfile.TemporaryDirectory() as dump:
        energy, cycles, tclk, _area, cmes = get_hardware_performance_zigzag(
            [layer],
            str(root / "hardware" / "dimc.yaml"),
            str(root / "mapping" / "default_imc.yaml"),
            opt="latency",
            dump_folder=dump,
            in_memory_compute=True,
            loma_show_progress_bar=False,
        )
    cme = cmes[0][1][0][0]
    return {
        "cycles": cycles,
        "energy_pj": energy,
        "mac_pj": cme.mac_energy,
        "mem_pj": {str(op): levels for op, levels in cme.mem_energy_breakdown.items()},
        "tclk_ns": tclk,
        "ideal_cycles": cme.ideal_temporal_cycle,
        "spatial": str(cme.spatial_mapping),
    }


def cimc_program(batch: int) -> str:
    x, acc, bufs, yblk = 0x0, batch * K_IN, (0x28000, 0x2C000), 0x30000
    assert acc + batch * T * 4 <= bufs[0]
    lines = [
        ".arch zigzag-dimc",
        f".input   x dram[0x0] i8[{batch}x{K_IN}]",
        f".input   w dram[0x100000] i8[{K_IN}x{N_OUT}]",
        f".output  y dram[0x800000] i8[{batch}x{N_OUT}]",
        "",
        ".core 0",
        f"  dma sp[{x:#x}]:i8[{batch}x{K_IN}], dram[x]:i8[{batch}x{K_IN}]",
    ]
    tiles = [(j, k) for j in range(N_OUT // T) for k in range(K_IN // T)]

    def load(t: int) -> str:  # DMA tile t into its buffer
        j, k = tiles[t]
        src = f"dram[w+{k * T * N_OUT + j * T:#x}]:i8[{T}x{T}/{N_OUT}]"
        return f"  dma sp[{bufs[t % 2]:#x}]:i8[{T}x{T}], {src}"

    lines.append(load(0))
    for t, (j, k) in enumerate(tiles):
        if t + 1 < len(tiles):  # prefetch: in-order issue would otherwise serialize DMA and mload
            lines.append(load(t + 1))
        op = "mvm" if k == 0 else "mvm.acc"
        lines += [
            f"  mload m0, sp[{bufs[t % 2]:#x}]:i8[{T}x{T}]",
            f"  {op} sp[{acc:#x}]:i32[{batch}x{T}], sp[{x + k * T:#x}]:i8[{batch}x{T}/{K_IN}], m0",
        ]
        if k == K_IN // T - 1:
            lines += [
                f"  req sp[{yblk:#x}]:i8[{batch}x{T}], sp[{acc:#x}]:i32[{batch}x{T}], "
                "1518500250, 45, 0, -128, 127",
                f"  dma dram[y+{j * T:#x}]:i8[{batch}x{T}/{N_OUT}], sp[{yblk:#x}]:i8[{batch}x{T}]",
            ]
    return "\n".join([*lines, "  halt"]) + "\n"


def cimc(batch: int) -> CostSummary:
    arch = load_arch("zigzag-dimc")
    program = parse_program(cimc_program(batch), f"linear_b{batch}.cimasm")
    validate(program, arch)
    rng = np.random.default_rng(batch)
    x = rng.integers(-128, 128, (batch, K_IN), dtype=np.int8)
    w = rng.integers(-127, 128, (K_IN, N_OUT), dtype=np.int8)
    y = run_program(program, arch, {"x": x, "w": w}).outputs["y"]
    acc = x.astype(np.int64) @ w.astype(np.int64)
    want = np.clip(((acc * 1518500250) + (1 << 44)) >> 45, -128, 127)
    assert np.array_equal(y, want), "the benchmark program computes the wrong thing"
    return summarize(program, arch)


def compiled(batch: int) -> tuple[CostSummary, float]:
    """The layer compiled by cimc (random weights, bit-exact against the golden): its cost
    and its weight bytes loaded / weight bytes."""
    import torch

    from cimc.pipeline import PipelineOptions, compile_model
    from cimc.reference.float_model import default_inputs
    from cimc.verify import verify_compiled, weight_bytes_loaded

    torch.manual_seed(batch)
    layer = torch.nn.Linear(K_IN, N_OUT).eval()
    exported = torch.export.export(layer, (torch.randn(batch, K_IN),))
    arch = load_arch("zigzag-dimc")
    result = compile_model(exported, arch, PipelineOptions())
    inputs = default_inputs(result.float_graph, seed=0)
    if not verify_compiled(
        result.compiled, result.float_graph, inputs, with_figures=False
    ).bit_exact:
        raise SystemExit(f"batch {batch}: the compiled program is not bit-exact")
    program = result.compiled.program
    return summarize(program, arch), weight_bytes_loaded(program) / (K_IN * N_OUT)


def report(batch: int) -> None:
    zz, cm = zigzag(batch), cimc(batch)
    cc, loads = compiled(batch)
    # zigzag-dse models no leakage: the dynamic energies are compared
    zz_uj, cm_uj = float(zz["energy_pj"]) / 1e6, cm.dynamic_energy_uj  # type: ignore[arg-type]
    zz_cycles = float(zz["cycles"])  # type: ignore[arg-type]
    print(f"\n=== 768 -> 3072 int8 linear, batch {batch} ===")
    head = f"{'':12}{'zigzag-dse':>14}{'cimc hand':>14}{'hand/zz':>10}{'cimc compiled':>16}"
    print(f"{head}{'compiled/zz':>13}")
    ratio, cratio = cm.makespan_cycles / zz_cycles, cc.makespan_cycles / zz_cycles
    print(
        f"{'cycles':12}{zz_cycles:>14,.0f}{cm.makespan_cycles:>14,}{ratio:>10.2f}"
        f"{cc.makespan_cycles:>16,}{cratio:>13.2f}"
    )
    cc_uj = cc.dynamic_energy_uj
    print(
        f"{'energy uJ':12}{zz_uj:>14.2f}{cm_uj:>14.2f}{cm_uj / zz_uj:>10.2f}"
        f"{cc_uj:>16.2f}{cc_uj / zz_uj:>13.2f}"
    )
    print(f"cimc compiled: weight bytes loaded / weight bytes {loads:.2f}, bit-exact")
    print(f"zigzag: tclk {zz['tclk_ns']:.3f} ns, ideal compute {zz['ideal_cycles']:,.0f} cycles, "
          f"MAC {float(zz['mac_pj']) / 1e6:.2f} uJ, spatial {zz['spatial']}")  # type: ignore[arg-type]  # fmt: skip
    for op, levels in zz["mem_pj"].items():  # type: ignore[attr-defined]
        print(f"  zigzag {op} per level (uJ): " + ", ".join(f"{v / 1e6:.2f}" for v in levels))
    print(f"cimc: lower bound {cm.lower_bound_cycles:,} ({cm.lower_bound_reason}); energy (uJ): "
          + ", ".join(f"{k} {v:.2f}" for k, v in cm.energy_breakdown_uj.items() if v))  # fmt: skip
    print("cimc bytes moved: " + ", ".join(f"{k} {v:,}" for k, v in cm.bytes_moved.items()))
    if abs(cm.makespan_cycles / zz_cycles - 1) > 0.25 or abs(cm_uj / zz_uj - 1) > 0.25:
        explain(batch, zz, cm)


def explain(batch: int, zz: dict[str, object], cm: CostSummary) -> None:
    """Attribute a gap above 25% to the mechanisms that differ between the two models."""
    dram_pj_per_byte = load_arch("zigzag-dimc").energy.dram_pj_per_byte
    mem = zz["mem_pj"]
    assert isinstance(mem, dict)
    zz_input_bytes = mem["I"][-1] / dram_pj_per_byte
    zz_dram_bytes = sum(levels[-1] for levels in mem.values()) / dram_pj_per_byte
    cm_dram_bytes = sum(v for k, v in cm.bytes_moved.items() if "dram" in k)
    x_bytes = batch * K_IN
    print("gap > 25%, why:")
    print(
        f"  - dataflow: zigzag's best mapping reads the input from DRAM "
        f"{zz_input_bytes / x_bytes:.0f} times ({zz_input_bytes:,.0f} bytes); cimc's program "
        f"keeps x in the scratchpad and reads it once. DRAM traffic: zigzag "
        f"{zz_dram_bytes:,.0f} bytes = {zz_dram_bytes / 8:,.0f} cycles at 64 bit/cycle (its "
        f"latency is DRAM-bound), cimc {cm_dram_bytes:,} bytes."
    )
    print(
        f"  - array use: zigzag maps K=64 output channels on the 128 columns (ideal compute "
        f"{float(zz['ideal_cycles']):,.0f} cycles), cimc 128 int8 columns (MVM "  # type: ignore[arg-type]
        f"{batch * 8 * (K_IN // T) * (N_OUT // T):,} cycles); cimc's macro also spends "
        f"{(K_IN // T) * (N_OUT // T) * T * T * 8 // 64:,} cycles writing weights at 64 bit/cycle, "
        f"serialized with its MVMs (its lower bound: {cm.lower_bound_cycles:,} cycles)."
    )
    sp_uj = cm.energy_breakdown_uj["scratchpad"]
    zz_sram_uj = sum(levels[-2] for levels in mem.values() if len(levels) > 2) / 1e6
    print(
        f"  - on-chip energy: cimc accumulates int32 partial sums in the scratchpad (read and "
        f"written by every mvm.acc at {load_arch('zigzag-dimc').energy.sp_pj_per_byte} pJ/B): "
        f"{sp_uj:.1f} uJ, vs zigzag's 16-bit partials in registers and SRAM: "
        f"{zz_sram_uj:.1f} uJ."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 128])
    for batch in parser.parse_args().batch:
        report(batch)


if __name__ == "__main__":
    main()
