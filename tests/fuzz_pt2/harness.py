"""The .pt2 fuzz oracle: a damaged archive through `cimc.api.import_model` (and the CLI).

Acceptable: a one-line `CimcError`, or an import whose graph verifies. Anything else is a
`FuzzBug`, and so is any unpickling (a payload in the archive creates a marker file).
"""

from __future__ import annotations

import contextlib
import io
import random
import traceback
import warnings
from pathlib import Path

import torch

from cimc.errors import CimcError
from tests.fuzz.campaign import FuzzBug, Result, check_error
from tests.fuzz_pt2.mutate import mutate

_BASES: dict[str, bytes] = {}


def base_archives() -> dict[str, bytes]:
    """torch.export.save of a random transformer block (static shapes) and of the zoo's
    tiny GPT-2 (dynamic batch and sequence)."""
    if not _BASES:
        from cimc.zoo import build_model, example_inputs
        from cimc.zoo.export import export_torch
        from tests.differential.generator import build_module, example_input, random_spec

        torch.manual_seed(0)
        spec = random_spec(2)
        x = torch.from_numpy(example_input(spec))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            programs = {"block2": torch.export.export(build_module(spec).eval(), (x,))}
            gpt2 = build_model("gpt2", "tiny")
            programs["gpt2-dynamic"] = export_torch(gpt2, example_inputs(gpt2, seq_len=8))
        for name, program in programs.items():
            buf = io.BytesIO()
            torch.export.save(program, buf)
            _BASES[name] = buf.getvalue()
    return _BASES


def import_checked(path: Path, marker: Path) -> tuple[str, str]:
    from cimc.api import import_model

    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            graph = import_model(path, seq_len=8)
    except CimcError as e:
        outcome = ("refused", check_error(e))
    except Exception as e:  # noqa: BLE001 - the finding
        tb = traceback.format_exc(limit=-3)
        raise FuzzBug("uncaught", f"{type(e).__name__}: {e}\n{tb}") from None
    else:
        graph.verify()
        outcome = ("imported", f"{len(graph)} nodes")
    if marker.exists():
        raise FuzzBug("unpickled", f"a pickle payload ran while importing ({outcome[0]})")
    return outcome


def check_cli(path: Path, imported: bool) -> None:
    """`cimc compile PATH`: exit 2 and one stderr line, or 0 for an importable archive."""
    from cimc.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(["compile", str(path), "--seq-len", "8", "--arch", "tiny",
                         "-o", str(path.with_suffix(".cimasm"))])  # fmt: skip
        except SystemExit as e:
            code = int(e.code or 0)
        except Exception as e:  # noqa: BLE001 - the finding
            raise FuzzBug("cli-uncaught", f"{type(e).__name__}: {e}") from None
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("cimc: no calib")]
    if not ((code == 2 and len(lines) == 1) or (code == 0 and imported)):
        raise FuzzBug("cli", f"exit {code}, stderr {err.getvalue()[-400:]!r}")


def fuzz_one(seed: int, workdir: Path, cli: bool = False) -> Result:
    rng = random.Random(seed)
    bases = base_archives()
    base = sorted(bases)[seed % len(bases)]
    marker = workdir / f"UNPICKLED{seed}"
    mutation, data = mutate(bases[base], rng, marker)
    path = workdir / f"fuzz{seed}.pt2"
    path.write_bytes(data)
    outcome, detail = import_checked(path, marker)
    if cli:
        check_cli(path, outcome == "imported")
        if marker.exists():
            raise FuzzBug("unpickled", "a pickle payload ran in `cimc compile`")
    return Result(seed, base, mutation, outcome, detail)
