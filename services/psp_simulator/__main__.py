"""Run the PSP simulator (dev and test only): ``python -m services.psp_simulator [--scenario NORMAL ...]``.

Command-line flags win over the environment (``PAYMENTS_PSP_SIM__HOST``, ``__PORT``, ``__SCENARIO``,
``__SEED``, ``__PENDING_PERCENT``, ``__CHARGED_THEN_UNAVAILABLE_PERCENT``, ``__TIMEOUT_DURATION_MS``), which
wins over the defaults.
``--fd`` serves on an already-listening socket inherited from the parent (how the test fixture avoids a
race for a free port).
"""

from __future__ import annotations

import argparse
import os
import random
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
import uvicorn

from payment_infrastructure.observability.logging import configure_logging
from services.psp_simulator.app import create_app
from services.psp_simulator.profiles import SCENARIOS, build_profile

ENV_PREFIX = "PAYMENTS_PSP_SIM__"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090

log = structlog.get_logger("services.psp_simulator")


def _optional(env: Mapping[str, str], name: str, kind: type[Any]) -> Any:
    value = env.get(f"{ENV_PREFIX}{name}")
    return None if value in (None, "") else kind(value)


def parse_args(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m services.psp_simulator", description=__doc__)
    parser.add_argument("--host", default=env.get(f"{ENV_PREFIX}HOST", DEFAULT_HOST))
    parser.add_argument("--port", type=int, default=int(env.get(f"{ENV_PREFIX}PORT", DEFAULT_PORT)))
    parser.add_argument("--fd", type=int, default=None, help="serve on this inherited listening socket")
    parser.add_argument(
        "--scenario",
        type=str.upper,
        choices=list(SCENARIOS),
        default=env.get(f"{ENV_PREFIX}SCENARIO", "NORMAL").upper(),
    )
    parser.add_argument(
        "--seed", type=int, default=_optional(env, "SEED", int), help="seed the draws (default: random)"
    )
    parser.add_argument(
        "--pending-percent",
        type=float,
        default=_optional(env, "PENDING_PERCENT", float),
        help="share of 'pending, check later' answers, carved out of the scenario's mix",
    )
    parser.add_argument(
        "--charged-then-unavailable-percent",
        type=float,
        default=_optional(env, "CHARGED_THEN_UNAVAILABLE_PERCENT", float),
        help="share of new charges and refunds executed but answered 503 (default 0)",
    )
    parser.add_argument(
        "--timeout-duration-ms",
        type=int,
        default=_optional(env, "TIMEOUT_DURATION_MS", int),
        help="how long a 'timeout' call takes before it completes (default 5000)",
    )
    parser.add_argument("--log-level", default=env.get(f"{ENV_PREFIX}LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    configure_logging(service="psp-simulator", level=args.log_level)
    overrides: dict[str, Any] = {}
    if args.pending_percent is not None:
        overrides["pendingPercent"] = args.pending_percent
    if args.charged_then_unavailable_percent is not None:
        overrides["chargedThenUnavailablePercent"] = args.charged_then_unavailable_percent
    if args.timeout_duration_ms is not None:
        overrides["timeoutDurationMs"] = args.timeout_duration_ms
    profile = build_profile(args.scenario, overrides)
    app = create_app(profile, random.Random(args.seed))
    # Keep-alive longer than clients' (payment-consumers: 4 s) so the server never closes a connection a client reuses.
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_config=None, access_log=False, timeout_keep_alive=30
    )
    server = uvicorn.Server(config)
    sockets = [socket.socket(fileno=args.fd)] if args.fd is not None else None
    log.warning("psp_simulator_started", host=args.host, port=args.port, scenario=profile.name, note="DEV ONLY")
    server.run(sockets=sockets)


if __name__ == "__main__":
    main()
