"""How a compiled model is called: the caller's arguments onto graph inputs, graph outputs
back into the structure the source model returns.

For a torch source (nn.Module, ExportedProgram, .pt2) the structure is torch.export's: the
arguments flatten as `(args, kwargs)` against the export's input tree and the outputs
unflatten into its output tree (a tensor, a tuple, a dict, a Hugging Face ModelOutput...).
For an ONNX file, positional arguments follow the model's inputs (keywords by name) and
the result is one array, or a tuple in the model's output order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cimc.errors import CimcError


@dataclass(frozen=True)
class Signature:
    """Graph input names in call order (None: an argument the graph does not use, such as
    a constant), graph output names in result order, and the torch trees when known."""

    inputs: tuple[str | None, ...]
    outputs: tuple[str, ...]
    in_spec: Any = None  # torch.utils._pytree.TreeSpec of (args, kwargs)
    out_spec: Any = None  # TreeSpec of the result

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """{graph input name: value} for a call."""
        if self.in_spec is None:
            return self._by_name(args, kwargs)
        leaves = self._flat(args, kwargs)
        if len(leaves) != len(self.inputs):
            raise CimcError(f"got {len(leaves)} inputs, the model takes {len(self.inputs)}", "run")
        return {name: value for name, value in zip(self.inputs, leaves, strict=True) if name}

    def _by_name(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Positional arguments in graph input order, then keywords by name."""
        names = [n for n in self.inputs if n]
        if len(args) > len(names):
            raise CimcError(f"got {len(args)} positional inputs, the model takes {names}", "run")
        bound = dict(zip(names, args, strict=False))
        unknown = sorted(set(kwargs) - set(names))
        twice = sorted(set(kwargs) & set(bound))
        if unknown or twice:
            raise CimcError(f"inputs {unknown or twice} are not {names} (each once)", "run")
        bound.update(kwargs)
        missing = [n for n in names if n not in bound]
        if missing:
            raise CimcError(f"missing inputs {missing}; the model takes {names}", "run")
        return bound

    def _flat(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Any]:
        """The call's leaves, flattened against the export's input tree."""
        from torch.utils import _pytree as pytree

        keys = _kwarg_keys(self.in_spec)
        if set(kwargs) != set(keys):
            raise CimcError(
                f"keyword inputs {sorted(kwargs)} differ from the example's {sorted(keys)}",
                "run",
            )
        leaves, spec = pytree.tree_flatten((tuple(args), {k: kwargs[k] for k in keys}))
        if spec != self.in_spec:
            raise CimcError(
                "the inputs are not structured as the example inputs were "
                f"(expected {self.in_spec}, got {spec})",
                "run",
            )
        return leaves

    def structure(self, values: Mapping[str, Any]) -> Any:
        """The result: graph outputs placed into the source model's output structure."""
        leaves = [values[name] for name in self.outputs]
        if self.out_spec is not None:
            from torch.utils import _pytree as pytree

            return pytree.tree_unflatten(leaves, self.out_spec)
        return leaves[0] if len(leaves) == 1 else tuple(leaves)

    def as_metadata(self) -> dict[str, str]:
        """What a saved model records to be called the same way after `cimc.load`."""
        meta = {"signature_inputs": json.dumps(self.inputs)}
        meta["signature_outputs"] = json.dumps(self.outputs)
        for key, spec in (
            ("signature_in_spec", self.in_spec),
            ("signature_out_spec", self.out_spec),
        ):
            text = _dumps(spec)
            if text is not None:
                meta[key] = text
        return meta


def signature_from_metadata(metadata: Mapping[str, str]) -> Signature | None:
    if "signature_inputs" not in metadata:
        return None
    return Signature(
        tuple(json.loads(metadata["signature_inputs"])),
        tuple(json.loads(metadata["signature_outputs"])),
        _loads(metadata.get("signature_in_spec")),
        _loads(metadata.get("signature_out_spec")),
    )


def graph_signature(input_names: Sequence[str], output_names: Sequence[str]) -> Signature:
    """Positional inputs in graph order, one output or a tuple (ONNX models)."""
    return Signature(tuple(input_names), tuple(output_names))


def export_signature(
    program: Any, graph_inputs: Sequence[str], graph_outputs: Sequence[str]
) -> Signature:
    """The signature of a torch.export ExportedProgram whose translation has these graph
    inputs and outputs (the importer names inputs after placeholders, outputs in order)."""
    from torch.export.graph_signature import InputKind, OutputKind, TensorArgument

    known = set(graph_inputs)
    inputs = []
    for spec in program.graph_signature.input_specs:
        if spec.kind != InputKind.USER_INPUT:
            continue
        tensor = isinstance(spec.arg, TensorArgument) and spec.arg.name in known
        inputs.append(spec.arg.name if tensor else None)
    user_outputs = [
        s for s in program.graph_signature.output_specs if s.kind == OutputKind.USER_OUTPUT
    ]
    if len(user_outputs) != len(graph_outputs):
        raise CimcError(
            f"the program has {len(user_outputs)} outputs but its graph {len(graph_outputs)}",
            "compile",
        )
    spec = program.call_spec
    return Signature(tuple(inputs), tuple(graph_outputs), spec.in_spec, spec.out_spec)


def to_numpy(value: Any) -> np.ndarray:
    """A caller's tensor or array as numpy (torch tensors detached, on the CPU)."""
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _kwarg_keys(in_spec: Any) -> list[str]:
    kwargs_spec = in_spec.child(1) if hasattr(in_spec, "child") else in_spec.children_specs[1]
    return list(kwargs_spec.context or [])


def _dumps(spec: Any) -> str | None:
    """The tree as JSON, or None when torch cannot serialize it (an unregistered class)."""
    if spec is None:
        return None
    from torch.utils import _pytree as pytree

    try:
        return pytree.treespec_dumps(spec)
    except Exception:  # noqa: BLE001 - torch raises several types for unserializable nodes
        return None


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    from torch.utils import _pytree as pytree

    return pytree.treespec_loads(text)
