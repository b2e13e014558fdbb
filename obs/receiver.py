"""`python -m obs.receiver --port 4318 --db FILE`: the OTLP/HTTP receiver alone (see obs.receive.cli)."""

from __future__ import annotations

import sys

from obs.receive.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
