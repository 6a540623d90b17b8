"""Rewrite (or check) the generated blocks of README.md.

A block is
    <!-- BEGIN generated:ops (python -m cimc.docs) -->
    ...
    <!-- END generated:ops -->
and its body is replaced by the text of its generator. Text outside the blocks is kept.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from cimc.errors import CimcError

REGENERATE = "python -m cimc.docs"
_BLOCK = re.compile(
    r"(?P<begin><!-- BEGIN generated:(?P<name>[a-z-]+)[^>]*-->\n)(?P<body>.*?)"
    r"(?P<end><!-- END generated:(?P=name) -->)",
    re.DOTALL,
)


def _generators() -> dict[str, Callable[[], str]]:
    from cimc.docs.arch_table import arch_markdown
    from cimc.docs.ops_table import ops_markdown

    return {"ops": ops_markdown, "arch": arch_markdown}


def default_readme() -> Path:
    return Path(__file__).resolve().parents[2] / "README.md"


def regenerate(text: str, generators: dict[str, Callable[[], str]] | None = None) -> str:
    """`text` with every generated block's body replaced by its generator's output."""
    generators = generators or _generators()
    found = [m.group("name") for m in _BLOCK.finditer(text)]
    missing = sorted(set(generators) - set(found))
    unknown = sorted(set(found) - set(generators))
    if missing or unknown:
        raise CimcError(
            f"generated blocks missing: {missing or 'none'}, unknown: {unknown or 'none'}; "
            f"add '<!-- BEGIN generated:NAME ({REGENERATE}) -->' and '<!-- END generated:NAME -->'",
            "README.md",
        )

    def body(m: re.Match[str]) -> str:
        return f"{m.group('begin')}{generators[m.group('name')]()}\n{m.group('end')}"

    return _BLOCK.sub(body, text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=REGENERATE, description=__doc__)
    parser.add_argument("readme", nargs="?", type=Path, default=default_readme())
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    try:
        text = args.readme.read_text(encoding="utf-8")
        fresh = regenerate(text)
    except OSError as e:
        print(f"{args.readme}: cannot read it ({e.strerror}); run this from a cimc checkout")
        return 2
    except CimcError as e:
        print(e)
        return 2
    if args.check:
        if fresh != text:
            print(f"{args.readme}: generated tables are out of date; run `{REGENERATE}`")
            return 1
        return 0
    if fresh != text:
        args.readme.write_text(fresh, encoding="utf-8")
        print(f"rewrote the generated blocks of {args.readme}")
    return 0
