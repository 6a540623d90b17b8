"""`torch.compile(module, backend="cimc")`: each graph TorchDynamo captures is compiled by
cimc and runs on the bit-exact interpreter.

    compiled = torch.compile(model, backend="cimc", dynamic=False, options={"arch": "tiny"})
    logits = compiled(input_ids, attention_mask)

Registered under the name "cimc" through the `torch_dynamo_backends` entry point of
pyproject.toml (an installed cimc is found by torch without an import). `options` are
cimc.compile's keywords (arch, seq_len, calibration, pipeline, streaming, ...).

Dynamo hands a module's parameters and buffers to the backend as graph inputs; they are
bound here as the compiled program's constants (a weight-stationary program holds its
weights), so changing them after compilation has no effect on the compiled graph. A graph
break splits the model into several captured graphs: each is compiled on its own and the
Python between them runs eagerly, as with any backend. Shapes are static: compile with
`dynamic=False` (a new input shape recompiles).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from cimc.errors import CimcError
from cimc.model import CompiledModel, compile


class Bound(torch.nn.Module):
    """A captured graph with its module state (parameters, buffers) bound as buffers, so
    torch.export sees them as constants, and its other arguments taken by name (the names
    the model's code gave them: they tell cimc which input holds token ids or a mask)."""

    def __init__(
        self, graph: torch.fx.GraphModule, state: Mapping[int, torch.Tensor], names: Sequence[str]
    ) -> None:
        super().__init__()
        self.graph_module = graph
        self.names = tuple(names)  # per argument position; "" for module state
        for k, tensor in state.items():
            self.register_buffer(f"state_{k}", tensor.detach())

    def forward(self, **inputs: torch.Tensor) -> Any:
        args = [
            inputs[name] if name else getattr(self, f"state_{k}")
            for k, name in enumerate(self.names)
        ]
        return self.graph_module(*args)


def cimc_backend(
    gm: torch.fx.GraphModule,
    example_inputs: Sequence[Any],
    options: Mapping[str, Any] | None = None,
) -> Callable[..., Any]:
    """The backend torch.compile calls once per captured graph."""
    _check_static(example_inputs)
    state = module_state(gm, example_inputs)
    names = input_names(gm, state)
    bound = Bound(gm, state, names).eval()
    user = {name: x for name, x in zip(names, example_inputs, strict=True) if name}
    model = compile(bound, example_inputs=user, **dict(options or {}))
    return _runner(model, names)


def _runner(model: CompiledModel, names: Sequence[str]) -> Callable[..., Any]:
    def run(*args: Any) -> Any:
        return model.run(**{name: x for name, x in zip(names, args, strict=True) if name})

    run.compiled_model = model  # type: ignore[attr-defined]  # for inspection and tests
    return run


def input_names(gm: torch.fx.GraphModule, state: Mapping[int, torch.Tensor]) -> list[str]:
    """Per argument position, the local variable it came from (`input_ids`), unique, or ""
    for module state."""
    names: list[str] = []
    for k, node in enumerate(n for n in gm.graph.nodes if n.op == "placeholder"):
        if k in state:
            names.append("")
            continue
        source = getattr(node.meta.get("grapharg"), "source", None)
        base = re.sub(r"\W", "_", getattr(source, "local_name", "") or f"input_{k}")
        name = base if base.isidentifier() else f"input_{k}"
        names.append(name if name not in names else f"{name}_{k}")
    return names


def module_state(
    gm: torch.fx.GraphModule, example_inputs: Sequence[Any]
) -> dict[int, torch.Tensor]:
    """{argument position: tensor} of the graph's inputs that are module parameters or
    buffers (dynamo records where each placeholder came from)."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    state = {}
    for k, (node, example) in enumerate(zip(placeholders, example_inputs, strict=True)):
        if isinstance(example, torch.nn.Parameter) or _from_module(node):
            state[k] = example
    return state


def _from_module(node: torch.fx.Node) -> bool:
    arg = node.meta.get("grapharg")
    source = getattr(arg, "source", None)
    if source is None:
        return False
    kind = source.guard_source  # a property in recent torch, a method before
    kind = kind() if callable(kind) else kind
    return bool(kind.is_unspecialized_nn_module() or kind.is_specialized_nn_module())


def _check_static(example_inputs: Sequence[Any]) -> None:
    for k, x in enumerate(example_inputs):
        if not isinstance(x, torch.Tensor):
            raise CimcError(
                f"captured graph input {k} is a {type(x).__name__} (a dynamic shape?); cimc "
                'compiles static shapes: torch.compile(module, backend="cimc", dynamic=False)',
                "torch.compile",
            )
