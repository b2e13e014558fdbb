"""Another build of obs, side by side with this one: a git revision exported into a folder.

`OBS_BENCH_BASELINE=REV python -m benchmarks proxy` runs the proxy of that
revision as one more side of every latency round, so a change is measured
against the build before it in the same rounds, under the same load, not
against figures from another run. `baseline_tree(rev, folder)` exports the
revision's tracked files (`git archive`) into `folder`; its `python -m
obs.proxy` runs with that folder as its working directory, so it imports the
revision's own `obs`.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

__all__ = ["BASELINE_ENV", "baseline_rev", "baseline_tree"]

BASELINE_ENV = "OBS_BENCH_BASELINE"
_ROOT = Path(__file__).resolve().parents[1]


def baseline_rev() -> str | None:
    """The revision `OBS_BENCH_BASELINE` names (stripped), or None when it is unset or empty."""
    rev = os.environ.get(BASELINE_ENV, "").strip()
    return rev or None


def baseline_tree(rev: str, folder: str | os.PathLike[str], repo: Path = _ROOT) -> Path:
    """Export revision `rev` of the git repository at `repo` into `folder`; the folder's path.

    RuntimeError, naming the revision and what to do, when git cannot
    export it (not a git checkout, no such revision).
    """
    try:
        archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=repo, capture_output=True,
                                 check=False, timeout=120)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"{BASELINE_ENV}={rev}: could not run git to export it ({exc}); unset "
                           f"{BASELINE_ENV}, or run from a git checkout with git installed") from None
    if archive.returncode != 0:
        reason = archive.stderr.decode(errors="replace").strip() or f"git exited with {archive.returncode}"
        raise RuntimeError(f"{BASELINE_ENV}={rev}: git cannot export that revision ({reason}); give a "
                           "commit, tag or branch of this repository, for example HEAD~1")
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    if not (target / "obs" / "proxy" / "__main__.py").is_file():
        raise RuntimeError(f"{BASELINE_ENV}={rev}: that revision has no recording proxy (obs/proxy); "
                           "give one from after it was added")  # fmt: skip
    return target
