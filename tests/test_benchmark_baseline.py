"""`OBS_BENCH_BASELINE=REV python -m benchmarks proxy` measures this build against another, side by side.

The other build is a git revision exported into a folder (benchmarks/_baseline.py); its proxy runs from
there and imports that revision's own code. These tests export real revisions of real git repositories
and relay a real call through a proxy started from an exported tree.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from benchmarks import bench_proxy
from benchmarks._baseline import BASELINE_ENV, baseline_rev, baseline_tree

_ROOT = Path(__file__).resolve().parents[1]


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo,
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


def test_the_revision_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BASELINE_ENV, raising=False)
    assert baseline_rev() is None
    monkeypatch.setenv(BASELINE_ENV, "   ")
    assert baseline_rev() is None
    monkeypatch.setenv(BASELINE_ENV, " HEAD~1 ")
    assert baseline_rev() == "HEAD~1"


def test_a_revision_is_exported_as_it_was_committed(tmp_path: Path) -> None:
    tree = baseline_tree("HEAD", tmp_path / "head")
    committed = subprocess.run(["git", "show", "HEAD:obs/proxy/app.py"], cwd=_ROOT, capture_output=True,
                               check=True).stdout  # fmt: skip
    assert (tree / "obs" / "proxy" / "app.py").read_bytes() == committed


def test_a_revision_git_does_not_know_is_refused_naming_it_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=rf"{BASELINE_ENV}=no-such-rev: git cannot export .*HEAD~1"):
        baseline_tree("no-such-rev", tmp_path / "x")


def test_a_revision_without_the_proxy_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "README.md").write_text("an early build\n")
    _git(repo, "add", "README.md")
    _git(repo, "commit", "-q", "-m", "first")
    with pytest.raises(RuntimeError, match="that revision has no recording proxy"):
        baseline_tree("HEAD", tmp_path / "early", repo=repo)


def test_the_proxy_of_an_exported_build_runs_from_its_tree_and_relays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", "--no-local", str(_ROOT), str(repo)], check=True)
    main = repo / "obs" / "proxy" / "__main__.py"
    # A build only the export holds: its proxy leaves a mark when it starts.
    main.write_text(main.read_text().replace(
        'if __name__ == "__main__":',
        'if __name__ == "__main__":\n    import os, pathlib\n'
        '    pathlib.Path(os.environ["OBS_TEST_MARK"]).write_text("the baseline build")'))  # fmt: skip
    _git(repo, "commit", "-q", "-am", "a baseline build")
    tree = baseline_tree("HEAD", tmp_path / "baseline", repo=repo)
    mark = tmp_path / "mark"
    monkeypatch.setenv("OBS_TEST_MARK", str(mark))
    body = json.dumps({**bench_proxy._SHORT, "stream": True}).encode()
    with bench_proxy._standin() as url:
        proxy = bench_proxy._Proxy(url, str(tmp_path), root=tree, name="baseline")
        try:
            answer = httpx.post(proxy.url + "/v1/chat/completions", content=body, timeout=30)
        finally:
            proxy.stop()
    assert answer.status_code == 200 and answer.text.rstrip().endswith("data: [DONE]")
    assert mark.read_text() == "the baseline build"  # the exported build ran, not this checkout
    assert (tmp_path / "baseline.db").is_file()  # recording into a file of its own
