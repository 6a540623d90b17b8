"""One trial of a sweep: the base arch with the trial's knob values, the model compiled for
it, the program's cost (and, with --verify, the interpreter against the integer golden).

`run_trial` runs in a worker process (a process pool's or a Ray task's): its job and result
are plain, picklable data. A trial whose arch is invalid or whose model does not compile for
it returns its one-line reason instead of figures; it never raises for bad input.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

from cimc.errors import CimcError

# The figures a trial records (user attributes of the Optuna trial, columns of the CSV).
METRICS = (
    "makespan_cycles",
    "latency_us",
    "energy_uj",
    "dynamic_energy_uj",
    "leakage_energy_uj",
    "area_mm2",
    "weight_bytes_loaded",
    "offchip_bytes",
    "macro_cell_utilization",
    "compute_utilization",
    "instructions",
)
OBJECTIVES = {"latency": "latency_us", "energy": "energy_uj", "area": "area_mm2"}
# The default pipeline, the quantizer's note on generated calibration inputs left out: the
# sweep says it once, not once per trial.
PIPELINE = "idioms,check-canonical,quantize{quiet=true},backend"


@dataclass(frozen=True)
class TrialJob:
    number: int
    model: str  # absolute path of the model file
    base_arch: dict[str, Any]  # parsed TOML of the space's base
    params: dict[str, Any]  # knob name -> value
    compile: dict[str, Any] = field(default_factory=dict)  # fixed compiler options
    calibration: str | None = None
    verify: bool = False


@dataclass(frozen=True)
class TrialResult:
    number: int
    params: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    bit_exact: bool | None = None
    error: str | None = None  # one line: why the trial failed
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def arch_data(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The base arch TOML with the trial's arch knobs set (chip.mesh "XxY" also sets
    chip.cores, unless chip.cores is a knob of its own)."""
    data = copy.deepcopy(base)
    for name, value in params.items():
        if name.startswith("compile."):
            continue
        section, key = name.split(".", 1)
        if name == "chip.mesh":
            x, y = (int(v) for v in str(value).split("x"))
            data[section][key] = [x, y]
            if "chip.cores" not in params:
                data["chip"]["cores"] = x * y
        else:
            data[section][key] = value
    return data


def run_trial(job: TrialJob) -> TrialResult:
    start = time.perf_counter()
    try:
        metrics, bit_exact = _measure(job)
    except CimcError as e:
        return TrialResult(job.number, job.params, error=_one_line(str(e)), seconds=_since(start))
    except Exception as e:  # a bug met on this arch: recorded, the sweep goes on
        reason = f"internal error: {type(e).__name__}: {e}"
        return TrialResult(job.number, job.params, error=_one_line(reason), seconds=_since(start))
    return TrialResult(job.number, job.params, metrics, bit_exact, seconds=_since(start))


def _measure(job: TrialJob) -> tuple[dict[str, float], bool | None]:
    from cimc.machine.arch import arch_from_dict
    from cimc.machine.summary import summarize
    from cimc.pipeline import PipelineOptions, compile_model
    from cimc.verify import weight_bytes_loaded

    arch = arch_from_dict(arch_data(job.base_arch, job.params), f"arch of trial {job.number}")
    options = {**job.compile}
    options.update(
        {k.removeprefix("compile."): v for k, v in job.params.items() if k.startswith("compile.")}
    )
    pipeline = PipelineOptions(
        pipeline=PIPELINE,
        seq_len=options.get("seq_len"),
        streaming=options.get("streaming"),
        mapping=options.get("mapping"),
        stages=options.get("stages"),
        micro_batches=options.get("micro_batches"),
        calibration=job.calibration,
    )
    result = compile_model(job.model, arch, pipeline)
    program = result.compiled.program
    s = summarize(program, arch)
    peak = arch.chip.cores * arch.core.macros * arch.macro_bytes / arch.mvm_cycles_per_vector
    offchip = sum(
        m.read_bytes + m.written_bytes for m in s.memory_levels if m.level in ("dram", "flash")
    )
    metrics = {
        "makespan_cycles": s.makespan_cycles,
        "latency_us": s.time_us,
        "energy_uj": s.energy_uj,
        "dynamic_energy_uj": s.dynamic_energy_uj,
        "leakage_energy_uj": s.leakage_energy_uj,
        "area_mm2": s.area_mm2,
        "weight_bytes_loaded": weight_bytes_loaded(program),
        "offchip_bytes": offchip,
        "macro_cell_utilization": s.macro_cell_utilization,
        "compute_utilization": s.macs / (s.makespan_cycles * peak) if s.makespan_cycles else 0.0,
        "instructions": sum(len(stream.instrs) for stream in program.cores),
    }
    bit_exact = None
    if job.verify:
        from cimc.reference.float_model import default_inputs
        from cimc.verify import verify_compiled

        inputs = default_inputs(result.float_graph, seed=0)
        bit_exact = verify_compiled(result.compiled, result.float_graph, inputs).bit_exact
    return metrics, bit_exact


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 3)
