"""Every labelled counter an alert reads with increase() is exported at 0 as soon as a process is built.

A series created by its first inc() starts at 1 and increase() sees no change in it, so a pod's first dead letter
or first re-drive would never alert. Each check runs in a fresh interpreter: nothing else has counted anything.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from prometheus_client.parser import text_string_to_metric_families

from payment_domain.topics import Topic, dlq_of
from services.payment_consumers.groups import GROUPS
from tests.deploy.charts import REPO


def exposition_after(script: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    exposition = "from prometheus_client import generate_latest\nprint(generate_latest().decode())\n"
    code = textwrap.dedent(script) + "\n" + exposition
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(out)
        for sample in family.samples
    }


CONSUMERS = """
import asyncio
from services.payment_consumers.bootstrap import build_container, kafka_workers
from services.payment_consumers.settings import ConsumersSettings

async def build() -> None:
    container = build_container(ConsumersSettings())
    kafka_workers(container)

asyncio.run(build())
"""


def test_consumers_export_every_dead_letter_topic_and_redrive_status_at_zero_before_any_record() -> None:
    samples = exposition_after(CONSUMERS)
    for _group, consumed in GROUPS.values():
        assert samples[("kafka_dlq_messages_total", frozenset({("topic", dlq_of(consumed))}))] == 0.0, consumed
    redriven = {labels: v for (name, labels), v in samples.items() if name == "payment_orders_stale_redriven_total"}
    assert frozenset({("status", "INITIATED_PENDING")}) in redriven
    assert frozenset({("status", "PENDING_STATUS_CHECK_LATER")}) in redriven
    assert set(redriven.values()) == {0.0}
    for result in ("TIMEOUT", "REJECTED", "QUEUE_TIMEOUT", "UNEXPECTED_RESPONSE"):
        assert samples[("psp_calls_total", frozenset({("result", result)}))] == 0.0
    for check in ("UNAVAILABLE", "ERROR", "TIMEOUT"):
        assert samples[("psp_status_checks_total", frozenset({("result", check)}))] == 0.0
    group = ("group", "payment-order-psp-result-updated-consumer-group")
    topic = ("topic", Topic.PSP_RESULT_UPDATED.value)
    assert samples[("kafka_consumer_records_total", frozenset({group, topic, ("result", "dead_lettered")}))] == 0.0
    assert samples[("kafka_consumer_dependency_retries_total", frozenset({group, topic, ("dependency", "redis")}))] == 0


def test_api_exports_token_check_and_key_fetch_failures_at_zero_before_any_request() -> None:
    samples = exposition_after("import services.payment_service.api.app")
    assert samples[("auth_token_verifications_total", frozenset({("result", "unavailable")}))] == 0.0
    assert samples[("auth_jwks_fetches_total", frozenset({("result", "error")}))] == 0.0
    assert samples[("http_requests_shed_total", frozenset({("reason", "queue_full")}))] == 0.0
