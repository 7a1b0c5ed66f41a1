"""Who is calling, as read from a verified access token."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    client_id: str
    subject: str
    roles: frozenset[str]
    seller_id: str | None = None  # the `seller_id` claim: a seller's own client, which reads only that seller

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @classmethod
    def from_claims(cls, claims: Mapping[str, object]) -> Principal | None:
        """Keycloak puts the client in ``azp`` (older and lightweight tokens: ``client_id``/``clientId``) and the
        realm roles in ``realm_access.roles``; None when the token names no client or subject."""
        client_ids = (claims.get(name) for name in ("azp", "client_id", "clientId"))
        client_id = next((value for value in client_ids if isinstance(value, str) and value), None)
        subject = claims.get("sub")
        if not client_id or not isinstance(subject, str) or not subject:
            return None
        realm_access = claims.get("realm_access")
        roles = realm_access.get("roles") if isinstance(realm_access, Mapping) else None
        role_names = frozenset(role for role in roles if isinstance(role, str)) if isinstance(roles, list) else None
        seller = claims.get("seller_id")
        seller_id = seller if isinstance(seller, str) and seller.strip() else None
        return cls(client_id=client_id, subject=subject, roles=role_names or frozenset(), seller_id=seller_id)
