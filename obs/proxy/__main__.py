"""`python -m obs.proxy --upstream URL --port PORT [--db FILE]`: see obs.proxy.cli."""

from __future__ import annotations

import sys

from obs.proxy.cli import main

if __name__ == "__main__":
    sys.exit(main())
