"""Kafka security settings are checked at start-up: a SASL protocol needs its mechanism and credentials, TLS files
need a TLS protocol; the secured options reach every client."""

from __future__ import annotations

import ssl

import pytest

from payment_infrastructure.kafka.security import client_security
from payment_infrastructure.kafka.settings import KafkaSettings


def test_security_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"needs kafka\.sasl_mechanism"):
        KafkaSettings(security_protocol="SASL_SSL")
    with pytest.raises(ValueError, match=r"needs kafka\.sasl_username and sasl_password"):
        KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512")
    with pytest.raises(ValueError, match="OAUTHBEARER needs"):
        KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER")
    with pytest.raises(ValueError, match="takes no"):
        KafkaSettings(sasl_mechanism="PLAIN", sasl_username="u", sasl_password="p")
    with pytest.raises(ValueError, match="need security_protocol SSL or SASL_SSL"):
        KafkaSettings(ssl_cafile="/ca.pem")
    with pytest.raises(ValueError, match="go together"):
        KafkaSettings(security_protocol="SSL", ssl_certfile="/c.pem")


def test_plain_text_gives_the_clients_nothing_but_the_protocol() -> None:
    assert client_security(KafkaSettings()) == {"security_protocol": "PLAINTEXT"}


def test_scram_over_tls_gives_the_clients_a_verifying_context_and_the_credentials() -> None:
    options = client_security(
        KafkaSettings(
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-256",
            sasl_username="payments",
            sasl_password="secret",
        )
    )
    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "payments",
        "sasl_plain_password": "secret",
    }
