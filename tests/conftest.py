"""Shared fixtures live in tests/fixtures/* as plugins so each resource has one owner."""

pytest_plugins = [
    "tests.fixtures.database",
    "tests.fixtures.redis",
    "tests.fixtures.keycloak",
    "tests.fixtures.signing_issuer",
    "tests.fixtures.tcp_proxy",
    "tests.fixtures.payment_api",
    "tests.fixtures.psp",
    "tests.fixtures.broker",
    "tests.fixtures.pipeline",
    "tests.fixtures.opensearch",
]
