"""Every .py / .md file a comment or docstring of cimc/ names exists (no dangling pointers)."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PATH = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-]+\.(?:py|md))\b")


def prose(path: Path) -> Iterator[str]:
    """The comments and docstrings of one Python file."""
    source = path.read_text()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.string
    for node in ast.walk(ast.parse(source)):  # docstrings, of attributes too
        value = node.value if isinstance(node, ast.Expr) else None
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            yield value.value


def resolves(ref: str, where: Path, names: set[str]) -> bool:
    """A path from the citing file's folder or any folder above it up to the root; a bare
    file name anywhere in the repository."""
    if "/" not in ref:
        return ref in names
    folders = [f for f in (where.parent, *where.parent.parents) if f.is_relative_to(ROOT)]
    return any((base / ref).exists() for base in {*folders, ROOT})


def test_files_named_in_comments_exist() -> None:
    sources = sorted((ROOT / "cimc").rglob("*.py"))
    names = {p.name for d in ("cimc", "isa", "benchmarks", "tests") for p in (ROOT / d).rglob("*")}
    names |= {p.name for p in ROOT.glob("*.md")}
    dangling = []
    for path in sources:
        rel = path.relative_to(ROOT).as_posix()
        for text in prose(path):
            for ref in PATH.findall(text):
                if not resolves(ref, path, names):
                    dangling.append(f"{rel}: {ref}")
    assert dangling == []


def test_findings_cited_in_comments_exist() -> None:
    headings = set(re.findall(r"^## (.+)$", (ROOT / "benchmarks/FINDINGS.md").read_text(), re.M))
    cited = {
        " ".join(title.split())
        for path in sorted((ROOT / "cimc").rglob("*.py"))
        for text in prose(path)
        for title in re.findall(r'FINDINGS\.md,\s+"([^"]+)"', text)
    }
    assert len(cited) >= 8  # the citations are found at all
    assert cited - headings == set()


def test_the_checker_sees_a_dangling_name(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        '"""See notes/CANONICAL_OPS.md."""\n# and DESIGN.md\nX = 1\n"""isa/SPEC.md"""\n'
    )
    refs = [ref for text in prose(module) for ref in PATH.findall(text)]
    assert refs == ["DESIGN.md", "notes/CANONICAL_OPS.md", "isa/SPEC.md"]
    assert [r for r in refs if not resolves(r, module, {"SPEC.md"})] == [
        "DESIGN.md",
        "notes/CANONICAL_OPS.md",
    ]
