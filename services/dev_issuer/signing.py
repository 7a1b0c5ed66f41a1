"""RSA signing keys as Keycloak publishes them (RS256, ``kid`` = RFC 7638 thumbprint). Dev/test use only."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import rsa

KEY_SIZE_BITS = 2048


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class RsaSigningKey:
    """An in-memory RSA key and the ``kid`` it is published under."""

    private_key: rsa.RSAPrivateKey
    kid: str

    @classmethod
    def generate(cls, *, kid: str | None = None, key_size: int = KEY_SIZE_BITS) -> RsaSigningKey:
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        return cls(private_key=private_key, kid=kid or _thumbprint(private_key.public_key()))

    def public_jwk(self) -> dict[str, str]:
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kid": self.kid,
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "n": _b64url_uint(numbers.n),
            "e": _b64url_uint(numbers.e),
        }

    def sign(self, claims: Mapping[str, object], *, kid: str | None = None) -> str:
        """Sign ``claims`` as they are (nothing added or checked): tests use it to forge bad tokens."""
        return jwt.encode(
            dict(claims),
            self.private_key,
            algorithm="RS256",
            headers={"kid": kid if kid is not None else self.kid, "typ": "JWT"},
        )


def _thumbprint(public_key: rsa.RSAPublicKey) -> str:
    numbers = public_key.public_numbers()
    canonical = orjson.dumps({"e": _b64url_uint(numbers.e), "kty": "RSA", "n": _b64url_uint(numbers.n)})
    digest = hashlib.sha256(canonical).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
