"""Machine state of the interpreter: byte memories, strided views onto them, macros, FIFOs.

Every memory is a flat little-endian `uint8` array (`np.zeros` is lazily backed, so a large
DRAM costs nothing until touched). A `View` becomes a writable strided numpy array on that
buffer, never a copy.
"""

from __future__ import annotations

import functools
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np

from cimc.machine.arch import Arch
from cimc.machine.flash import FlashConsts
from cimc.machine.kernels import KernelError
from cimc.machine.program import Imm, Instr, MacroRef, Operand, View

NP_DTYPES: dict[str, np.dtype] = {
    "i8": np.dtype("<i1"),
    "i16": np.dtype("<i2"),
    "i32": np.dtype("<i4"),
    "i64": np.dtype("<i8"),
}
_RANGES: dict[str, tuple[int, int]] = {
    name: (int(np.iinfo(dt).min), int(np.iinfo(dt).max)) for name, dt in NP_DTYPES.items()
}
SHARED = ("gb", "dram", "flash")
# The ufunc reductions themselves: ndarray.min / max add a Python wrapper per call.
_minimum, _maximum = np.minimum.reduce, np.maximum.reduce
# Float copies of recently used macros, so an MVM does not convert its weights every time.
_FLOAT_CACHE_MACROS = 512


@functools.lru_cache(maxsize=4096)
def _immediate(value: int) -> np.ndarray:
    """An immediate as a read-only 0-d int64 array, made once per value."""
    array = np.asarray(value, dtype=np.int64)
    array.flags.writeable = False
    return array


@dataclass
class MacroState:
    """One macro's int8 cells and which of them were written.

    Programs load whole macros as a rule (BERT-base on `large` uses 6,144 of them), so the
    per-cell written bits exist only once a window smaller than the macro is written:
    until then `all_written` says all or nothing (half the memory a run touches for
    macros, and no bit updates on a full load)."""

    weights: np.ndarray  # rows x cols int8
    written: np.ndarray | None = None  # rows x cols bool, after a partial write
    all_written: bool = False

    def write(self, window: tuple[slice, slice], data: np.ndarray) -> None:
        self.weights[window] = data
        if self.all_written:
            return
        if self.written is None:
            if self.weights[window].size == self.weights.size:
                self.all_written = True
                return
            self.written = np.zeros(self.weights.shape, bool)
        self.written[window] = True
        if self.written.all():
            self.all_written, self.written = True, None

    def unwritten(self, window: tuple[slice, slice]) -> tuple[int, int] | None:
        """The first cell of `window` no write reached (window coordinates), or None."""
        if self.all_written:
            return None
        if self.written is None:
            return (0, 0)
        missing = ~self.written[window]
        if not missing.any():
            return None
        r, c = np.argwhere(missing)[0]
        return int(r), int(c)

    def mask(self) -> np.ndarray:
        """The written bits of every cell."""
        if self.written is not None:
            return self.written.copy()
        return np.full(self.weights.shape, self.all_written, bool)

    def restore(self, weights: np.ndarray, mask: np.ndarray) -> None:
        """Cells and written bits as `weights` and `mask` give them (a persisted macro)."""
        self.weights[...] = weights
        bits = np.array(np.broadcast_to(mask, self.weights.shape), bool)  # shape checked as cells
        self.all_written = bool(bits.all())
        self.written = None if self.all_written or not bits.any() else bits


@dataclass
class CoreState:
    core: int
    instrs: tuple[Instr, ...]
    pc: int = 0
    halted: bool = False
    barriers: int = 0  # barriers reached so far (including the one it may wait at)
    at_barrier: bool = False
    # The FIFO (sender, receiver, tag) an unfinished recv waits on: the run loop skips the
    # core until a message is there, instead of retrying the recv every round.
    waits_on: tuple[int, int, int] | None = None


@dataclass(slots=True)
class Message:
    """A `send` in flight: a copy of the data plus where it came from (for recv's errors)."""

    data: np.ndarray
    dtype: str
    instr: Instr


@dataclass
class Machine:
    """The whole chip's state during one run."""

    arch: Arch
    cores: list[CoreState]
    shared: dict[str, np.ndarray] = field(default_factory=dict)
    scratchpads: dict[int, np.ndarray] = field(default_factory=dict)
    macros: dict[tuple[int, int], MacroState] = field(default_factory=dict)
    fifos: dict[tuple[int, int, int], deque[Message]] = field(default_factory=dict)
    float_cache: OrderedDict[tuple[int, int], np.ndarray] = field(default_factory=OrderedDict)
    macs: int = 0
    # Arrays of the views used so far: a view is checked and built once per run, not at
    # every execution (memories are never reallocated during a run, so they stay valid).
    # Keyed by (core, id(view)); the entry holds the view, so its id cannot be reused. The
    # builder and the parser make equal views one object, so this is per distinct view.
    views: dict[tuple[int, int], tuple[View, np.ndarray]] = field(default_factory=dict)
    # Cores that reached their n-th barrier, by n (a barrier releases when all have).
    barrier_arrivals: dict[int, int] = field(default_factory=dict)
    # The index column each data-dependent instruction read, by (core, pc): what the cost
    # model needs to price that run (cimc/machine/dynamic.py).
    dynamic: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    # Flash constants read in place (cimc/machine/flash.py); copied into the flat flash
    # memory only if a view needs it (`flash_filled`).
    flash_consts: FlashConsts = field(default_factory=FlashConsts)
    flash_filled: bool = False

    @classmethod
    def create(cls, arch: Arch, cores: list[CoreState], extents: dict[str, int]) -> Machine:
        """Memories sized to `extents` (bytes per space that the program can touch, at most
        the arch's sizes): a program on a 256 GiB DRAM allocates only what it addresses."""
        size = {s: min(extents.get(s, 0), arch.space_bytes(s)) for s in ("sp", *SHARED)}
        shared = {s: np.zeros(size[s], np.uint8) for s in SHARED}
        sps = {c.core: np.zeros(size["sp"], np.uint8) for c in cores}
        return cls(arch=arch, cores=cores, shared=shared, scratchpads=sps)

    def drop_caches(self) -> None:
        """Forget the run's view arrays and message queues (hundreds of thousands of small
        objects for a large model). Called while garbage collection is still paused: freed
        by reference counting they cost little, but the first collection after the pause
        would walk every one of them (benchmarks/FINDINGS.md, "Interpreter: no GC during a
        run")."""
        self.views.clear()
        self.fifos.clear()

    def memory(self, core: int, space: str) -> np.ndarray:
        return self.scratchpads[core] if space == "sp" else self.shared[space]

    def array(self, core: int, view: View) -> np.ndarray:
        """The view as a writable strided array on its memory (bounds and alignment checked)."""
        entry = self.views.get((core, id(view)))
        if entry is not None and entry[0] is view:
            return entry[1]
        array = self._new_array(core, view)
        self.views[(core, id(view))] = (view, array)
        return array

    def _new_array(self, core: int, view: View) -> np.ndarray:
        mem = self.scratchpads[core] if view.space == "sp" else self.shared[view.space]
        dtype = NP_DTYPES[view.dtype]
        size, addr, rows, cols = dtype.itemsize, view.addr, view.rows, view.cols
        if addr % size:
            raise KernelError(
                f"{view.space}[{addr:#x}] is not aligned to {size} bytes for {view.dtype}"
            )
        end = addr + ((rows - 1) * view.stride + cols) * size  # View.end, inlined: hot path
        if addr < 0 or end > mem.size:  # memories cover every view of the program
            raise KernelError(
                f"{view.space}[{addr:#x}:{end:#x}] is outside {view.space} "
                f"({self.arch.space_bytes(view.space)} bytes)"
            )
        if view.space == "flash":
            mem, addr = self._flash_memory(mem, addr, end)
        # One row: the stride is never used, and may exceed what numpy accepts (2^63 bytes).
        row_step = (view.stride if rows > 1 else cols) * size
        return np.ndarray((rows, cols), dtype, mem, addr, (row_step, size))

    def _flash_memory(self, flat: np.ndarray, addr: int, end: int) -> tuple[np.ndarray, int]:
        """The bytes a flash view at [addr, end) reads, and its offset in them: a constant
        in place, else the flat memory (holding every constant from then on)."""
        found = self.flash_consts.find(addr, end)
        if found is not None:
            return found
        if not self.flash_filled:
            self.flash_consts.copy_into(flat)
            self.flash_filled = True
        return flat, addr

    def read(self, core: int, op: Operand) -> np.ndarray:
        """A view or immediate operand as int64 (immediates as 0-d arrays, for broadcasting)."""
        if isinstance(op, Imm):
            return _immediate(op.value)
        assert isinstance(op, View)
        return self.array(core, op).astype(np.int64, copy=False)  # kernels never write operands

    def store(
        self, core: int, view: View, values: np.ndarray, known: tuple[int, int] | None = None
    ) -> None:
        """Write int64 results to a view; a value outside the view's dtype is an error.

        `known` bounds the values when the kernel knows them (the check is then skipped when
        they fit)."""
        low, high = _RANGES[view.dtype]
        fits = view.dtype == "i64" or (known is not None and low <= known[0] and known[1] <= high)
        if not fits and (_minimum(values, axis=None) < low or _maximum(values, axis=None) > high):
            bad = (values < low) | (values > high)
            index = tuple(int(i) for i in np.argwhere(np.broadcast_to(bad, view.shape))[0])
            value = np.broadcast_to(values, view.shape)[index]
            raise KernelError(
                f"result {value} at element {index} does not fit the destination's "
                f"{view.dtype} range [{low}, {high}]"
            )
        self.array(core, view)[...] = values

    def macro(self, core: int, ref: MacroRef) -> MacroState:
        """The macro a reference names, created empty on first use (bounds checked)."""
        rows, cols = self.arch.macro.rows, self.arch.macro.cols
        if not 0 <= ref.index < self.arch.core.macros:
            raise KernelError(
                f"macro m{ref.index} does not exist (m0..m{self.arch.core.macros - 1})"
            )
        if not (0 <= ref.r0 < ref.r1 <= rows and 0 <= ref.c0 < ref.c1 <= cols):
            raise KernelError(
                f"window m{ref.index}[{ref.r0}:{ref.r1},{ref.c0}:{ref.c1}] is outside the "
                f"{rows}x{cols} macro"
            )
        key = (core, ref.index)
        if key not in self.macros:
            self.macros[key] = MacroState(np.zeros((rows, cols), np.int8))
        return self.macros[key]

    def write_macro(self, core: int, ref: MacroRef, data: np.ndarray) -> None:
        self.macro(core, ref).write((slice(ref.r0, ref.r1), slice(ref.c0, ref.c1)), data)
        self.float_cache.pop((core, ref.index), None)

    def macro_window_f32(self, core: int, ref: MacroRef) -> np.ndarray:
        """The window's weights as float32 (exact for int8); every cell must be written."""
        state = self.macro(core, ref)
        window = (slice(ref.r0, ref.r1), slice(ref.c0, ref.c1))
        cell = state.unwritten(window)
        if cell is not None:
            r, c = cell
            raise KernelError(
                f"macro m{ref.index} cell ({ref.r0 + r}, {ref.c0 + c}) is read before any "
                "mload wrote it"
            )
        key = (core, ref.index)
        full = self.float_cache.get(key)
        if full is None:
            full = state.weights.astype(np.float32)
            self.float_cache[key] = full
            if len(self.float_cache) > _FLOAT_CACHE_MACROS:
                self.float_cache.popitem(last=False)
        else:
            self.float_cache.move_to_end(key)
        return full[window]
