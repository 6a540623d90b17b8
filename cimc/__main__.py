"""`python -m cimc ...` runs the `cimc` command."""

from __future__ import annotations

import sys

from cimc.cli import main

sys.exit(main())
