"""The short, fixed-seed part of the crash-and-fault suite (the full one, every fault alone and then combined:
`make chaos`). One run of 200 payments on real processes (one stack: its start-up is most of the cost) takes eight
faults at seeded moments: `kill -9` of the API, the dispatcher and the consumers, a SIGTERM restart of the dispatcher,
poison on every consumed topic, Postgres and Redis cut for 5 s each, and a wedged poll loop that only liveness can
see; then every invariant of tests/chaos/invariants.py is judged."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.chaos import faults as f
from tests.chaos.scenarios import Scenario, run_scenario, table
from tests.fixtures.keycloak import TokenCache
from tests.fixtures.psp import PspSimulatorHandle
from tests.fixtures.services import IdentityServer

pytestmark = pytest.mark.asyncio(loop_scope="session")
log = logging.getLogger(__name__)

SEED = 19
PAYMENTS = 200
RATE = 25.0
SHORT = Scenario(
    "short",
    (
        f.kill9("api"),
        f.kill9("dispatcher"),
        f.kill9("consumers"),
        f.sigterm("dispatcher"),
        f.POISON,
        f.cut_postgres(5),
        f.cut_redis(5),
        f.WEDGE,
    ),
)


async def test_nothing_is_lost_charged_twice_or_left_in_between_after_crashes_outages_poison_and_a_wedge(
    psp_simulator: PspSimulatorHandle,
    keycloak: IdentityServer,
    token_cache: TokenCache,
    tmp_path: Path,
) -> None:
    async def token() -> str:
        return (await token_cache.current())["order-service"]

    scenario = SHORT
    outcome = await run_scenario(
        scenario,
        psp=psp_simulator,
        issuer_url=keycloak.issuer_url,
        token=token,
        payments=PAYMENTS,
        rate=RATE,
        seed=SEED,
        log_dir=tmp_path,
        converge_within_s=90,
    )
    log.info("\n%s", table([outcome]))
    assert len(outcome.faults) == len(scenario.faults), outcome.faults
    assert outcome.ok, "\n".join(outcome.problems()) + f"\n(logs in {tmp_path})"
