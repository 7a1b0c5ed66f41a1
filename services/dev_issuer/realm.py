"""The part of a Keycloak realm export the dev issuer serves: service-account clients and realm roles."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

DEFAULT_TOKEN_LIFESPAN_SECONDS = 300


class RealmFileError(ValueError):
    """The realm export cannot be served: says which entry is wrong."""


@dataclass(frozen=True)
class ServiceAccountClient:
    """A confidential client that may use the ``client_credentials`` grant."""

    client_id: str
    secret: str
    roles: tuple[str, ...]
    token_lifespan_seconds: int
    username: str
    user_id: str
    enabled: bool
    service_accounts_enabled: bool


@dataclass(frozen=True)
class Realm:
    name: str
    roles: frozenset[str]
    clients: Mapping[str, ServiceAccountClient]


def load_realm(path: Path) -> Realm:
    try:
        document = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as error:
        raise RealmFileError(f"cannot read realm file {path}: {error}") from error
    return parse_realm(document)


def parse_realm(document: Any) -> Realm:
    if not isinstance(document, dict) or not isinstance(document.get("realm"), str):
        raise RealmFileError("realm file: top-level 'realm' (the realm name) is missing")
    name: str = document["realm"]
    roles = frozenset(_role_names(document))
    default_lifespan = int(document.get("accessTokenLifespan", DEFAULT_TOKEN_LIFESPAN_SECONDS))
    users = _service_account_users(document)
    clients: dict[str, ServiceAccountClient] = {}
    for entry in document.get("clients", []):
        client_id = entry.get("clientId")
        if not isinstance(client_id, str):
            raise RealmFileError("realm file: a client has no 'clientId'")
        if entry.get("publicClient", False) or entry.get("bearerOnly", False) or "secret" not in entry:
            continue
        user = users.get(client_id, {})
        username = user.get("username", f"service-account-{client_id}")
        user_roles = tuple(user.get("realmRoles", ()))
        unknown = [role for role in user_roles if role not in roles]
        if unknown:
            raise RealmFileError(f"realm file: user {username!r} has undefined realm roles {unknown}")
        attributes = entry.get("attributes", {})
        clients[client_id] = ServiceAccountClient(
            client_id=client_id,
            secret=str(entry["secret"]),
            roles=user_roles,
            token_lifespan_seconds=int(attributes.get("access.token.lifespan", default_lifespan)),
            username=username,
            user_id=str(user.get("id") or uuid.uuid5(uuid.NAMESPACE_URL, f"{name}/{username}")),
            enabled=bool(entry.get("enabled", True)),
            service_accounts_enabled=bool(entry.get("serviceAccountsEnabled", False)),
        )
    return Realm(name=name, roles=roles, clients=clients)


def _role_names(document: dict[str, Any]) -> list[str]:
    realm_roles = document.get("roles", {}).get("realm", [])
    names = [role.get("name") for role in realm_roles]
    if not all(isinstance(role_name, str) for role_name in names):
        raise RealmFileError("realm file: a realm role has no 'name'")
    return [str(role_name) for role_name in names]


def _service_account_users(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        user["serviceAccountClientId"]: user
        for user in document.get("users", [])
        if isinstance(user.get("serviceAccountClientId"), str)
    }
