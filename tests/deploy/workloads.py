"""What a rendered container would see and run: its environment, its settings class, the ports it binds."""

from __future__ import annotations

import re
from typing import Any

from pydantic_settings import BaseSettings

from services.payment_consumers.settings import ConsumersSettings
from services.payment_service.settings import ServiceSettings
from tests.deploy.charts import Rendered

# `python -m <module>` of each process -> the settings class it reads (None: reads no PAYMENTS_* settings).
SETTINGS_OF_MODULE: dict[str, type[BaseSettings] | None] = {
    "services.payment_service": ServiceSettings,
    "services.payment_service.dispatcher": ServiceSettings,
    "services.payment_consumers": ConsumersSettings,
    "services.payment_consumers.lag_exporter": ConsumersSettings,
    "payment_infrastructure.postgres.migrate": None,
}
# What the downward API would give (fieldRef); enough to expand $(POD_NAME) like the kubelet does.
FIELD_REF_SAMPLES = {"metadata.name": "payments-pod-0", "metadata.namespace": "payments"}
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def module_of(container: dict[str, Any]) -> str:
    command = [*container.get("command", []), *container.get("args", [])]
    assert command[:2] == ["python", "-m"], f"{container['name']} does not run `python -m <module>`: {command}"
    module: str = command[2]
    assert module in SETTINGS_OF_MODULE, f"unknown process module {module}"
    return module


def settings_class(container: dict[str, Any]) -> type[BaseSettings] | None:
    return SETTINGS_OF_MODULE[module_of(container)]


def config_map_env(rendered: Rendered, container: dict[str, Any]) -> dict[str, str]:
    """Variables the container gets from the chart's ConfigMaps (envFrom configMapRef)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            config_map = rendered.named("ConfigMap", source["configMapRef"]["name"])
            env.update(config_map["data"])
    return env


def literal_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's own `env` with $(VAR) expanded as the kubelet does (secret references left out)."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), item["value"])
        elif "fieldRef" in item.get("valueFrom", {}):
            env[item["name"]] = FIELD_REF_SAMPLES[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def effective_env(rendered: Rendered, container: dict[str, Any]) -> dict[str, str]:
    """ConfigMap variables overridden by the container's own env (Kubernetes' precedence)."""
    return {**config_map_env(rendered, container), **literal_env(container)}


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's target port (a name or a number) as the number the container declares."""
    for declared in container.get("ports", []):
        if port in (declared["name"], declared["containerPort"]):
            return int(declared["containerPort"])
    raise AssertionError(f"container {container['name']} declares no port {port!r}")
