"""OpenSearchLogSink: the index template once, then `create` bulk requests into the data stream (opensearch-py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.helpers import bulk

from payment_infrastructure.logs.settings import LogsSettings

TEMPLATE_NAME = "payments-logs"


class OpenSearchLogSink:
    def __init__(self, settings: LogsSettings) -> None:
        if not settings.opensearch_url:
            raise ValueError("logs.opensearch_url is not set (PAYMENTS_LOGS__OPENSEARCH_URL)")
        self._data_stream = settings.data_stream
        self._client = OpenSearch(
            hosts=[settings.opensearch_url],
            timeout=settings.request_timeout_seconds,
            retry_on_timeout=True,
            max_retries=3,
        )

    def install_template(self, template: dict[str, Any]) -> None:
        """PUT the composable index template (idempotent); the data stream is created by its first document."""
        self._client.indices.put_index_template(name=TEMPLATE_NAME, body=template)

    def ship(self, documents: Sequence[tuple[str, dict[str, Any]]]) -> tuple[int, int]:
        """Index `(id, document)` pairs; returns (created, already there). Any other failure raises."""
        if not documents:
            return 0, 0
        actions = (
            {"_op_type": "create", "_index": self._data_stream, "_id": doc_id, "_source": doc}
            for doc_id, doc in documents
        )
        created, errors = bulk(self._client, actions, raise_on_error=False, stats_only=False, chunk_size=10_000)
        failures = errors if isinstance(errors, list) else []
        duplicates = [e for e in failures if e.get("create", {}).get("status") == 409]
        others = [e for e in failures if e.get("create", {}).get("status") != 409]
        if others:
            raise RuntimeError(f"{len(others)} log lines refused by OpenSearch, the first: {others[0]}")
        return int(created), len(duplicates)

    def close(self) -> None:
        self._client.close()
