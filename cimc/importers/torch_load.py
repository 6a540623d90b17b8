"""Loading torch programs: .pt2 files, ExportedPrograms, nn.Modules and fx.GraphModules.

Everything is brought to one form, a functional ExportedProgram (no in-place ops) plus a
concrete shape for every user input, with dynamic dims bound by `shapes` / `seq_len`.
"""

from __future__ import annotations

import contextlib
import os
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind

from cimc.errors import CimcError

ExampleInputs = torch.Tensor | Sequence[torch.Tensor] | Mapping[str, torch.Tensor]
Shapes = Mapping[str, Sequence[int]]


@dataclass(frozen=True)
class UserInput:
    """A tensor input of the program: its placeholder name, bound shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass(frozen=True)
class LoadedProgram:
    """A decomposed ExportedProgram and the bound shapes of its tensor inputs."""

    program: ExportedProgram
    inputs: tuple[UserInput, ...]
    source: str


def load_program(
    source: str | os.PathLike[str] | ExportedProgram | torch.nn.Module,
    example_inputs: ExampleInputs | None = None,
    shapes: Shapes | None = None,
    seq_len: int | None = None,
) -> LoadedProgram:
    """Load or export `source` and bind its dynamic dims (see module doc)."""
    where = describe(source)
    if isinstance(source, str | os.PathLike):
        program = load_pt2(os.fspath(source))
    elif isinstance(source, ExportedProgram):
        program = source
    elif isinstance(source, torch.nn.Module):
        program = export_module(source, example_inputs, where)
    else:
        raise CimcError(
            f"cannot import a {type(source).__name__}; pass a .pt2 path, an ExportedProgram, "
            "an nn.Module or an fx.GraphModule",
            "import",
        )
    if needs_functionalization(program):
        try:
            program = program.run_decompositions({})
        except Exception as exc:  # torch raises many types here; report the first line
            raise CimcError(
                f"torch could not functionalize the program: {first_line(exc)}", where
            ) from None
    inputs = bind_inputs(program, example_inputs, shapes, seq_len, where)
    return LoadedProgram(program, inputs, where)


# Higher-order ops the translator inlines itself (the others need torch's functionalization).
INLINED_HOPS = frozenset({"wrap_with_set_grad_enabled", "wrap_with_autocast"})


def needs_functionalization(program: ExportedProgram) -> bool:
    """Whether the graph mutates tensors or holds other higher-order ops.

    torch.export's graphs of inference models are usually functional already; functional-
    izing them (run_decompositions) costs seconds, so it is done only when needed.
    """
    for node in program.graph.nodes:
        target = node.target
        if node.op != "call_function":
            continue
        if isinstance(target, torch._ops.OpOverload) and target._schema.is_mutable:
            return True
        if isinstance(target, torch._ops.HigherOrderOperator) and str(target) not in INLINED_HOPS:
            return True
    return False


def describe(source: object) -> str:
    """A short location for messages: the file path or the kind of object."""
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    return f"<{type(source).__name__}>"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_pt2(path: str) -> ExportedProgram:
    """torch.export.load with errors a user can act on."""
    if not os.path.isfile(path):
        raise CimcError(
            "no such file; pass the path of a .pt2 file written by torch.export.save", path
        )
    if not zipfile.is_zipfile(path):
        raise CimcError("not a .pt2 archive (expected a zip written by torch.export.save)", path)
    guard = NoUnpickling()
    try:
        with guard, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns in several lines about bad files
            program = torch.export.load(path)
    except Exception as exc:  # corrupt or foreign archives raise anything
        if guard.refused:
            raise guard.error(path) from None
        raise CimcError(f"torch.export.load failed: {first_line(exc)}", path) from None
    if guard.refused:  # torch swallowed the refusal somewhere: still refuse the file
        raise guard.error(path)
    if not isinstance(program, ExportedProgram):
        raise CimcError("the archive does not hold an ExportedProgram", path)
    return program


_TORCH_LOADER_LOGS = ("torch.export", "torch._export.serde.serialize")


class _PickleRefused(Exception):
    """Raised in place of an unpickling call while a .pt2 archive is read."""


class NoUnpickling:
    """While active, torch.load runs only as weights_only=True (torch's allow-listed loader
    of tensors and containers, which the sample inputs of every .pt2 use), and the paths
    of torch.export.load that unpickle arbitrary objects (torch.load(weights_only=False),
    pickle.loads, TorchScript object pickles) raise instead: a .pt2 file is untrusted
    input, and unpickling it could run any code. Not thread-safe (patches module
    attributes for the duration of one load)."""

    def __init__(self) -> None:
        self.refused: str | None = None
        self._saved: list[tuple[object, str, object]] = []

    def __enter__(self) -> NoUnpickling:
        import logging
        import pickle

        for name in _TORCH_LOADER_LOGS:  # they log tracebacks for bad archives: one line only
            logger = logging.getLogger(name)
            self._saved.append((logger, "disabled", logger.disabled))
            logger.disabled = True

        real_load = torch.load

        def weights_only_load(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("weights_only") is False:
                return self._refuse("a pickled object (torch.load with weights_only=False)")
            kwargs["weights_only"] = True
            return real_load(*args, **kwargs)

        patches: list[tuple[object, str, object]] = [
            (torch, "load", weights_only_load),
            (pickle, "loads", lambda *a, **k: self._refuse("a pickled object (pickle.loads)")),
            (pickle, "load", lambda *a, **k: self._refuse("a pickled object (pickle.load)")),
            (torch._C, "_pickle_load_obj", lambda *a, **k: self._refuse("a TorchScript object")),
        ]
        for obj, name, replacement in patches:
            self._saved.append((obj, name, getattr(obj, name)))
            setattr(obj, name, replacement)
        return self

    def __exit__(self, *exc: object) -> None:
        for obj, name, original in reversed(self._saved):
            setattr(obj, name, original)
        self._saved.clear()

    def _refuse(self, what: str) -> Any:
        self.refused = self.refused or what
        raise _PickleRefused(what)

    def error(self, path: str) -> CimcError:
        return CimcError(
            f"the archive holds {self.refused}; cimc never unpickles model files (it could "
            "run arbitrary code): re-save the model with torch.export.save from plain tensors",
            path,
        )


def export_module(
    module: torch.nn.Module, example_inputs: ExampleInputs | None, where: str
) -> ExportedProgram:
    """torch.export.export(module.eval(), example_inputs); needs example inputs."""
    if example_inputs is None:
        raise CimcError(
            "importing a module needs example_inputs (a tensor, a tuple of tensors or a "
            "dict of keyword tensors) to export it with torch.export",
            where,
        )
    args, kwargs = split_inputs(example_inputs)
    with contextlib.suppress(NotImplementedError):  # ExportedProgram.module() refuses eval()
        module.eval()
    try:
        with torch.no_grad():
            return torch.export.export(module, args, kwargs)
    except Exception as exc:  # export failures come in many types
        raise CimcError(f"torch.export.export failed: {first_line(exc)}", where) from None


def split_inputs(example_inputs: ExampleInputs) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    return tuple(example_inputs), {}


def user_placeholders(program: ExportedProgram) -> list[torch.fx.Node]:
    """The placeholders that are user inputs (not parameters, buffers or constants)."""
    names = {
        spec.arg.name
        for spec in program.graph_signature.input_specs
        if spec.kind == InputKind.USER_INPUT
    }
    return [n for n in program.graph.nodes if n.op == "placeholder" and n.name in names]


def bind_inputs(
    program: ExportedProgram,
    example_inputs: ExampleInputs | None,
    shapes: Shapes | None,
    seq_len: int | None,
    where: str,
) -> tuple[UserInput, ...]:
    """A concrete shape for each tensor user input.

    Precedence: `shapes[name]`, then the example tensor of the same name, then the
    exported shape with its symbolic dims bound: a dim first seen on axis 0 is the batch
    (1), any other symbolic dim is the sequence (`seq_len`, required).
    """
    examples = example_shapes(program, example_inputs)
    shapes = dict(shapes or {})
    placeholders = [
        p for p in user_placeholders(program) if isinstance(p.meta.get("val"), torch.Tensor)
    ]
    unknown = sorted(set(shapes) - {p.name for p in placeholders})
    if unknown:
        known = ", ".join(p.name for p in placeholders)
        raise CimcError(
            f"shapes name unknown input(s) {', '.join(unknown)}; inputs: {known}", where
        )
    symbols: dict[str, int] = {}
    for p in placeholders:  # explicit shapes bind their symbols first
        given = shapes.get(p.name, examples.get(p.name))
        if given is not None:
            bind_given(p, tuple(int(d) for d in given), symbols, where)
    result = []
    for p in placeholders:
        val = p.meta["val"]
        dims = [
            bind_dim(d, axis, p.name, symbols, seq_len, where) for axis, d in enumerate(val.shape)
        ]
        result.append(UserInput(p.name, tuple(dims), val.dtype))
    check_ranges(program, symbols, where)
    return tuple(result)


def example_shapes(
    program: ExportedProgram, example_inputs: ExampleInputs | None
) -> dict[str, tuple[int, ...]]:
    """Shapes of the example tensors by placeholder name (positional ones in order)."""
    if example_inputs is None:
        return {}
    args, kwargs = split_inputs(example_inputs)
    flat = [*args, *kwargs.values()]
    tensors = [t for t in flat if isinstance(t, torch.Tensor)]
    placeholders = [
        p for p in user_placeholders(program) if isinstance(p.meta.get("val"), torch.Tensor)
    ]
    if len(tensors) != len(placeholders):
        return {}
    return {p.name: tuple(t.shape) for p, t in zip(placeholders, tensors, strict=True)}


def bind_given(
    p: torch.fx.Node, given: tuple[int, ...], symbols: dict[str, int], where: str
) -> None:
    exported = p.meta["val"].shape
    if len(given) != len(exported):
        raise CimcError(
            f"input {p.name} has rank {len(exported)} but its given shape {list(given)} "
            f"has rank {len(given)}",
            where,
        )
    for axis, (dim, size) in enumerate(zip(exported, given, strict=True)):
        if isinstance(dim, torch.SymInt) and not is_static(dim):
            symbols.setdefault(str(dim), size)
            if symbols[str(dim)] != size:
                raise CimcError(
                    f"input {p.name} axis {axis} is dim {dim}, already bound to "
                    f"{symbols[str(dim)]}, but its given shape says {size}",
                    where,
                )
        elif int(dim) != size:
            raise CimcError(
                f"input {p.name} was exported with static shape {list(map(int, exported))}; "
                f"it cannot take shape {list(given)} (re-export with dynamic_shapes)",
                where,
            )


def is_static(dim: Any) -> bool:
    return not isinstance(dim, torch.SymInt) or dim.node.expr.is_number


def bind_dim(
    dim: Any, axis: int, name: str, symbols: dict[str, int], seq_len: int | None, where: str
) -> int:
    if is_static(dim):
        return int(dim)
    key = str(dim)
    if key not in symbols:
        if axis == 0:
            symbols[key] = 1
        elif seq_len is None:
            raise CimcError(
                f"input {name} axis {axis} is dynamic ({key}); pass seq_len= or "
                f"shapes={{'{name}': [...]}} to bind it",
                where,
            )
        else:
            symbols[key] = int(seq_len)
    return symbols[key]


def check_ranges(program: ExportedProgram, symbols: dict[str, int], where: str) -> None:
    """Refuse bindings outside the range the program was exported for."""
    for symbol, bounds in program.range_constraints.items():
        size = symbols.get(str(symbol))
        if size is None:
            continue
        lower, upper = bounds.lower, bounds.upper
        if size < int(lower) or (upper.is_finite and size > int(upper)):
            raise CimcError(
                f"dim {symbol} bound to {size}, outside the exported range [{lower}, {upper}]",
                where,
            )
