"""Keycloak-compatible token issuer for DEVELOPMENT AND TESTS ONLY.

It serves the ``client_credentials`` grant, the discovery document and the JWKS of one realm read from a
Keycloak realm export, on Keycloak's own paths, so payment-service can be run and tested without a JVM. Its
signing key lives in memory only and its client secrets are published dev secrets: it is never deployed, and
no production setting or chart refers to it.
"""
