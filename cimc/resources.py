"""Locate the `isa/` data folder, in a source checkout or inside an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def isa_dir() -> Path:
    """The folder holding SPEC.md, cim.lark, arch/ and examples/.

    A wheel ships it as `cimc/_isa` (hatch force-include); a checkout has it beside `cimc/`.
    """
    for candidate in (_PACKAGE_DIR / "_isa", _PACKAGE_DIR.parent / "isa"):
        if (candidate / "cim.lark").is_file():
            return candidate
    raise FileNotFoundError("cimc's isa/ folder is missing from this installation; reinstall cimc")
