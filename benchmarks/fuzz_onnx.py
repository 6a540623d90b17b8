"""Long ONNX importer fuzz run: N mutated models through cimc.api.import_model.

    python benchmarks/fuzz_onnx.py --cases 5000 [--start 0] [--cli-every 50]

Every `--cli-every`-th case also goes through `cimc compile` (in-process). Prints each
finding and the counts; exit 1 when any was found.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fuzz.campaign import campaign_main  # noqa: E402
from tests.fuzz_onnx.harness import fuzz_one  # noqa: E402

if __name__ == "__main__":
    sys.exit(campaign_main(fuzz_one, __doc__, "mutated models", (5000, 50)))
