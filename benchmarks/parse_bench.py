"""Assembly parse time per line: Lark's LALR parser against the regex fast path.

    cimc compile MODEL.onnx --seq-len 16 --arch large -o prog.cimasm
    python benchmarks/parse_bench.py prog.cimasm [--repeat 3]

Both build the same `lark.Tree` (tests/machine/test_parser_fastpath.py); the fast path
is what `parse_program` tries first (cimc/machine/fastparse.py).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cimc.machine.fastparse import fast_tree
from cimc.machine.parser import lark_tree


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("program", type=Path)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs each")
    args = ap.parse_args()
    text = args.program.read_text()
    lines = text.count("\n")
    for name, parse in (("lark", lark_tree), ("fast path", fast_tree)):
        best = float("inf")
        for _ in range(args.repeat):
            started = time.perf_counter()
            parse(text)
            best = min(best, time.perf_counter() - started)
        print(f"{name:<10}{best:>8.3f} s {best / lines * 1e3:>8.4f} ms per line ({lines} lines)")


if __name__ == "__main__":
    main()
