"""OpenSearchLogSink: the index template once, then `create` bulk requests into the data stream (opensearch-py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.helpers import bulk

from payment_infrastructure.logs.documents import Shipped
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

    def ship(self, documents: Sequence[tuple[str, dict[str, Any]]]) -> Shipped:
        """Index `(id, document)` pairs. A line refused for its content (400: a mapping clash) is reported, not
        retried; anything OpenSearch may take later (429, 5xx, no answer) raises, and the batch is sent again."""
        shipped = Shipped()
        if not documents:
            return shipped
        actions = (
            {"_op_type": "create", "_index": self._data_stream, "_id": doc_id, "_source": doc}
            for doc_id, doc in documents
        )
        created, errors = bulk(self._client, actions, raise_on_error=False, stats_only=False, chunk_size=10_000)
        shipped.created = int(created)
        retryable = []
        for error in errors if isinstance(errors, list) else []:
            item = error.get("create", {})
            status = int(item.get("status", 0))
            if status == 409:
                shipped.duplicates += 1
            elif 400 <= status < 500 and status != 429:
                shipped.refused[str(item.get("_id"))] = str(item.get("error", item))
            else:
                retryable.append(item)
        if retryable:
            raise RuntimeError(f"{len(retryable)} log lines not taken by OpenSearch, the first: {retryable[0]}")
        return shipped

    def close(self) -> None:
        self._client.close()
