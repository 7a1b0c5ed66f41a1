"""The profile table: inclusive shares per function from py-spy's raw (collapsed) stacks."""

from __future__ import annotations

from pathlib import Path

from tests.benchmarks.e2e_profile import ROOT, markdown, summarise

RAW = f"""\
<module> ({ROOT}/services/payment_consumers/__main__.py:3);Runner.run (asyncio/runners.py:118);handle ({ROOT}/services/payment_consumers/handlers.py:40);apply (/x/site-packages/asyncpg/connection.py:10) 6
<module> ({ROOT}/services/payment_consumers/__main__.py:3);Runner.run (asyncio/runners.py:118);handle ({ROOT}/services/payment_consumers/handlers.py:40) 2
<module> ({ROOT}/services/payment_consumers/__main__.py:3);Runner.run (asyncio/runners.py:118);poll (/x/site-packages/aiokafka/consumer.py:5);poll (/x/site-packages/aiokafka/consumer.py:9) 2
"""  # noqa: E501


def test_shares_are_inclusive_and_count_a_recursive_function_once(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(RAW)

    profile = summarise("payment-consumers", raw)

    assert profile.samples == 10
    assert profile.top == [
        (0.8, "handle (services.payment_consumers.handlers)"),
        (0.6, "apply (asyncpg.connection)"),
        (0.2, "poll (aiokafka.consumer)"),  # two frames of one function on one stack: counted once
    ]
    assert profile.own == [
        (0.6, "apply (asyncpg.connection)"),
        (0.2, "handle (services.payment_consumers.handlers)"),
        (0.2, "poll (aiokafka.consumer)"),
    ]
    page = markdown([profile], "python -m tests.benchmarks.bench_e2e --rate 300", 20)
    assert "| 80.0% | `handle (services.payment_consumers.handlers)` | 60.0% | `apply (asyncpg.connection)` |" in page
    assert "--profile 20" in page
