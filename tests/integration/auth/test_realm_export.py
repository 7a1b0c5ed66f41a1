"""The realm export is what Keycloak 24 imports and what the dev issuer serves; its secrets are marked dev-only."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.dev_issuer.realm import RealmFileError, load_realm, parse_realm
from tests.fixtures.issuer import CLIENT_SECRETS, REALM_FILE

# Fields of Keycloak's RealmRepresentation used by the export: anything else would be an unknown key to Keycloak.
KEYCLOAK_REALM_FIELDS = {
    "realm", "displayName", "enabled", "sslRequired", "accessTokenLifespan", "roles", "clients", "users",
}  # fmt: skip
EXPECTED_ROLES = {
    "order-service": {"payment:write", "payment:read"},
    "payment-reader": {"payment:read"},
    "no-role-client": set(),
}


@pytest.fixture(scope="module")
def export() -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(REALM_FILE.read_bytes())
    return document


def test_export_uses_only_keycloak_realm_fields(export: dict[str, Any]) -> None:
    assert set(export) <= KEYCLOAK_REALM_FIELDS
    assert export["realm"] == "ecommerce-platform"
    assert export["enabled"] is True
    assert {role["name"] for role in export["roles"]["realm"]} == {"payment:write", "payment:read"}


def test_every_client_is_a_confidential_service_account_with_300s_tokens(export: dict[str, Any]) -> None:
    clients = {client["clientId"]: client for client in export["clients"]}

    assert set(clients) == set(EXPECTED_ROLES)
    for client_id, client in clients.items():
        assert client["secret"] == CLIENT_SECRETS[client_id]
        assert client["clientAuthenticatorType"] == "client-secret"
        assert client["publicClient"] is False
        assert client["serviceAccountsEnabled"] is True
        assert client["directAccessGrantsEnabled"] is False
        assert client["standardFlowEnabled"] is False
        assert client["attributes"]["access.token.lifespan"] == "300"


def test_each_client_has_its_service_account_user_with_its_roles(export: dict[str, Any]) -> None:
    users = {user["serviceAccountClientId"]: user for user in export["users"]}

    assert set(users) == set(EXPECTED_ROLES)
    for client_id, user in users.items():
        assert user["username"] == f"service-account-{client_id}"
        assert user["enabled"] is True
        assert set(user["realmRoles"]) == EXPECTED_ROLES[client_id]


def test_dev_issuer_reads_the_same_clients_and_roles() -> None:
    realm = load_realm(REALM_FILE)

    assert realm.name == "ecommerce-platform"
    assert {client_id: set(client.roles) for client_id, client in realm.clients.items()} == EXPECTED_ROLES
    assert {client.token_lifespan_seconds for client in realm.clients.values()} == {300}


def test_readme_marks_the_secrets_dev_only() -> None:
    readme = (REALM_FILE.parent / "README.md").read_text()

    assert "dev-only" in readme
    assert "never be used in any shared or production environment" in readme


def test_a_user_with_an_undefined_role_is_refused(export: dict[str, Any]) -> None:
    broken = {**export, "users": [{**export["users"][0], "realmRoles": ["payment:refund"]}]}

    with pytest.raises(RealmFileError, match=r"payment:refund"):
        parse_realm(broken)
