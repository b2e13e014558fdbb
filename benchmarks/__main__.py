"""Run every `benchmarks/bench_*.py` module's `main()` in name order.

A header precedes each module's output. A module that fails prints its error
and the run goes on with the next one; the exit status is non-zero if any
failed. Names given on the command line (`tracing`, `bench_tracing`) run only
those modules.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

_PACKAGE = "benchmarks"


def discover() -> list[str]:
    """Names of the benchmark modules (`bench_*`) in this package, sorted."""
    folder = Path(__file__).resolve().parent
    return sorted(
        info.name for info in pkgutil.iter_modules([str(folder)]) if info.name.startswith("bench_")
    )


def run(names: Sequence[str]) -> list[str]:
    """Run each named module's `main()` under a header; return the names that failed."""
    failed: list[str] = []
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"{_PACKAGE}.{name}")
            entry = getattr(module, "main", None)
            if not callable(entry):
                raise TypeError(f"{name} has no main() function")
            entry()
        except (Exception, SystemExit):  # one broken benchmark must not hide the others' numbers
            failed.append(name)
            print(f"--- {name} FAILED ---", flush=True)
            traceback.print_exc(file=sys.stdout)
        else:
            print(f"--- {name} done in {time.perf_counter() - started:.1f} s ---", flush=True)
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks chosen by `argv` (all when empty); return the exit status."""
    available = discover()
    wanted = list(sys.argv[1:] if argv is None else argv)
    if wanted:
        chosen = [w if w.startswith("bench_") else f"bench_{w}" for w in wanted]
        unknown = [c for c in chosen if c not in available]
        if unknown:
            print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available)}")
            return 2
    else:
        chosen = available
    if not chosen:
        print("no benchmarks found")
        return 1
    failed = run(chosen)
    if failed:
        print(f"\n{len(failed)} of {len(chosen)} benchmark(s) failed: {', '.join(failed)}")
        return 1
    print(f"\nall {len(chosen)} benchmark(s) ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
