"""`python -m obs.loadgen --url URL --concurrency 8 --requests 200 [...]`: see obs.loadgen.cli."""

from __future__ import annotations

import sys

from obs.loadgen.cli import main

if __name__ == "__main__":
    sys.exit(main())
