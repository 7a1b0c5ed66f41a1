"""`make bench-e2e` writes into a run directory of its own unless told to publish: it never overwrites tracked
files by default."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.benchmarks.bench_e2e import ROOT, parse_args


def test_by_default_a_run_writes_into_a_new_directory_git_ignores() -> None:
    out = parse_args([]).out
    assert out.parent == ROOT / ".run" / "bench-e2e"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(out / "e2e-x-1.md")], cwd=ROOT, check=False)
    assert ignored.returncode == 0, f"{out} is not ignored by git"
    tracked = subprocess.run(["git", "ls-files", str(out)], cwd=ROOT, capture_output=True, text=True, check=True)
    assert tracked.stdout == ""


def test_publishing_to_the_docs_is_asked_for_with_out() -> None:
    assert parse_args(["--out", "docs/benchmarks"]).out == Path("docs/benchmarks")
