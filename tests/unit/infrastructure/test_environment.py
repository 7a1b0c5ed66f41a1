"""Unknown PAYMENTS_* variables are refused at start-up with the nearest known name; a sibling deployable's
variables in a shared environment are not (the sibling checks them)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from payment_infrastructure.environment import (
    SYSTEM_GROUPS,
    TOOL_VARIABLES,
    UnknownEnvironmentVariables,
    refuse_unknown_variables,
    settings_variables,
    unknown_variables,
)
from services.log_shipper.settings import ShipperSettings
from services.payment_consumers.settings import ConsumersSettings
from services.payment_service.settings import ServiceSettings
from tests.deploy.charts import REPO

DEPLOYABLES = {
    "payment-service": ServiceSettings,
    "payment-consumers": ConsumersSettings,
    "log-shipper": ShipperSettings,
}
SERVICE = settings_variables(ServiceSettings)
CONSUMERS = settings_variables(ConsumersSettings)


def test_the_system_groups_are_every_deployables_groups_with_their_owners() -> None:
    owners: dict[str, set[str]] = {"psp_sim": {"psp-simulator"}}
    for deployable, settings in DEPLOYABLES.items():
        for group in settings.model_fields:
            owners.setdefault(group, set()).add(deployable)
    assert {group: set(names) for group, names in SYSTEM_GROUPS.items()} == owners


def test_a_group_two_deployables_share_has_the_same_fields_in_both() -> None:
    """A shared environment gives both the same PAYMENTS_DB__* variables: each must know every one of them."""
    shared = set(ServiceSettings.model_fields) & set(ConsumersSettings.model_fields)
    assert shared == {"db", "redis", "kafka", "logging"}
    for group in shared:
        prefix = f"PAYMENTS_{group.upper()}__"
        assert {n for n in SERVICE if n.startswith(prefix)} == {n for n in CONSUMERS if n.startswith(prefix)}, group


@pytest.mark.parametrize(
    ("variable", "nearest"),
    [
        ("PAYMENTS_DB__UR", "PAYMENTS_DB__URL"),
        ("PAYMENTS_DB_URL", "PAYMENTS_DB__URL"),
        ("PAYMENTS_OUTBOX__BATCHSIZE", "PAYMENTS_OUTBOX__BATCH_SIZE"),
        ("payments_redis__urll", "PAYMENTS_REDIS__URL"),
        ("PAYMENTS_CACHEDIR", "PAYMENTS_CACHE_DIR"),
        ("PAYMENTS_ZZZ", None),
    ],
)
def test_an_unknown_variable_is_refused_with_the_nearest_known_name(variable: str, nearest: str | None) -> None:
    assert unknown_variables(SERVICE, environ={variable: "x", "PAYMENTS_DB__URL": "y"}) == {variable: nearest}


def test_the_message_names_each_variable_the_deployable_and_the_nearest_name() -> None:
    with pytest.raises(UnknownEnvironmentVariables) as refused:
        refuse_unknown_variables(
            SERVICE, deployable="payment-service", environ={"PAYMENTS_DB__UR": "x", "PAYMENTS_API__PROT": "1"}
        )
    message = str(refused.value)
    assert "PAYMENTS_DB__UR is not a setting of payment-service or of a sibling deployable" in message
    assert "did you mean PAYMENTS_DB__URL?" in message and "did you mean PAYMENTS_API__PORT?" in message


def test_a_siblings_variables_and_the_tools_are_accepted_in_a_shared_environment() -> None:
    shared = dict.fromkeys(SERVICE | CONSUMERS | TOOL_VARIABLES, "1")
    shared |= {"PAYMENTS_PSP_SIM__SCENARIO": "PEAK", "PAYMENTS_DB": '{"url": "postgresql+asyncpg://x/y"}'}
    for settings in DEPLOYABLES.values():
        assert unknown_variables(settings_variables(settings), environ=shared) == {}


def test_a_typo_in_a_siblings_group_passes_here_and_is_refused_by_the_sibling_that_owns_it() -> None:
    environ = {"PAYMENTS_PSP__BASE_URLL": "http://psp"}
    assert unknown_variables(SERVICE, environ=environ) == {}
    assert unknown_variables(CONSUMERS, environ=environ) == {"PAYMENTS_PSP__BASE_URLL": "PAYMENTS_PSP__BASE_URL"}


def test_other_variables_are_not_looked_at() -> None:
    others = {"PATH": "/bin", "PROMETHEUS_MULTIPROC_DIR": "/tmp", "PAYMENT": "1"}
    assert unknown_variables(SERVICE, environ=others) == {}


def test_every_payments_variable_a_development_tool_reads_is_a_tool_variable() -> None:
    read = re.compile(r"""(?:environ\.get\(|getenv\(|environ\[|ENV_VAR = )["'](PAYMENTS_[A-Z0-9_]+)["']""")
    found: set[str] = set()
    for root in ("devstack", "tests", "infra", "services", "payment_infrastructure"):
        for path in (REPO / root).rglob("*"):
            if path.suffix in {".py", ".sh"} and path.is_file():
                found.update(read.findall(path.read_text()))
    settings_shaped = {name for name in found if "__" in name}
    assert found - settings_shaped <= TOOL_VARIABLES
    assert found - settings_shaped, "the scan found the tools' variables"


@pytest.mark.parametrize(
    ("module", "deployable"),
    [
        ("services.payment_service", "payment-service"),
        ("services.payment_service.dispatcher", "payment-service"),
        ("services.payment_consumers", "payment-consumers"),
        ("services.payment_consumers.lag_exporter", "payment-consumers"),
    ],
)
def test_a_process_started_with_a_misspelt_setting_exits_at_once_naming_it(module: str, deployable: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYMENTS_")}
    env["PAYMENTS_LOGGING__LEVLE"] = "DEBUG"
    done = subprocess.run(
        [sys.executable, "-m", module], cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    assert f"{deployable}: unknown environment variables" in done.stderr
    assert "PAYMENTS_LOGGING__LEVLE is not a setting of" in done.stderr
    assert "did you mean PAYMENTS_LOGGING__LEVEL?" in done.stderr
