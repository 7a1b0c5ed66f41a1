"""Unknown `PAYMENTS_*` environment variables are refused at start-up, with the nearest known name.

A misspelt setting is otherwise silently ignored (pydantic-settings reads the names it knows and no other), and the
process runs on a default nobody chose. One environment is often shared by the processes of the system (`make
run`'s devstack, a compose file, a Secret mounted by the API and the consumers), so each deployable checks:

- a variable of a group it has (`PAYMENTS_DB__URL` in any process): the field must be one of its own;
- a variable of a group only a sibling deployable has (`PAYMENTS_PSP__BASE_URL` in the API): accepted here, the
  sibling that owns the group checks the field;
- any other `PAYMENTS_*` name (an unknown group, `PAYMENTS_DB_URL` with one underscore): refused, except the
  development tools' own variables (`TOOL_VARIABLES`).

`SYSTEM_GROUPS` lists every deployable's groups; tests/unit/infrastructure/test_environment.py keeps it equal to the
settings classes, and checks that a group two deployables share has the same fields in both.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Iterable, Mapping
from typing import TypeVar

from pydantic import BaseModel
from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)

PREFIX = "PAYMENTS_"
DELIMITER = "__"

SYSTEM_GROUPS: Mapping[str, tuple[str, ...]] = {
    "api": ("payment-service",),
    "admission": ("payment-service",),
    "db": ("payment-service", "payment-consumers"),
    "redis": ("payment-service", "payment-consumers"),
    "kafka": ("payment-service", "payment-consumers"),
    "outbox": ("payment-service",),
    "auth": ("payment-service",),
    "logging": ("payment-service", "payment-consumers"),
    "process": ("payment-consumers",),
    "consumer": ("payment-consumers",),
    "psp": ("payment-consumers",),
    "retry": ("payment-consumers",),
    "status_checks": ("payment-consumers",),
    "sweeper": ("payment-consumers",),
    "requery": ("payment-consumers",),
    "ledger": ("payment-consumers",),
    "lag_exporter": ("payment-consumers",),
    "psp_sim": ("psp-simulator",),
    "logs": ("log-shipper",),
}
"""Settings group -> the deployables that read it (payment-service is the API and the outbox dispatcher)."""

TOOL_VARIABLES = frozenset(
    {
        "PAYMENTS_CACHE_DIR",  # devstack: where Kafka, Keycloak and the JDK are cached
        "PAYMENTS_JAVA_HOME",  # devstack: the JDK to run Kafka and Keycloak with
        "PAYMENTS_RUN_DIR",  # devstack: logs and state of `make run`
        "PAYMENTS_TEST_SERVICES",  # tests: the Kafka and Keycloak backend of the test session
        "PAYMENTS_TEST_DB_SERVER",  # tests: the Postgres server test databases are created on
        "PAYMENTS_BENCH_DB_SERVER",  # benchmarks: the same, for benchmark databases
        "PAYMENTS_SIMULATION_SEEDS",  # tests: the seeds the simulation tests run
    }
)
"""Read by the development tools (devstack, tests, benchmarks), never by a deployable; they may be in its env."""


class UnknownEnvironmentVariables(ValueError):
    """The message names every unknown variable and, where one is close, the known name it was probably meant as."""


def settings_variables(settings: type[BaseSettings]) -> frozenset[str]:
    """PAYMENTS_<GROUP>__<FIELD> for every field of every group of a deployable's settings class."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    delimiter = str(settings.model_config.get("env_nested_delimiter", ""))
    names: set[str] = set()
    for group, info in settings.model_fields.items():
        model = info.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"{settings.__name__}.{group} is not a settings group")
        names.update(f"{prefix}{group}{delimiter}{field}".upper() for field in model.model_fields)
    return frozenset(names)


def unknown_variables(own: Iterable[str], *, environ: Mapping[str, str]) -> dict[str, str | None]:
    """The `PAYMENTS_*` variables of `environ` that neither `own` nor a sibling deployable knows, each with the
    nearest known name (None when nothing is close)."""
    own = frozenset(name.upper() for name in own)
    own_groups = {name.removeprefix(PREFIX).split(DELIMITER, 1)[0] for name in own}
    sibling_groups = {group.upper() for group in SYSTEM_GROUPS} - own_groups
    # PAYMENTS_DB='{"url": ...}' (a whole group as JSON): checked by whichever deployable owns the group.
    whole_groups = {f"{PREFIX}{group}".upper() for group in own_groups | sibling_groups}
    known = own | TOOL_VARIABLES | {f"{PREFIX}{group}{DELIMITER}" for group in sibling_groups}
    # Compared without the prefix every candidate shares, which would make any PAYMENTS_ name look close.
    candidates = {name.removeprefix(PREFIX): name for name in known}
    unknown: dict[str, str | None] = {}
    for raw in environ:
        name = raw.upper()
        if not name.startswith(PREFIX) or name in own or name in TOOL_VARIABLES or name in whole_groups:
            continue
        group, delimiter, field = name.removeprefix(PREFIX).partition(DELIMITER)
        if delimiter and field and group in sibling_groups:
            continue  # a sibling's setting: it checks it
        close = difflib.get_close_matches(name.removeprefix(PREFIX), sorted(candidates), n=1, cutoff=0.6)
        unknown[raw] = candidates[close[0]] if close else None
    return unknown


def refuse_unknown_variables(own: Iterable[str], *, deployable: str, environ: Mapping[str, str] | None = None) -> None:
    """Raise UnknownEnvironmentVariables naming each `PAYMENTS_*` variable `deployable` does not know."""
    unknown = unknown_variables(own, environ=os.environ if environ is None else environ)
    if not unknown:
        return
    lines = [
        f"{name} is not a setting of {deployable} or of a sibling deployable"
        + (f": did you mean {nearest}?" if nearest else "")
        for name, nearest in sorted(unknown.items())
    ]
    raise UnknownEnvironmentVariables(
        "unknown environment variables (see docs/operations.md, Configuration):\n  " + "\n  ".join(lines)
    )


def settings_from_environment(settings: type[S], *, deployable: str) -> S:
    """`settings()` read from the environment, after refusing unknown `PAYMENTS_*` variables: the process exits
    with the message on stderr (status 2) instead of running on a default nobody chose."""
    try:
        refuse_unknown_variables(settings_variables(settings), deployable=deployable)
    except UnknownEnvironmentVariables as error:
        sys.stderr.write(f"{deployable}: {error}\n")
        raise SystemExit(2) from None
    return settings()
