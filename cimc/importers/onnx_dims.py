"""Bind the symbolic dimensions of the graph inputs to numbers.

Rules, in order: an explicit ``shapes[input]`` wins; `seq_len` binds axis 1 (the sequence
axis) of every input of rank >= 2; a symbolic axis 0 is the batch and defaults to 1 (cimc
compiles one sequence at a time). A symbolic name bound once is bound everywhere it
occurs. Anything still unbound is a CimcError naming the input, the axis and the flag.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from cimc.errors import CimcError

DEFAULT_BATCH = 1


@dataclass(frozen=True)
class InputSpec:
    """One graph input as declared in the ONNX file (dims: int, or str when symbolic)."""

    name: str
    elem_type: int
    dims: tuple[int | str, ...]


def graph_inputs(model: onnx.ModelProto) -> list[InputSpec]:
    """The real inputs (initializers listed as inputs by old exporters are skipped)."""
    initializers = {t.name for t in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise CimcError(f"input '{value.name}' is not a tensor", "onnx")
        dims: list[int | str] = []
        for k, dim in enumerate(tensor.shape.dim):
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            else:
                dims.append(dim.dim_param or f"{value.name}.{k}")
        specs.append(InputSpec(value.name, tensor.elem_type, tuple(dims)))
    return specs


def bind_shapes(
    specs: list[InputSpec],
    shapes: dict[str, tuple[int, ...]] | None = None,
    seq_len: int | None = None,
) -> dict[str, tuple[int, ...]]:
    """A static shape for every input; see the module docstring for the rules."""
    shapes = dict(shapes or {})
    unknown = sorted(set(shapes) - {s.name for s in specs})
    if unknown:
        names = ", ".join(s.name for s in specs)
        raise CimcError(f"shapes given for unknown input(s) {', '.join(unknown)}; inputs: {names}")
    if seq_len is not None and seq_len < 1:
        raise CimcError(f"seq_len must be >= 1, got {seq_len}")
    symbols: dict[str, int] = {}
    for spec in specs:
        if spec.name in shapes:
            _bind_explicit(spec, tuple(shapes[spec.name]), symbols)
    for spec in specs:
        for axis, dim in enumerate(spec.dims):
            if isinstance(dim, str) and dim not in symbols:
                value = _default(spec, axis, seq_len)
                if value is not None:
                    symbols[dim] = value
    return {spec.name: _resolve(spec, symbols) for spec in specs}


def _bind_explicit(spec: InputSpec, shape: tuple[int, ...], symbols: dict[str, int]) -> None:
    if any(int(d) == 0 for d in shape):
        raise CimcError(
            f"input '{spec.name}' of shape {list(shape)} is empty; cimc compiles non-empty "
            "tensors only",
            spec.name,
        )
    if len(shape) != len(spec.dims) or any(int(d) < 1 for d in shape):
        raise CimcError(
            f"shape {list(shape)} given for input '{spec.name}' does not fit its declared "
            f"shape {list(spec.dims)}",
            spec.name,
        )
    for axis, (dim, value) in enumerate(zip(spec.dims, shape, strict=True)):
        if isinstance(dim, int) and dim != value:
            raise CimcError(
                f"axis {axis} of input '{spec.name}' is fixed to {dim} in the model, "
                f"but the shape given says {value}",
                spec.name,
            )
        if isinstance(dim, str):
            if symbols.get(dim, value) != value:
                raise CimcError(
                    f"dim '{dim}' is bound to both {symbols[dim]} and {value}", spec.name
                )
            symbols[dim] = int(value)


def _default(spec: InputSpec, axis: int, seq_len: int | None) -> int | None:
    if axis == 0:
        return DEFAULT_BATCH
    if axis == 1 and seq_len is not None:
        return seq_len
    return None


def _resolve(spec: InputSpec, symbols: dict[str, int]) -> tuple[int, ...]:
    shape = []
    for axis, dim in enumerate(spec.dims):
        if isinstance(dim, int):
            shape.append(dim)
        elif dim in symbols:
            shape.append(symbols[dim])
        else:
            hint = "seq_len=N (--seq-len N)" if axis == 1 else ""
            flag = f"shapes={{'{spec.name}': (...)}} (--shape {spec.name}=AxBx...)"
            raise CimcError(
                f"axis {axis} ('{dim}') of input '{spec.name}' is dynamic and unbound; "
                f"pass {hint + ' or ' if hint else ''}{flag}",
                spec.name,
            )
    return tuple(shape)
