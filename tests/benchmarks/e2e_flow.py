"""What the flow control and the PSP pool decided, read once a second from the services' own /metrics.

When a case sheds while cores are free, the question is which bound refused: the API's own queue (503
`overloaded`), the pipeline budget (503 `pipeline-behind`, sized from the queue in front of the first PSP call),
or the PSP pool's concurrency limit starving the calls behind it. The series come from the management ports the
stack serves anyway (what Prometheus would scrape), so reading them changes nothing in the product.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families

# (sample name, label filter) -> the short name a Sample keeps it under
API_SERIES: Mapping[str, tuple[str, Mapping[str, str]]] = {
    "budget": ("payment_pipeline_in_flight_budget", {}),
    "queued": ("payment_pipeline_orders_queued", {}),
    "wait_p95_s": ("payment_pipeline_wait_p95_seconds", {}),
    "shed_pipeline_behind": ("http_requests_shed_total", {"reason": "pipeline_behind"}),
    "shed_queue_full": ("http_requests_shed_total", {"reason": "queue_full"}),
}
CONSUMER_SERIES: Mapping[str, tuple[str, Mapping[str, str]]] = {
    "psp_limit": ("psp_concurrency_limit", {}),
    "psp_queue": ("psp_pool_queue_depth", {}),
}


def pick(text: str, series: Mapping[str, tuple[str, Mapping[str, str]]]) -> dict[str, float]:
    """The wanted samples of one /metrics page (summed over any labels the filter leaves open)."""
    found: dict[str, float] = {}
    wanted = {name for name, _ in series.values()}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name not in wanted:
                continue
            for short, (name, labels) in series.items():
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    found[short] = found.get(short, 0.0) + sample.value
    return found


class FlowReader:
    def __init__(self, api_metrics_url: str, consumers_metrics_url: str) -> None:
        self._sources = ((api_metrics_url, API_SERIES), (consumers_metrics_url, CONSUMER_SERIES))
        self._client = httpx.AsyncClient(timeout=0.5)

    async def read(self) -> dict[str, float]:
        """Whatever answered in time; a part that did not leaves its series out of this second."""
        found: dict[str, float] = {}
        for url, series in self._sources:
            try:
                response = await self._client.get(url)
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                found.update(pick(response.text, series))
        return found

    async def close(self) -> None:
        await self._client.aclose()
