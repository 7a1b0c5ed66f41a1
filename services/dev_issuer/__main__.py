"""Run the DEV-ONLY Keycloak-compatible issuer: ``python -m services.dev_issuer [--host H --port P ...]``.

Command-line flags win over the environment (``PAYMENTS_DEV_ISSUER__HOST``, ``__PORT``, ``__REALM_FILE``,
``__PUBLIC_URL``), which wins over the defaults.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import uvicorn

from services.dev_issuer.app import create_app
from services.dev_issuer.issuer import DevIssuer

ENV_PREFIX = "PAYMENTS_DEV_ISSUER__"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8082
DEFAULT_REALM_FILE = "infra/keycloak/realm-ecommerce-platform.json"

log = logging.getLogger("services.dev_issuer")


def parse_args(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m services.dev_issuer", description=__doc__)
    parser.add_argument("--host", default=env.get(f"{ENV_PREFIX}HOST", DEFAULT_HOST))
    parser.add_argument("--port", type=int, default=int(env.get(f"{ENV_PREFIX}PORT", DEFAULT_PORT)))
    parser.add_argument("--realm-file", type=Path, default=Path(env.get(f"{ENV_PREFIX}REALM_FILE", DEFAULT_REALM_FILE)))
    parser.add_argument(
        "--public-url",
        default=env.get(f"{ENV_PREFIX}PUBLIC_URL"),
        help="base URL put in the tokens' iss (default http://HOST:PORT)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    public_url = args.public_url or f"http://{args.host}:{args.port}"
    issuer = DevIssuer.from_realm_file(args.realm_file, public_url)
    log.warning(
        "dev_issuer_started issuer=%s kid=%s note='DEV ONLY: published secrets, in-memory key'",
        issuer.issuer_url,
        issuer.kid,
    )
    uvicorn.run(create_app(issuer), host=args.host, port=args.port, log_level="info", access_log=False)


if __name__ == "__main__":
    main()
