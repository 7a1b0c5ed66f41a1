"""log-shipper's composition root: the OpenSearch sink (with the index template installed) and the followed files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from payment_infrastructure.logs.follow import FollowedFile
from payment_infrastructure.logs.opensearch import OpenSearchLogSink
from services.log_shipper.settings import ShipperSettings
from services.log_shipper.shipper import LogShipper

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "opensearch" / "payments-logs-template.json"


def index_template(path: Path = TEMPLATE) -> dict[str, Any]:
    template: dict[str, Any] = orjson.loads(path.read_bytes())
    return template


def build_shipper(settings: ShipperSettings, files: list[Path]) -> tuple[LogShipper, OpenSearchLogSink]:
    sink = OpenSearchLogSink(settings.logs)
    sink.install_template(index_template())
    return LogShipper(sink, [FollowedFile(path) for path in files], settings.logs), sink
