"""The database part of the profile: what ran between two pg_stat_statements snapshots, largest first."""

from __future__ import annotations

from tests.benchmarks.e2e_statements import Statement, difference, markdown


def test_the_difference_keeps_what_ran_in_the_window_with_its_own_calls_time_and_rows() -> None:
    before = {1: Statement("UPDATE a", 10, 5.0, 10), 2: Statement("SELECT b", 4, 1.0, 4)}
    after = {
        1: Statement("UPDATE a", 30, 25.0, 50),
        2: Statement("SELECT b", 4, 1.0, 4),  # did not run in the window
        3: Statement("INSERT c", 5, 40.0, 5),  # first seen in the window
    }

    assert difference(before, after) == [Statement("INSERT c", 5, 40.0, 5), Statement("UPDATE a", 20, 20.0, 40)]


def test_the_table_gives_each_statement_its_share_of_all_the_window_s_time_and_per_call_figures() -> None:
    ran = [Statement("INSERT  c\n  VALUES (1)", 5, 60.0, 5), Statement("UPDATE a", 20, 20.0, 40)]
    page = markdown(ran, 30, rows=1)
    assert "| 75.0% | 60 | 5 | 12.000 | 1.0 | `INSERT c VALUES (1)` |" in page
    assert "UPDATE a" not in page  # beyond the rows shown, but inside the total


def test_without_the_extension_the_page_says_so_and_how_to_load_it() -> None:
    assert "Not measured" in markdown(None, 30)
