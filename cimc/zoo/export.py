"""The three ways users export a HF model: legacy ONNX, dynamo ONNX and torch.export.

Inputs are named ``input_ids`` and ``attention_mask`` ([batch, seq], int64); the output
is named ``output``. With ``dynamic=True`` the batch and sequence axes are symbolic (as
users export them), otherwise the example shape is baked in.

Measured with torch 2.13 / transformers 5.23 (sdpa attention, use_cache=False): all five
families (bert, distilbert, gpt2, llama, qwen2) export with all three exporters. LLaMA
and Qwen2 (GQA) do export with dynamo=False: HF's sdpa path calls repeat_kv explicitly
when tracing, so the legacy exporter never sees enable_gqa. torch.export specializes a
symbolic batch traced at 1, hence the batch-2 trace below. Dynamo exports are the slowest.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from cimc.errors import CimcError
from cimc.zoo.catalog import ONNX_EXPORTERS
from cimc.zoo.models import HiddenStates

EXPORTERS = ("legacy", "dynamo", "torch_export")
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "output"
MAX_SEQ = 64  # upper bound of the symbolic sequence axis for torch.export


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence exporter progress prints and warnings (they are not errors)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logger.setLevel(level)


def _dynamic_shapes(
    dynamic: bool, max_seq: int, inputs: tuple
) -> dict[str, dict[int, object]] | None:
    if not dynamic:
        return None
    batch = torch.export.Dim("batch", max=64)
    seq = torch.export.Dim("seq", max=max(max_seq, int(inputs[0].shape[1])))
    return {name: {0: batch, 1: seq} for name in INPUT_NAMES}


def _trace_inputs(inputs: tuple, dynamic: bool) -> tuple:
    """With symbolic axes, trace with batch 2: torch.export specializes a batch of 1."""
    if dynamic and inputs[0].shape[0] == 1:
        return tuple(t.repeat(2, 1) for t in inputs)
    return inputs


def export_torch(
    model: HiddenStates,
    inputs: tuple[torch.Tensor, torch.Tensor],
    dynamic: bool = True,
    max_seq: int = MAX_SEQ,
) -> torch.export.ExportedProgram:
    """`torch.export.export` of the model (strict=False, as HF recommends)."""
    with _quiet():
        return torch.export.export(
            model,
            _trace_inputs(inputs, dynamic),
            dynamic_shapes=_dynamic_shapes(dynamic, max_seq, inputs),
            strict=False,
        )


def export_onnx(
    model: HiddenStates,
    inputs: tuple[torch.Tensor, torch.Tensor],
    path: str | Path,
    exporter: str = "dynamo",
    dynamic: bool = True,
    opset: int = 18,
    external_data: bool = False,
    max_seq: int = MAX_SEQ,
) -> Path:
    """Export to ONNX with `exporter` (``legacy``: dynamo=False, ``dynamo``: dynamo=True).

    `external_data` stores the weights in a side file next to the model (as exporters
    do for models over 2 GiB). Returns the model path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if exporter == "legacy":
        _export_legacy(model, inputs, path, dynamic, opset)
    elif exporter == "dynamo":
        _export_dynamo(model, inputs, path, dynamic, opset, max_seq)
    else:
        raise CimcError(f"unknown ONNX exporter {exporter!r}; use {' or '.join(ONNX_EXPORTERS)}")
    if external_data:
        save_with_external_data(path)
    return path


def _export_legacy(
    model: HiddenStates, inputs: tuple, path: Path, dynamic: bool, opset: int
) -> None:
    axes = {name: {0: "batch", 1: "seq"} for name in INPUT_NAMES} if dynamic else None
    with _quiet():
        torch.onnx.export(
            model,
            inputs,
            str(path),
            dynamo=False,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=opset,
        )


def _export_dynamo(
    model: HiddenStates, inputs: tuple, path: Path, dynamic: bool, opset: int, max_seq: int
) -> None:
    with _quiet():
        program = torch.onnx.export(
            model,
            _trace_inputs(inputs, dynamic),
            dynamo=True,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_shapes=_dynamic_shapes(dynamic, max_seq, inputs),
            opset_version=opset,
        )
        assert program is not None
        program.save(str(path))


def save_with_external_data(path: Path) -> Path:
    """Rewrite `path` so that every initializer lives in ``<name>.data`` beside it."""
    import onnx

    model = onnx.load(str(path), load_external_data=True)
    data_name = path.name + ".data"
    (path.parent / data_name).unlink(missing_ok=True)
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data_name,
        size_threshold=0,
    )
    return path.parent / data_name
