"""Development and test infrastructure: Apache Kafka and Keycloak from Maven Central, run as local processes.

Not part of the product image. `make run` and the test fixtures both start their brokers and identity servers
through this package, so the two never drift apart. Downloads are cached outside the work tree
(`PAYMENTS_CACHE_DIR`, default `~/.cache/payments`): a second run on the same machine downloads nothing.
"""
