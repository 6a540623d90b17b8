"""Long torch .pt2 importer fuzz run: N damaged archives through cimc.api.import_model.

    python benchmarks/fuzz_pt2.py --cases 1000 [--start 0] [--cli-every 25]

Every `--cli-every`-th case also goes through `cimc compile` (in-process). A finding is an
uncaught exception, a multi-line error, a wrong CLI exit, or a pickle payload that ran.
Prints each finding and the counts (refusals of pickled content counted apart); exit 1
when any was found.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fuzz.campaign import Result, campaign_main  # noqa: E402
from tests.fuzz_pt2.harness import fuzz_one  # noqa: E402


def _pickle_refusal(result: Result) -> str | None:
    return "refused: never unpickles" if "never unpickles" in result.detail else None


if __name__ == "__main__":
    sys.exit(campaign_main(fuzz_one, __doc__, "damaged .pt2 files", (1000, 25), _pickle_refusal))
