"""The README's "Create a payment with curl" block, run as written (its two addresses pointed at this test's Keycloak
and API), twice: each run creates a new payment and reads it back (a fixed orderId would answer 409 the second
time)."""

from __future__ import annotations

import asyncio
import json
import re

from tests.deploy.charts import REPO
from tests.fixtures.payment_api import ApiFactory
from tests.fixtures.services import IdentityServer

KEYCLOAK = "http://127.0.0.1:8082/realms/ecommerce-platform"
API = "http://127.0.0.1:8080"


def readme_create_block() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Create a payment with curl", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert match is not None
    return match.group(1)


async def run(script: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_the_readme_create_example_creates_a_new_payment_each_time_it_runs(
    api_factory: ApiFactory, keycloak: IdentityServer
) -> None:
    api = await api_factory()
    block = readme_create_block()
    assert KEYCLOAK in block and API in block
    script = block.replace(KEYCLOAK, keycloak.issuer_url).replace(API, api.base_url)
    payments = []
    for _ in range(2):
        out = await run(script)
        assert out.startswith("HTTP/1.1 202"), out
        created, fetched = (json.loads(line) for line in out.splitlines() if line.startswith("{"))
        assert fetched["paymentId"] == created["paymentId"]
        payments.append(created)
    assert payments[0]["paymentId"] != payments[1]["paymentId"]
    assert payments[0]["orderId"] != payments[1]["orderId"]
