"""`make chaos` rewrites docs/reliability.md's table and keeps the sections written by hand after it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos import __main__ as chaos


def test_the_report_replaces_the_table_and_keeps_the_hand_written_sections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = tmp_path / "reliability.md"
    report.write_text("# Reliability\n\nold table\n\n## The simulation\n\nkept text\n\n## An open defect\n\nkept too\n")
    monkeypatch.setattr(chaos, "REPORT", report)

    chaos.write_report("| new table |", "make chaos", [], 60.0, of=0)

    text = report.read_text()
    assert "| new table |" in text and "old table" not in text
    assert text.endswith("\n\n## The simulation\n\nkept text\n\n## An open defect\n\nkept too\n")
