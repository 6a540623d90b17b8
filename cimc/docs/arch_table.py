"""The architecture-preset tables of README.md, read from isa/arch/*.toml.

A summary (one row per preset) and every field of every preset with its unit. The field
list comes from the `Arch` dataclasses, so a new field without a unit here fails the
README test instead of going undocumented.
"""

from __future__ import annotations

import dataclasses

from cimc.machine.arch import Arch, load_arch, preset_names

UNITS: dict[str, str] = {
    "chip.cores": "count",
    "chip.mesh": "X x Y routers",
    "chip.clock_mhz": "MHz",
    "chip.noc_bits_per_cycle": "bits/cycle per link",
    "chip.noc_hop_cycles": "cycles per hop",
    "core.macros": "count per core",
    "core.scratchpad_bytes": "bytes per core",
    "core.vector_lanes": "lanes",
    "core.vector_pipeline_cycles": "cycles",
    "core.vector_div_cycles": "cycles per lane group (div, isqrt)",
    "core.dma_setup_cycles": "cycles per DMA",
    "core.dma_channels": "DMA transfers in flight per core (0: one, blocking issue)",
    "macro.rows": "cells (reduction K)",
    "macro.cols": "cells (outputs N)",
    "macro.input_bits": "bits",
    "macro.bits_per_cycle": "input bits per cycle",
    "macro.pipeline_cycles": "cycles",
    "macro.write_bits_per_cycle": "bits/cycle (weight load)",
    "memory.gb_bytes": "bytes (global buffer)",
    "memory.gb_bits_per_cycle": "bits/cycle",
    "memory.gb_latency_cycles": "cycles",
    "memory.dram_bytes": "bytes",
    "memory.dram_gbps": "GB/s",
    "memory.dram_latency_cycles": "cycles",
    "memory.flash_bytes": "bytes",
    "memory.flash_gbps": "GB/s",
    "memory.flash_chunk_bytes": "bytes per read",
    "memory.flash_latency_cycles": "cycles",
    "energy.mac_fj": "fJ per int8 MAC",
    "energy.weight_write_pj_per_bit": "pJ/bit",
    "energy.sp_pj_per_byte": "pJ/byte",
    "energy.gb_pj_per_byte": "pJ/byte",
    "energy.noc_pj_per_bit_hop": "pJ per bit per hop",
    "energy.dram_pj_per_byte": "pJ/byte",
    "energy.flash_pj_per_byte": "pJ/byte",
    "energy.vector_pj_per_op": "pJ per element op",
    "area.macro_mm2": "mm2 per macro",
    "area.sram_mm2_per_mib": "mm2 per MiB (scratchpads, global buffer)",
    "area.vector_lane_mm2": "mm2 per vector lane",
    "area.noc_router_mm2": "mm2 per router",
    "leakage.macro_mw": "mW per macro",
    "leakage.sram_mw_per_mib": "mW per MiB (scratchpads, global buffer)",
    "leakage.vector_lane_mw": "mW per vector lane",
    "leakage.noc_router_mw": "mW per router",
}
SECTIONS = ("chip", "core", "macro", "memory", "energy", "area", "leakage")


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n:,} B"


def _value(key: str, value: object) -> str:
    if isinstance(value, tuple):
        return " x ".join(str(v) for v in value)
    if isinstance(value, int) and key.endswith("_bytes"):
        return _size(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def fields(arch: Arch) -> dict[str, object]:
    """`section.field` -> value, in declaration order."""
    out: dict[str, object] = {}
    for section in SECTIONS:
        spec = getattr(arch, section)
        for f in dataclasses.fields(spec):
            out[f"{section}.{f.name}"] = getattr(spec, f.name)
    return out


def summary_table(presets: list[Arch]) -> str:
    head = (
        "| preset | cores | macros / core | macro (rows x cols) | weights on chip | "
        "scratchpad / core | global buffer | DRAM | clock | DRAM bw | flash bw | description |"
    )
    rows = [head, "|" + "---|" * 12]
    for a in presets:
        on_chip = a.chip.cores * a.core.macros * a.macro_bytes
        rows.append(
            f"| `{a.name}` | {a.chip.cores} ({_value('', a.chip.mesh)} mesh) | {a.core.macros} "
            f"| {a.macro.rows} x {a.macro.cols} | {_size(on_chip)} "
            f"| {_size(a.core.scratchpad_bytes)} | {_size(a.memory.gb_bytes)} "
            f"| {_size(a.memory.dram_bytes)} | {a.chip.clock_mhz:g} MHz "
            f"| {a.memory.dram_gbps:g} GB/s | {a.memory.flash_gbps:g} GB/s | {a.description} |"
        )
    return "\n".join(rows)


def field_table(presets: list[Arch]) -> str:
    values = [fields(a) for a in presets]
    undocumented = [k for k in values[0] if k not in UNITS]
    if undocumented:
        raise ValueError(f"arch fields without a unit in cimc/docs/arch_table.py: {undocumented}")
    rows = [
        "| field | unit | " + " | ".join(f"`{a.name}`" for a in presets) + " |",
        "|---|---|" + "---|" * len(presets),
    ]
    for key in values[0]:
        cells = " | ".join(_value(key, v[key]) for v in values)
        rows.append(f"| `{key}` | {UNITS[key]} | {cells} |")
    return "\n".join(rows)


def arch_markdown() -> str:
    presets = [load_arch(name) for name in preset_names()]
    return summary_table(presets) + "\n\n" + field_table(presets)
