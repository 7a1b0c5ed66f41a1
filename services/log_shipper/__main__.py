"""``python -m services.log_shipper FILE...``: follow JSON log files (as `tail -F`, from their beginning) and
bulk-index their lines into the OpenSearch at PAYMENTS_LOGS__OPENSEARCH_URL, data stream PAYMENTS_LOGS__DATA_STREAM
(default `payments-logs`). Lines already shipped are not indexed twice (see payment_infrastructure.logs.documents).
SIGTERM or Ctrl-C: what was read is sent, then it exits."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

import structlog

from payment_infrastructure.environment import settings_from_environment
from payment_infrastructure.observability.logging import configure_logging
from services.log_shipper.bootstrap import build_shipper
from services.log_shipper.settings import ShipperSettings

log = structlog.get_logger("services.log_shipper")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.log_shipper", description=__doc__)
    parser.add_argument("files", nargs="+", type=Path, help="log files to follow (they may not exist yet)")
    args = parser.parse_args(argv)
    settings = settings_from_environment(ShipperSettings, deployable="log-shipper")
    configure_logging(service="log-shipper")
    if not settings.logs.opensearch_url:
        sys.exit("log-shipper: PAYMENTS_LOGS__OPENSEARCH_URL is not set")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    shipper, sink = build_shipper(settings, args.files)
    log.info("log_shipper_started", files=[str(f) for f in args.files], data_stream=settings.logs.data_stream)
    try:
        report = shipper.run(stop)
    finally:
        sink.close()
    log.info(
        "log_shipper_stopped",
        created=report.created,
        duplicates=report.duplicates,
        failures=report.failures,
        refused=report.refused,
        dropped=report.dropped,
    )


if __name__ == "__main__":
    main()
