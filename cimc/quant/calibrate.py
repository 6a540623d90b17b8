"""Calibration: run the float reference on sample inputs and record each value's range.

    data = calibration_data(graph, "calib.npz")      # or None: generated inputs (data.note)
    calib = calibrate(graph, data, method="max")
    calib.ranges["fc"]                                # |x| <= R over the samples

A calibration file is an .npz with one array per graph input, named after it, samples on
the leading axis: shape [N, *input shape] (or [N, *input shape[1:]] for a batch-1 input).
Without a file, inputs are generated from their meaning (token ids inside the embedding
table, masks of ones, positions 0..S-1, Gaussian floats) and the note says so.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cimc.errors import CimcError
from cimc.ir.graph import Graph, Node
from cimc.ir.op_base import Op
from cimc.ir.ops import Attention, Constant, Embedding, Im2col, Input, Linear
from cimc.ir.types import DType
from cimc.progress import report
from cimc.quant import constants as qc
from cimc.quant.scales import DATA_MOVEMENT, through_data_movement
from cimc.reference.float_model import FloatModel, default_inputs

Sample = dict[str, np.ndarray]
DEFAULT_SAMPLES = 8
ROWS = 256  # rows of each linear input kept to choose smoothing by measured error


@dataclass(frozen=True)
class CalibrationData:
    """Input samples for calibration; `generated` is True when no file was given."""

    samples: list[Sample]
    generated: bool
    note: str


@dataclass(frozen=True)
class Calibration:
    """Calibrated absolute ranges of every float value (and of attention logits)."""

    ranges: dict[str, float]  # node name -> R with |x| <= R (or the chosen percentile)
    logit_ranges: dict[str, float]  # attention node -> range of q k^T * scale where allowed
    channel_ranges: dict[str, np.ndarray] = field(default_factory=dict)  # last-axis absmax
    rows: dict[str, np.ndarray] = field(default_factory=dict)  # linear inputs: sampled rows
    samples: int = 0
    generated: bool = False
    note: str = ""
    method: str = "max"


def calibration_data(
    graph: Graph,
    path: str | Path | None = None,
    count: int = DEFAULT_SAMPLES,
    seed: int = 0,
) -> CalibrationData:
    """Samples from `path` (validated), or `count` generated ones when path is None."""
    if path is not None:
        samples = load_calibration_file(graph, path)
        return CalibrationData(samples, False, f"calibrated on {len(samples)} samples from {path}")
    samples = generated_samples(graph, count, seed)
    note = (
        f"no calibration file given: calibrated on {count} generated inputs (random token "
        "ids inside the vocabulary, masks of ones, positions 0..S-1); pass --calibration "
        "FILE.npz with real inputs for better scales"
    )
    return CalibrationData(samples, True, note)


def generated_samples(graph: Graph, count: int = DEFAULT_SAMPLES, seed: int = 0) -> list[Sample]:
    """`count` input sets generated from the inputs' meaning (seeds seed..seed+count-1)."""
    if count < 1:
        raise CimcError(f"need at least one calibration sample, got {count}", "calibration")
    return [default_inputs(graph, seed=seed + k) for k in range(count)]


def load_calibration_file(graph: Graph, path: str | Path) -> list[Sample]:
    """Read and validate a calibration .npz (no pickles); returns one input dict per sample."""
    where = str(path)
    if not Path(path).is_file():
        raise CimcError("calibration file not found", where)
    if not zipfile.is_zipfile(path):
        raise CimcError("not a valid .npz file; save the arrays with numpy.savez", where)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in sorted(npz.files)}
    except ValueError:
        raise CimcError(
            "cannot read arrays: object arrays (pickles) are not accepted", where
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise CimcError(f"not a valid .npz file ({e}); save it with numpy.savez", where) from None
    inputs = graph.input_nodes()
    _check_names(arrays, [n.name for n in inputs], where)
    checked = {n.name: _check_array(graph, n, arrays[n.name], where) for n in inputs}
    counts = sorted({len(a) for a in checked.values()})
    if len(counts) != 1:
        listed = ", ".join(f"{k}: {len(v)}" for k, v in checked.items())
        raise CimcError(f"arrays disagree on the number of samples ({listed})", where)
    if counts[0] < 1:
        raise CimcError("the calibration arrays hold no samples", where)
    return [{name: a[k] for name, a in checked.items()} for k in range(counts[0])]


def _check_names(arrays: Mapping[str, np.ndarray], names: list[str], where: str) -> None:
    missing = [n for n in names if n not in arrays]
    extra = [n for n in arrays if n not in names]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing arrays for inputs {', '.join(missing)}")
        if extra:
            parts.append(f"arrays {', '.join(extra)} match no graph input")
        raise CimcError(f"{'; '.join(parts)} (graph inputs: {', '.join(names)})", where)


def _check_array(graph: Graph, node: Node, array: np.ndarray, where: str) -> np.ndarray:
    t = node.type
    at = f"{where}: array '{node.name}'"
    shape = tuple(array.shape)
    if shape[1:] != t.shape:
        if t.shape and t.shape[0] == 1 and shape[1:] == t.shape[1:] and len(shape) == t.rank:
            array = array.reshape((shape[0], *t.shape))
        else:
            want = ", ".join(["N", *(str(d) for d in t.shape)])
            raise CimcError(f"has shape {list(shape)}, expected [{want}] (samples first)", at)
    return _convert(graph, node, array, at)


def _convert(graph: Graph, node: Node, array: np.ndarray, at: str) -> np.ndarray:
    t = node.type
    kind = array.dtype.kind
    if t.dtype.is_float:
        if kind not in "fiu":
            raise CimcError(f"is {array.dtype}, expected a float array", at)
        if not np.all(np.isfinite(array)):
            raise CimcError("contains NaN or infinity", at)
        return array.astype(np.float32)
    if kind not in "iub":
        raise CimcError(f"is {array.dtype}, expected integers for input type {t}", at)
    assert isinstance(node.op, Input)
    meaning = node.op.meaning
    is_mask = t.dtype is DType.BOOL or meaning == "attention_mask"
    if is_mask and not np.isin(array, (0, 1)).all():
        raise CimcError("mask values must be 0 or 1", at)
    if meaning == "token_ids":
        vocab = vocab_size(graph, node.name)
        if vocab is not None and array.size and (array.min() < 0 or array.max() >= vocab):
            raise CimcError(f"token ids must lie in [0, {vocab}) (the embedding table)", at)
    info = np.iinfo(t.dtype.numpy) if t.dtype.is_int else None
    if info is not None and array.size and (array.min() < info.min or array.max() > info.max):
        raise CimcError(f"values do not fit {t.dtype}", at)
    return array.astype(t.dtype.numpy)


def vocab_size(graph: Graph, name: str) -> int | None:
    """Rows of the smallest embedding table the ids `name` reach, None if none does."""
    rows = [
        graph.node(graph.node(user).inputs[1]).type.shape[0]
        for user, operand in through_data_movement(graph, name)
        if isinstance(graph.node(user).op, Embedding) and operand == 0
    ]
    return min(rows) if rows else None


# ---- range collection -------------------------------------------------------------------


# Calibrations of recent (graph, samples, method, percentile): compiling one float graph for
# several arch presets calibrates once. Keyed by content digests, so equal inputs hit.
_CACHE: OrderedDict[str, Calibration] = OrderedDict()
_CACHE_SIZE = 4


def calibrate(
    graph: Graph, data: CalibrationData, method: str = "max", percentile: float = 99.99
) -> Calibration:
    """Ranges of every float value and attention logit over the samples (cached)."""
    if method not in qc.CALIBRATION_METHODS:
        known = ", ".join(qc.CALIBRATION_METHODS)
        raise CimcError(f"unknown calibration method {method!r} (known: {known})", "calibration")
    key = f"{graph_fingerprint(graph)} {samples_digest(data.samples)} {method} {percentile!r}"
    if key not in _CACHE:
        _CACHE[key] = _calibrate(graph, data, method, percentile)
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    hit = _CACHE[key]
    channels = {k: v.copy() for k, v in hit.channel_ranges.items()}  # callers own their copy
    return Calibration(
        dict(hit.ranges),
        dict(hit.logit_ranges),
        channels,
        dict(hit.rows),  # read-only arrays: shared
        hit.samples,
        data.generated,
        data.note,
        method,
    )


def graph_fingerprint(graph: Graph) -> str:
    """sha256 of everything calibration depends on: nodes in order (name, op and attributes,
    operands, type; constants by their content digest) and the outputs."""
    h = hashlib.sha256()
    for n in graph.nodes():
        h.update(repr((n.name, _op_text(n.op), n.inputs, str(n.type))).encode())
    h.update(repr(graph.outputs).encode())
    return h.hexdigest()


def _op_text(op: Op) -> str:
    if isinstance(op, Constant):
        return f"constant {op.digest}"
    return f"{op.NAME} " + " ".join(f"{k}={_value_text(v)}" for k, v in op.attributes().items())


def _value_text(value: object) -> str:
    if isinstance(value, np.ndarray):  # repr would elide the middle of a large array
        data = np.ascontiguousarray(value)
        digest = hashlib.sha256(data.reshape(-1).view(np.uint8).data).hexdigest()
        return f"array({data.dtype.str}, {data.shape}, {digest})"
    if isinstance(value, tuple | list):
        return "(" + ", ".join(_value_text(v) for v in value) + ")"
    return repr(value)


def samples_digest(samples: Sequence[Sample]) -> str:
    h = hashlib.sha256()
    for sample in samples:
        for name in sorted(sample):
            data = np.ascontiguousarray(sample[name])
            h.update(f"{name} {data.dtype.str} {data.shape}".encode())
            h.update(data.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


def _calibrate(graph: Graph, data: CalibrationData, method: str, percentile: float) -> Calibration:
    model = FloatModel(graph)
    unranged = _padded_windows(graph)
    floats = [n for n in graph.nodes() if n.type.dtype.is_float and n.name not in unranged]
    attentions = [n for n in graph.nodes() if isinstance(n.op, Attention)]
    seen: dict[str, list[np.ndarray]] = {n.name: [] for n in floats}
    seen_logits: dict[str, list[np.ndarray]] = {n.name: [] for n in attentions}
    channels: dict[str, np.ndarray] = {}
    for n in floats:
        if isinstance(n.op, Constant):  # the same every sample: read in place, once
            copies = 1 if method == "max" else len(data.samples)  # a percentile counts each
            seen[n.name] += [_collected(n.op.value, method)] * copies
            channels[n.name] = _channel_max(None, n.op.value)
    computed = {n.name for n in floats if not isinstance(n.op, Constant)}
    by_name = {n.name: n for n in attentions}
    row_sites = {name for name in computed if linear_input(graph, name)}
    rows: dict[str, list[np.ndarray]] = {name: [] for name in sorted(row_sites)}
    per_sample = -(-ROWS // len(data.samples))

    def visit(node: Node, env: Mapping[str, Any]) -> None:
        """Reduce each value as it is computed (the float model frees it after its last
        use: a sample's activations are never all held)."""
        if node.name in computed:
            value = np.asarray(env[node.name])
            seen[node.name].append(_collected(value, method))
            channels[node.name] = _channel_max(channels.get(node.name), value)
            if node.name in rows:
                rows[node.name].append(_some_rows(value, per_sample))
        if node.name in by_name:
            operands = {i: np.asarray(env[i]) for i in node.inputs}
            seen_logits[node.name].append(_collected(_logits(node, operands), method))

    for k, sample in enumerate(data.samples):
        report("calibrate", k, len(data.samples), "float reference on each sample")
        model.run_nodes(sample, (), visit)
    where = {n.name: n.where for n in floats}
    ranges = {k: _range(v, method, percentile, where[k]) for k, v in seen.items()}
    logits = {k: _range(v, method, percentile, where[k]) for k, v in seen_logits.items()}
    report("calibrate", len(data.samples), len(data.samples))
    kept = {k: _frozen(np.concatenate(v)[:ROWS]) for k, v in rows.items()}
    return Calibration(
        ranges, logits, channels, kept, len(data.samples), data.generated, data.note, method
    )


def _padded_windows(graph: Graph) -> set[str]:
    """Max-pool windows (an im2col padding with -inf) and their moves on the way to the
    max: they only carry their operand's values, and -inf has no range."""
    out: set[str] = set()
    for n in graph.nodes():
        padded = isinstance(n.op, Im2col) and n.op.pad_value != 0
        if padded or (isinstance(n.op, DATA_MOVEMENT) and n.inputs and n.inputs[0] in out):
            out.add(n.name)
    return out


def linear_input(graph: Graph, name: str) -> bool:
    """Whether a linear layer reads `name` directly as its activation operand."""
    return any(
        isinstance(graph.node(u).op, Linear) and graph.node(u).inputs[0] == name
        for u in graph.users(name)
    )


def _some_rows(value: np.ndarray, count: int) -> np.ndarray:
    """`count` rows (last axis = channels) spread evenly over the value, as float32."""
    flat = np.asarray(value, np.float32).reshape(-1, value.shape[-1])
    picked = np.linspace(0, len(flat) - 1, num=min(count, len(flat))).round().astype(int)
    return flat[picked]


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _collected(value: np.ndarray, method: str) -> np.ndarray:
    """What a sample contributes to a range: its absolute maximum, or every |x|."""
    if method == "max":
        return np.array([qc.abs_max(value)], np.float64)
    return np.abs(np.asarray(value, np.float64)).ravel()


def _abs_max(v: np.ndarray, axis: int) -> np.ndarray:
    """max |v| over `axis` without materializing |v| (see qc.abs_max)."""
    if v.dtype.kind != "f":
        v = np.asarray(v, np.float64)
    return np.maximum(np.abs(v.max(axis=axis)), np.abs(v.min(axis=axis)))


def _range(parts: Sequence[np.ndarray], method: str, percentile: float, loc: str) -> float:
    return qc.calibration_range(np.concatenate(list(parts)), method, percentile, loc)


def _channel_max(previous: np.ndarray | None, value: np.ndarray) -> np.ndarray:
    v = np.asarray(value)
    current = (
        _abs_max(v.reshape(-1, v.shape[-1]), axis=0).astype(np.float64)
        if v.ndim and v.size
        else np.zeros(1)
    )
    return current if previous is None else np.maximum(previous, current)


def _logits(node: Node, values: Mapping[str, np.ndarray]) -> np.ndarray:
    """q k^T * scale (+ bias) at the positions attention may use (float64)."""
    assert isinstance(node.op, Attention)
    q = np.asarray(values[node.inputs[0]], np.float64)
    k = np.asarray(values[node.inputs[1]], np.float64)
    k = np.repeat(k, q.shape[1] // k.shape[1], axis=1)
    logits = q @ np.swapaxes(k, -1, -2) * node.op.scale
    if node.op.bias:  # the softmax sees scores plus bias: the logit codes must hold both
        logits = logits + np.asarray(values[node.inputs[-1]], np.float64)
    sq, sk = logits.shape[-2:]
    allowed = np.ones((sq, sk), bool)
    if node.op.causal:
        allowed = np.tril(allowed, sk - sq)
    m = node.op.mask_index(len(node.inputs))
    if m is not None:
        allowed = allowed & np.asarray(values[node.inputs[m]], bool)
    picked = logits[np.broadcast_to(allowed, logits.shape)]
    return picked if picked.size else np.zeros(1)
