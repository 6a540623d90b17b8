"""Architecture presets: `isa/arch/*.toml` -> a frozen, fully validated `Arch`.

Every number of the target machine lives in a preset. The loader is strict: a missing
field, an unknown field (a typo must not pass silently), a wrong type or an out-of-range
value is a `CimcError` naming the file, the field and the reason.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cimc.errors import CimcError
from cimc.resources import isa_dir

# Field checks, attached to dataclass fields as metadata: kind -> (test, reason).
_CHECKS: dict[str, tuple[Any, str]] = {
    "pos": (lambda v: v > 0, "must be > 0"),
    "nonneg": (lambda v: v >= 0, "must be >= 0"),
    "pow2": (lambda v: v > 0 and v & (v - 1) == 0, "must be a power of two"),
    "bytes8": (lambda v: v > 0 and v % 8 == 0, "must be a positive multiple of 8"),
}


# Resource limits: far above any real chip, low enough that the validator and interpreter
# never attempt an absurd allocation (a 1 TiB DRAM, a 2^40-cell macro) or a float overflow.
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
INT_MAX = 1 << 32  # counts, cycles and bandwidths
NUM_RANGE = (1e-6, 1e9)  # positive floats (clock, bandwidths, energies)
MAX_MACRO_CELLS = 1 << 24  # rows x cols of one macro (16 MiB)


def _int(check: str = "pos", most: int = INT_MAX) -> Any:
    return field(metadata={"type": int, "check": check, "max": most})


def _mesh() -> Any:
    return field(metadata={"type": "mesh", "check": "pos", "max": 1024})


def _num(check: str = "pos") -> Any:
    return field(metadata={"type": float, "check": check, "max": NUM_RANGE[1]})


MAX_CORES = 1024  # also bounds the core ids an assembly core set may name


@dataclass(frozen=True)
class ChipSpec:
    cores: int = _int(most=MAX_CORES)
    mesh: tuple[int, int] = _mesh()
    clock_mhz: float = _num()
    noc_bits_per_cycle: int = _int("bytes8")
    noc_hop_cycles: int = _int("nonneg")


@dataclass(frozen=True)
class CoreSpec:
    macros: int = _int(most=4096)
    scratchpad_bytes: int = _int("bytes8", 64 * MIB)
    vector_lanes: int = _int(most=1 << 16)
    vector_pipeline_cycles: int = _int("nonneg")
    vector_div_cycles: int = _int()  # per lane group, for div and isqrt (iterative units)
    dma_setup_cycles: int = _int("nonneg")
    dma_channels: int = _int("nonneg", 1024)  # transfers in flight at once; 0: one, blocking issue


@dataclass(frozen=True)
class MacroSpec:
    rows: int = _int(most=1 << 16)  # int32 accumulation: rows * 127 * 128 < 2^31
    cols: int = _int(most=1 << 16)
    input_bits: int = _int()
    bits_per_cycle: int = _int()
    pipeline_cycles: int = _int("nonneg")
    write_bits_per_cycle: int = _int("bytes8")


@dataclass(frozen=True)
class MemorySpec:
    gb_bytes: int = _int("bytes8", 16 * GIB)
    gb_bits_per_cycle: int = _int("bytes8")
    gb_latency_cycles: int = _int("nonneg")
    dram_bytes: int = _int("bytes8", 256 * GIB)
    dram_gbps: float = _num()
    dram_latency_cycles: int = _int("nonneg")
    flash_bytes: int = _int("bytes8", 512 * GIB)
    flash_gbps: float = _num()
    flash_chunk_bytes: int = _int("pow2")
    flash_latency_cycles: int = _int("nonneg")


@dataclass(frozen=True)
class EnergySpec:
    mac_fj: float = _num()
    weight_write_pj_per_bit: float = _num("nonneg")
    sp_pj_per_byte: float = _num("nonneg")
    gb_pj_per_byte: float = _num("nonneg")
    noc_pj_per_bit_hop: float = _num("nonneg")
    dram_pj_per_byte: float = _num("nonneg")
    flash_pj_per_byte: float = _num("nonneg")
    vector_pj_per_op: float = _num("nonneg")


@dataclass(frozen=True)
class AreaSpec:
    """Silicon area of the on-chip parts (DRAM and flash are off chip)."""

    macro_mm2: float = _num()  # one macro: cells, multipliers, adder trees, accumulators
    sram_mm2_per_mib: float = _num("nonneg")  # scratchpads and global buffer
    vector_lane_mm2: float = _num("nonneg")  # one lane of a core's vector unit
    noc_router_mm2: float = _num("nonneg")  # one mesh router (one per core)


@dataclass(frozen=True)
class LeakageSpec:
    """Static power of the same parts, drawn for the whole makespan."""

    macro_mw: float = _num("nonneg")
    sram_mw_per_mib: float = _num("nonneg")
    vector_lane_mw: float = _num("nonneg")
    noc_router_mw: float = _num("nonneg")


_SECTIONS: dict[str, type] = {
    "chip": ChipSpec,
    "core": CoreSpec,
    "macro": MacroSpec,
    "memory": MemorySpec,
    "energy": EnergySpec,
    "area": AreaSpec,
    "leakage": LeakageSpec,
}


@dataclass(frozen=True)
class Arch:
    """One target machine. Derived quantities are properties so they cannot drift."""

    name: str
    description: str
    chip: ChipSpec
    core: CoreSpec
    macro: MacroSpec
    memory: MemorySpec
    energy: EnergySpec
    area: AreaSpec
    leakage: LeakageSpec
    source: str = ""  # the file it was loaded from (for messages)

    @property
    def mvm_cycles_per_vector(self) -> int:
        """Bit-serial input: input_bits / bits_per_cycle cycles per input vector."""
        return self.macro.input_bits // self.macro.bits_per_cycle

    @property
    def dram_bytes_per_cycle(self) -> float:
        return self.memory.dram_gbps * 1000.0 / self.chip.clock_mhz

    @property
    def flash_bytes_per_cycle(self) -> float:
        return self.memory.flash_gbps * 1000.0 / self.chip.clock_mhz

    @property
    def macro_bytes(self) -> int:
        return self.macro.rows * self.macro.cols

    def core_xy(self, core: int) -> tuple[int, int]:
        """Mesh coordinates of a core: id = y * X + x."""
        return core % self.chip.mesh[0], core // self.chip.mesh[0]

    def hops(self, a: int, b: int) -> int:
        """Manhattan distance between two cores on the mesh."""
        (ax, ay), (bx, by) = self.core_xy(a), self.core_xy(b)
        return abs(ax - bx) + abs(ay - by)

    def tree_links(self, src: int, dests: tuple[int, ...]) -> int:
        """Links of the XY multicast tree from src to dests: routers copy a packet where
        the XY routes to the destinations part, so each link carries it once. The routes
        share the row of src (x first), then each column's branches up and down."""
        sx, sy = self.core_xy(src)
        xys = [self.core_xy(d) for d in dests]
        xs = [sx] + [x for x, _ in xys]
        links = max(xs) - min(xs)
        for x in {x for x, _ in xys}:
            ys = [y for dx, y in xys if dx == x]
            links += max(0, max(ys) - sy) + max(0, sy - min(ys))
        return links

    def memory_hops(self, core: int) -> int:
        """Hops from a core to the shared memory port (gb, DRAM and flash controllers),
        which hangs off the mesh beside router (0, 0)."""
        x, y = self.core_xy(core)
        return x + y + 1

    def space_bytes(self, space: str) -> int:
        """Size of a memory space: sp (per core), gb, dram, flash."""
        sizes = {
            "sp": self.core.scratchpad_bytes,
            "gb": self.memory.gb_bytes,
            "dram": self.memory.dram_bytes,
            "flash": self.memory.flash_bytes,
        }
        if space not in sizes:
            raise CimcError(f"unknown memory space {space!r}; expected sp, gb, dram or flash")
        return sizes[space]


def field_types() -> dict[str, object]:
    """`section.field` -> its type (int, float or "mesh"), in declaration order."""
    return {
        f"{key}.{f.name}": f.metadata["type"] for key, cls in _SECTIONS.items() for f in fields(cls)
    }


def preset_path(name_or_path: str | Path) -> Path:
    """The TOML file of a preset name (`default`, `tiny`...) or a path to a TOML file."""
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text or "\\" in text:
        path = Path(text)
        if not path.is_file():
            raise CimcError("architecture file not found", text)
        return path
    path = isa_dir() / "arch" / f"{text}.toml"
    if not path.is_file():
        names = ", ".join(preset_names())
        raise CimcError(f"unknown architecture preset {text!r}; presets: {names}")
    return path


def read_arch_toml(name_or_path: str | Path) -> dict[str, Any]:
    """The parsed TOML of a preset, not yet validated (`arch_from_dict` does that)."""
    path = preset_path(name_or_path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise CimcError(f"invalid TOML: {e}", str(path)) from None
    except UnicodeDecodeError as e:
        raise CimcError(f"not a UTF-8 TOML file: {e.reason} at byte {e.start}", str(path)) from None
    except OSError as e:
        raise CimcError(f"cannot read the architecture: {e.strerror or e}", str(path)) from None


def preset_names() -> list[str]:
    """Names of the presets shipped in isa/arch/, sorted."""
    return sorted(p.stem for p in (isa_dir() / "arch").glob("*.toml"))


def load_arch(name_or_path: str | Path) -> Arch:
    """Load a preset by name (`default`, `tiny`...) or a TOML file by path."""
    return arch_from_dict(read_arch_toml(name_or_path), str(preset_path(name_or_path)))


def arch_from_dict(data: dict[str, Any], source: str = "<arch>") -> Arch:
    """Validate a parsed preset and build the `Arch` (errors name `source` and the field)."""
    _reject_unknown(data, {"name", "description", *_SECTIONS}, "", source)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise CimcError("field 'name': must be a non-empty string", source)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise CimcError("field 'description': must be a string", source)
    sections = {}
    for key, cls in _SECTIONS.items():
        table = data.get(key)
        if table is None:
            raise CimcError(f"section [{key}] is missing", source)
        if not isinstance(table, dict):
            raise CimcError(f"'{key}' must be a table [{key}] of fields, got {table!r}", source)
        sections[key] = _build_section(cls, key, table, source)
    arch = Arch(name=name, description=description, source=source, **sections)
    _check_consistency(arch, source)
    return arch


def _reject_unknown(table: dict[str, Any], known: set[str], prefix: str, source: str) -> None:
    for key in sorted(table):
        if key not in known:
            expected = ", ".join(sorted(known))
            raise CimcError(f"unknown field '{prefix}{key}'; expected one of: {expected}", source)


def _build_section(cls: type, key: str, table: dict[str, Any], source: str) -> Any:
    specs = {f.name: f for f in fields(cls)}
    _reject_unknown(table, set(specs), f"{key}.", source)
    values = {}
    for name, spec in specs.items():
        where = f"field '{key}.{name}'"
        if name not in table:
            raise CimcError(f"{where} is missing", source)
        values[name] = _check_value(table[name], spec.metadata, where, source)
    return cls(**values)


def _check_value(value: Any, meta: Any, where: str, source: str) -> Any:
    kind, check = meta["type"], meta["check"]
    if kind == "mesh":
        ok = isinstance(value, list) and len(value) == 2
        if not ok or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise CimcError(f"{where}: must be a list of two integers [X, Y]", source)
        meta = {"type": int, "check": check, "max": meta["max"]}
        parts = [_check_value(v, meta, where, source) for v in value]
        return (parts[0], parts[1])
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CimcError(f"{where}: must be a number, got {value!r}", source)
    if kind is int and not isinstance(value, int):
        raise CimcError(f"{where}: must be an integer, got {value!r}", source)
    if kind is float and not math.isfinite(value):
        raise CimcError(f"{where}: must be finite, got {value!r}", source)
    test, reason = _CHECKS[check]
    if not test(value):
        raise CimcError(f"{where}: {reason}, got {value!r}", source)
    if value > meta["max"]:
        raise CimcError(f"{where}: at most {meta['max']:,} (resource limit), got {value!r}", source)
    if kind is float and 0 < value < NUM_RANGE[0]:
        raise CimcError(f"{where}: below {NUM_RANGE[0]:g} (resource limit), got {value!r}", source)
    return float(value) if kind is float else value


def _check_consistency(arch: Arch, source: str) -> None:
    """Cross-field rules that no single field can check."""
    mx, my = arch.chip.mesh
    if mx * my != arch.chip.cores:
        raise CimcError(
            f"field 'chip.mesh': {mx}x{my} = {mx * my} routers but chip.cores = "
            f"{arch.chip.cores}; the mesh product must equal the core count",
            source,
        )
    m = arch.macro
    if m.input_bits > 8:
        raise CimcError(f"field 'macro.input_bits': inputs are int8, got {m.input_bits}", source)
    if m.input_bits % m.bits_per_cycle:
        raise CimcError(
            f"field 'macro.bits_per_cycle': must divide macro.input_bits ({m.input_bits}), "
            f"got {m.bits_per_cycle}",
            source,
        )
    if m.rows * m.cols > MAX_MACRO_CELLS:
        raise CimcError(
            f"field 'macro.cols': {m.rows}x{m.cols} cells per macro, at most "
            f"{MAX_MACRO_CELLS:,} (resource limit)",
            source,
        )
    mvm_bytes = m.rows + 4 * m.cols  # one int8 input row and one int32 output row
    if arch.core.scratchpad_bytes < mvm_bytes:
        raise CimcError(
            f"field 'core.scratchpad_bytes': {arch.core.scratchpad_bytes} bytes cannot hold "
            f"one MVM's operands ({m.rows} input bytes + {4 * m.cols} output bytes)",
            source,
        )
    if arch.memory.flash_chunk_bytes > arch.memory.flash_bytes:
        raise CimcError("field 'memory.flash_chunk_bytes': larger than memory.flash_bytes", source)
