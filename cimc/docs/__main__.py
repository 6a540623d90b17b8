"""`python -m cimc.docs [--check] [README.md]`: regenerate (or check) the README tables."""

import sys

from cimc.docs.readme import main

sys.exit(main())
