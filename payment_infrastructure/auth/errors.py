"""Why a request was not let through: 401 (authentication), 403 (authorization) or 503 (keys unavailable)."""

from __future__ import annotations


class AuthenticationError(Exception):
    """The bearer token is missing or invalid; ``description`` goes to WWW-Authenticate's error_description."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class MissingBearerTokenError(AuthenticationError):
    """No usable bearer token at all: RFC 6750 3.1 says the challenge then carries no error code."""

    def __init__(self) -> None:
        super().__init__("missing bearer token")


class AuthorizationError(Exception):
    """A valid token whose principal lacks ``required_role``."""

    def __init__(self, required_role: str) -> None:
        super().__init__(f"missing role {required_role}")
        self.required_role = required_role


class JwksUnavailableError(Exception):
    """The issuer's signing keys cannot be fetched, so the token cannot be judged either way (answer 503)."""

    def __init__(self, description: str = "signing keys unavailable") -> None:
        super().__init__(description)
        self.description = description
