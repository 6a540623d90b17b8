"""A sweep's search space, read from SPACE.toml.

    base = "default"                 # arch preset, or a TOML file (relative to SPACE.toml)

    [compile]                        # fixed compiler options of every trial (optional)
    seq_len = 16

    [knobs]                          # what varies: a list of values or a range
    "core.macros" = [8, 16, 32]                    # any arch field, by its dotted name
    "memory.dram_gbps" = {low = 3.2, high = 25.6, log = true}
    "chip.mesh" = ["2x2", "4x1"]                   # "XxY"; chip.cores follows unless a knob
    "compile.streaming" = ["auto", "double-buffer"]
    "compile.mapping" = ["spread", "duplicate"]     # the map pass's mapping
    "compile.seq_len" = [16, 32]

A knob's values are checked for type here (a float for an integer field is an error of the
space); whether an arch is valid or a model fits it is a trial's outcome, recorded as a
failed trial with its reason. Every error is one line naming the file and the knob.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cimc.errors import CimcError
from cimc.machine.arch import field_types, load_arch, preset_path, read_arch_toml

STREAMING = ("auto", "sequential", "double-buffer", "pin-what-fits")
MAPPINGS = ("auto", "spread", "duplicate", "pipeline")  # cimc/backend/plan/duplication.py
# a type, or the tuple of the names the option takes
COMPILE_OPTIONS: dict[str, object] = {
    "seq_len": int,
    "streaming": STREAMING,
    "mapping": MAPPINGS,
    "stages": int,  # pipeline stages (cimc/backend/plan/pipeline.py)
    "micro_batches": int,  # and micro-batches (cimc/backend/plan/micro_batch.py)
}
MESH = re.compile(r"^([1-9][0-9]*)x([1-9][0-9]*)$")
Value = int | float | str


@dataclass(frozen=True)
class Knob:
    """One dimension of the space: `values` (finite) or a range `low..high`."""

    name: str  # "core.macros", "compile.streaming"
    type: object  # int, float, "mesh" or a tuple of names (streaming policies, mappings)
    values: tuple[Value, ...] = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False

    @property
    def finite(self) -> bool:
        return bool(self.values)

    @property
    def is_compile_option(self) -> bool:
        return self.name.startswith("compile.")

    def describe(self) -> dict[str, Any]:
        if self.finite:
            return {"name": self.name, "values": list(self.values)}
        return {"name": self.name, "low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class Space:
    source: str  # the SPACE.toml path, for messages
    base: str  # the arch preset name or the resolved TOML path
    base_arch: dict[str, Any]  # its parsed TOML, which trials edit
    compile: dict[str, Value]  # fixed compiler options
    knobs: tuple[Knob, ...]
    calibration: str | None = None

    @property
    def grid(self) -> dict[str, list[Value]] | None:
        """Every combination of values, when every knob is a finite list."""
        if not all(k.finite for k in self.knobs):
            return None
        return {k.name: list(k.values) for k in self.knobs}

    @property
    def grid_size(self) -> int | None:
        grid = self.grid
        return None if grid is None else math.prod(len(v) for v in grid.values())

    def fingerprint(self) -> str:
        """A hash of what the trials compute: a study holding another space is refused."""
        doc = {
            "base_arch": self.base_arch,
            "compile": self.compile,
            "knobs": [k.describe() for k in self.knobs],
            "calibration": self.calibration,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def load_space(path: str | Path) -> Space:
    where = str(path)
    p = Path(path)
    if not p.is_file():
        raise CimcError("space file not found; write a SPACE.toml (see examples/)", where)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise CimcError(f"invalid TOML: {e}", where) from None
    except UnicodeDecodeError as e:
        raise CimcError(f"not a UTF-8 TOML file: {e.reason}", where) from None
    unknown = sorted(set(data) - {"base", "compile", "knobs"})
    if unknown:
        raise CimcError(f"unknown key '{unknown[0]}'; expected base, [compile], [knobs]", where)
    base = _base(data.get("base"), p, where)
    base_arch = read_arch_toml(base)
    load_arch(base)  # the base itself must be valid: its errors name its own file
    fixed, calibration = _compile_table(data.get("compile", {}), p, where)
    knobs = data.get("knobs")
    if not isinstance(knobs, dict) or not knobs:
        raise CimcError("no [knobs] table: name at least one knob to vary", where)
    parsed = tuple(_knob(name, spec, where) for name, spec in knobs.items())
    return Space(where, base, base_arch, fixed, parsed, calibration)


def _base(value: object, space: Path, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise CimcError(
            "'base' must name an arch preset or a TOML file, e.g. base = \"default\"", where
        )
    if value.endswith(".toml") or "/" in value:
        resolved = (space.parent / value).resolve()
        if not resolved.is_file():
            raise CimcError(f"base arch file {value!r} not found (paths are relative to it)", where)
        return str(resolved)
    try:
        preset_path(value)
    except CimcError as e:
        raise CimcError(f"'base': {e.message}", where) from None
    return value


def _compile_table(table: object, space: Path, where: str) -> tuple[dict[str, Value], str | None]:
    if not isinstance(table, dict):
        raise CimcError("'compile' must be a table [compile] of compiler options", where)
    fixed: dict[str, Value] = {}
    calibration = None
    for key, value in table.items():
        if key == "calibration":
            if not isinstance(value, str) or not (space.parent / value).is_file():
                raise CimcError(f"compile.calibration: file {value!r} not found", where)
            calibration = str((space.parent / value).resolve())
            continue
        if key not in COMPILE_OPTIONS:
            known = ", ".join([*COMPILE_OPTIONS, "calibration"])
            raise CimcError(f"unknown compiler option 'compile.{key}'; expected {known}", where)
        fixed[key] = _value(f"compile.{key}", COMPILE_OPTIONS[key], value, where)
    return fixed, calibration


def _knob(name: str, spec: object, where: str) -> Knob:
    kind = _knob_type(name, where)
    if isinstance(spec, list):
        if not spec:
            raise CimcError(f"knob '{name}': an empty list of values", where)
        values = tuple(_value(f"knob '{name}'", kind, v, where) for v in spec)
        if len(set(values)) != len(values):
            raise CimcError(f"knob '{name}': a value is listed twice", where)
        return Knob(name, kind, values)
    if isinstance(spec, dict):
        return _range(name, kind, spec, where)
    raise CimcError(
        f"knob '{name}': expected a list of values or a range {{low = .., high = ..}}, "
        f"got {spec!r}",
        where,
    )


def _knob_type(name: str, where: str) -> object:
    if name.startswith("compile."):
        option = name.removeprefix("compile.")
        if option not in COMPILE_OPTIONS:
            raise CimcError(
                f"unknown knob '{name}'; compiler knobs: "
                + ", ".join(f"compile.{o}" for o in COMPILE_OPTIONS),
                where,
            )
        return COMPILE_OPTIONS[option]
    types = field_types()
    if name not in types:
        raise CimcError(
            f"unknown knob '{name}'; expected an arch field (section.field, e.g. "
            "core.macros: see isa/SPEC.md section 9) or "
            + ", ".join(f"compile.{o}" for o in COMPILE_OPTIONS),
            where,
        )
    return types[name]


def _range(name: str, kind: object, spec: dict[str, Any], where: str) -> Knob:
    unknown = sorted(set(spec) - {"low", "high", "log"})
    if unknown or "low" not in spec or "high" not in spec:
        raise CimcError(f"knob '{name}': a range is {{low = .., high = .., log = ..}}", where)
    if kind not in (int, float):
        raise CimcError(f"knob '{name}': a range needs a numeric field; list the values", where)
    low = _value(f"knob '{name}'", kind, spec["low"], where)
    high = _value(f"knob '{name}'", kind, spec["high"], where)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise CimcError(f"knob '{name}': log must be true or false", where)
    assert isinstance(low, int | float) and isinstance(high, int | float)
    if not low < high:
        raise CimcError(f"knob '{name}': low ({low}) must be below high ({high})", where)
    if log and low <= 0:
        raise CimcError(f"knob '{name}': a log range needs low > 0, got {low}", where)
    return Knob(name, kind, (), float(low), float(high), log)


def _value(where_name: str, kind: object, value: object, where: str) -> Value:
    if kind == "mesh":
        if not isinstance(value, str) or not MESH.match(value):
            raise CimcError(
                f'{where_name}: a mesh is written "XxY" (e.g. "2x2"), got {value!r}', where
            )
        return value
    if isinstance(kind, tuple):
        if value not in kind:
            raise CimcError(
                f"{where_name}: {value!r} is not one of {', '.join(kind)}",
                where,
            )
        return str(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CimcError(f"{where_name}: expected a number, got {value!r}", where)
    if kind is int and not isinstance(value, int):
        raise CimcError(f"{where_name}: expected an integer, got {value!r}", where)
    if not math.isfinite(value):
        raise CimcError(f"{where_name}: expected a finite number, got {value!r}", where)
    return value if kind is int else float(value)
