"""The short, fixed-seed part of the crash-and-fault suite (the full one: `make chaos`): two scenarios of a few
hundred payments each on real processes, every invariant of tests/chaos/invariants.py judged after each."""

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
SHORT = [
    Scenario(
        "crashes and poison",
        (f.kill9("api"), f.kill9("dispatcher"), f.kill9("consumers"), f.sigterm("consumers"), f.POISON),
    ),
    Scenario("outages and a wedged consumer", (f.cut_postgres(8), f.cut_redis(8), f.WEDGE)),
]


@pytest.mark.parametrize("scenario", SHORT, ids=[s.name for s in SHORT])
async def test_every_invariant_holds_after_the_faults(
    scenario: Scenario,
    psp_simulator: PspSimulatorHandle,
    keycloak: IdentityServer,
    token_cache: TokenCache,
    tmp_path: Path,
) -> None:
    async def token() -> str:
        return (await token_cache.current())["order-service"]

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
