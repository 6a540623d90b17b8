"""Mutations of a .pt2 archive (torch.export.save): each returns the bytes of a damaged file.

    name, data = mutate(base_bytes, random.Random(seed), marker)

Byte-level damage (truncation, bit flips), archive-level damage (a member dropped,
truncated, replaced by garbage or by another member, JSON members edited), pickle payloads
that would create `marker` if anything unpickled them, and other file types saved as .pt2.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tests.fuzz_onnx import mutate as onnx_mutate

Mutator = Callable[[bytes, random.Random, Path], bytes]


class Evil:
    """Unpickling this creates the marker file (proof that something unpickled it)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def evil_pickle(marker: Path, rng: random.Random) -> bytes:
    import pickle

    import torch

    if rng.random() < 0.5:
        return pickle.dumps({"w": Evil(marker)})
    buf = io.BytesIO()
    torch.save({"x": Evil(marker)}, buf)  # torch's zip format, as in .pt members
    return buf.getvalue()


def pickle_payload(marker: Path) -> bytes:
    """A raw pickle padded to a multiple of 8 bytes (pickle stops at its STOP opcode)."""
    import pickle

    data = pickle.dumps({"w": Evil(marker)})
    return data + b"\0" * (-len(data) % 8)


def _members(data: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(info, z.read(info.filename)) for info in z.infolist()]


def _zip(members: list[tuple[zipfile.ZipInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for info, data in members:
            z.writestr(info, data)
    return buf.getvalue()


def _edit_member(data: bytes, rng: random.Random, edit: Callable[[str, bytes], bytes]) -> bytes:
    members = _members(data)
    k = rng.randrange(len(members))
    info, body = members[k]
    members[k] = (info, edit(info.filename, body))
    return _zip(members)


def truncate(data: bytes, rng: random.Random, marker: Path) -> bytes:
    return onnx_mutate.truncate(data, rng)


def flip_bytes(data: bytes, rng: random.Random, marker: Path) -> bytes:
    return onnx_mutate.flip_bytes(data, rng)


def drop_member(data: bytes, rng: random.Random, marker: Path) -> bytes:
    members = _members(data)
    del members[rng.randrange(len(members))]
    return _zip(members)


def truncate_member(data: bytes, rng: random.Random, marker: Path) -> bytes:
    return _edit_member(data, rng, lambda name, body: body[: rng.randrange(len(body) + 1)])


def garbage_member(data: bytes, rng: random.Random, marker: Path) -> bytes:
    return _edit_member(data, rng, lambda name, body: rng.randbytes(rng.randint(0, 256)))


def swap_members(data: bytes, rng: random.Random, marker: Path) -> bytes:
    members = _members(data)
    a, b = rng.randrange(len(members)), rng.randrange(len(members))
    members[a], members[b] = (members[a][0], members[b][1]), (members[b][0], members[a][1])
    return _zip(members)


def _json_values(node: Any, rng: random.Random) -> Any:
    """One random edit somewhere in a JSON tree."""
    if isinstance(node, dict) and node:
        key = rng.choice(sorted(node))
        roll = rng.random()
        if roll < 0.15:
            del node[key]
        elif roll < 0.3:
            node[key] = rng.choice((None, -1, 2**62, "x", [], {}, 1.5, True))
        else:
            node[key] = _json_values(node[key], rng)
        return node
    if isinstance(node, list) and node:
        k = rng.randrange(len(node))
        node[k] = _json_values(node[k], rng) if rng.random() < 0.8 else None
        return node
    if isinstance(node, bool):
        return not node
    if isinstance(node, int):
        return rng.choice((0, -1, node + 1, 2**40, -(2**62), 7))
    if isinstance(node, str):
        return rng.choice(("", node[::-1], node + "_x", "aten.foo.default", "\x00"))
    return rng.choice((0, "x", None))


def edit_json(data: bytes, rng: random.Random, marker: Path) -> bytes:
    members = _members(data)
    jsons = [k for k, (info, _) in enumerate(members) if info.filename.endswith(".json")]
    k = rng.choice(jsons)
    info, body = members[k]
    tree = json.loads(body)
    for _ in range(rng.randint(1, 4)):
        tree = _json_values(tree, rng)
    members[k] = (info, json.dumps(tree).encode())
    return _zip(members)


def pickled_weights(data: bytes, rng: random.Random, marker: Path) -> bytes:
    """use_pickle=True in the weights config, the weight file a pickle payload."""
    members = _members(data)
    for k, (info, body) in enumerate(members):
        if info.filename.endswith("weights_config.json"):
            config = json.loads(body)
            entry = config["config"][rng.choice(sorted(config["config"]))]
            entry["use_pickle"] = True
            members[k] = (info, json.dumps(config).encode())
            target = entry["path_name"]
            payload = pickle_payload(marker)  # padded: weight files are sized by dtype
            members = [(i, payload if i.filename.endswith("/" + target) else b)
                       for i, b in members]  # fmt: skip
            break
    return _zip(members)


def pickled_member(data: bytes, rng: random.Random, marker: Path) -> bytes:
    """A .pt member (sample inputs) or any member replaced by a pickle payload."""
    members = _members(data)
    pts = [k for k, (i, _) in enumerate(members) if i.filename.endswith(".pt")]
    k = rng.choice(pts) if pts and rng.random() < 0.7 else rng.randrange(len(members))
    members[k] = (members[k][0], evil_pickle(marker, rng))
    return _zip(members)


def other_file_type(data: bytes, rng: random.Random, marker: Path) -> bytes:
    """Not a .pt2 at all: text, empty, an npz, an ONNX-like protobuf, a torch.save file."""
    kind = rng.randrange(5)
    if kind == 0:
        return b"def forward(x):\n    return x\n"
    if kind == 1:
        return b""
    if kind == 2:
        buf = io.BytesIO()
        np.savez(buf, x=np.zeros(3))
        return buf.getvalue()
    if kind == 3:
        return b"\x08\x07\x12\x07pytorch" + rng.randbytes(64)
    return evil_pickle(marker, random.Random(1))  # torch.save: a zip holding a pickle


MUTATORS: dict[str, Mutator] = {
    fn.__name__: fn
    for fn in (
        truncate,
        flip_bytes,
        drop_member,
        truncate_member,
        garbage_member,
        swap_members,
        edit_json,
        pickled_weights,
        pickled_member,
        other_file_type,
    )  # fmt: skip
}
_WEIGHTS = {"edit_json": 4, "pickled_weights": 2, "pickled_member": 2, "other_file_type": 1}


def mutate(base: bytes, rng: random.Random, marker: Path) -> tuple[str, bytes]:
    """One mutation (JSON edits and pickle payloads drawn more often), or two stacked."""
    names = sorted(MUTATORS)
    weights = [_WEIGHTS.get(n, 1) for n in names]
    chosen = rng.choices(names, weights, k=rng.choice((1, 1, 1, 2)))
    data = base
    for name in chosen:
        # an earlier byte-level mutation may have broken the archive: this one cannot apply
        with contextlib.suppress(
            zipfile.BadZipFile,
            EOFError,
            ValueError,
            LookupError,
            OSError,
            TypeError,
            AttributeError,
        ):
            data = MUTATORS[name](data, rng, marker)
    return "+".join(chosen), data
