"""torch .pt2 fuzzing: damaged archives and other files are refused with one line, exit 2,
and nothing in them is ever unpickled (torch.export.load alone would run a payload)."""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path

import pytest
import torch

from cimc.api import import_model
from cimc.cli import main
from cimc.errors import CimcError
from cimc.importers.torch_load import NoUnpickling
from tests.fuzz_pt2.harness import FuzzBug, base_archives, fuzz_one
from tests.fuzz_pt2.mutate import MUTATORS, Evil, evil_pickle, pickle_payload, pickled_weights


def _run_slice(seeds: range, tmp_path: Path) -> dict[str, int]:
    outcomes = {"refused": 0, "imported": 0}
    bugs = []
    for seed in seeds:
        try:
            outcomes[fuzz_one(seed, tmp_path, cli=seed % 10 == 0).outcome] += 1
        except FuzzBug as e:
            bugs.append(f"seed {seed}: {e}")
    assert not bugs, "\n".join(bugs[:5])
    return outcomes


def test_fuzz_slice(tmp_path: Path) -> None:
    assert _run_slice(range(0, 6), tmp_path)["refused"] >= 3


@pytest.mark.slow
def test_fuzz_slice_long(tmp_path: Path) -> None:
    outcomes = _run_slice(range(6, 80), tmp_path)
    assert outcomes["refused"] > 30 and outcomes["imported"] > 0, outcomes


def _archive(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _with_member(base: bytes, suffix: str, payload: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(base)) as zin, zipfile.ZipFile(buf, "w") as zout:
        for info in zin.infolist():
            body = zin.read(info.filename)
            zout.writestr(info, payload if info.filename.endswith(suffix) else body)
    return buf.getvalue()


def test_pickled_weight_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "UNPICKLED"
    base = base_archives()["block2"]
    path = _archive(tmp_path, "w.pt2", pickled_weights(base, random.Random(0), marker))
    with pytest.raises(CimcError, match="never unpickles model files") as info:
        import_model(path)
    assert "\n" not in str(info.value) and not marker.exists()
    with pytest.raises(Exception):  # noqa: B017 - the payload is live: torch alone runs it
        torch.export.load(str(path))
    assert marker.exists()


def test_pickled_sample_inputs_are_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "UNPICKLED"
    data = _with_member(base_archives()["block2"], "sample_inputs/model.pt",
                        evil_pickle(marker, random.Random(1)))  # fmt: skip
    with pytest.raises(CimcError, match="never unpickles"):
        import_model(_archive(tmp_path, "s.pt2", data))
    assert not marker.exists()


def test_guard_restores_what_it_patched() -> None:
    import logging
    import pickle

    before = (torch.load, pickle.loads, pickle.load, torch._C._pickle_load_obj)
    with NoUnpickling():
        assert torch.load is not before[0] and pickle.loads is not before[1]
        assert logging.getLogger("torch.export").disabled
    assert (torch.load, pickle.loads, pickle.load, torch._C._pickle_load_obj) == before
    assert not logging.getLogger("torch.export").disabled


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("text.pt2", b"def forward(x): ...\n", "not a .pt2 archive"),
        ("empty.pt2", b"", "not a .pt2 archive"),
        ("onnx.pt2", b"\x08\x07\x12\x07pytorch", "not a .pt2 archive"),
        ("torchsave.pt2", None, "never unpickles|torch.export.load failed"),
    ],
)
def test_wrong_file_types_exit_2_on_one_line(
    name: str, data: bytes | None, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "UNPICKLED"
    if data is None:  # torch.save writes a zip too, holding a pickle
        buf = io.BytesIO()
        torch.save({"x": Evil(marker)}, buf)
        data = buf.getvalue()
    path = _archive(tmp_path, name, data)
    code = main(["compile", str(path), "--arch", "tiny", "-o", str(tmp_path / "o.cimasm")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"{path}: ") and any(m in err[0] for m in message.split("|"))
    assert not marker.exists()


def test_every_mutator_changes_the_archive(tmp_path: Path) -> None:
    base = base_archives()["block2"]
    for name, fn in sorted(MUTATORS.items()):
        changed = any(fn(base, random.Random(s), tmp_path / "m") != base for s in range(5))
        assert changed, name


def test_payload_is_padded_to_whole_elements(tmp_path: Path) -> None:
    assert len(pickle_payload(tmp_path / "m")) % 8 == 0


@pytest.mark.parametrize("seed", (396, 554))
def test_archive_missing_a_constant(seed: int, tmp_path: Path) -> None:
    """Fuzz seeds 396 / 554: the rotary cos/sin constants were gone from the archive and a
    KeyError escaped the translator."""
    result = fuzz_one(seed, tmp_path)
    assert result.outcome == "refused" and "the program has no value for its" in result.detail
