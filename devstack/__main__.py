"""`python -m devstack install`: fetch and build Apache Kafka, Keycloak and OpenSearch into the cache (nothing if
done)."""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor

from devstack import kafka, keycloak, opensearch


def install() -> None:
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=3) as pool:
        libs = pool.submit(kafka.install)
        home = pool.submit(keycloak.install)
        search = pool.submit(opensearch.install)
        kafka_libs, keycloak_home, search_libs = libs.result(), home.result(), search.result()
    sys.stdout.write(
        f"Apache Kafka {kafka.kafka_version()} in {kafka_libs.parent}, Keycloak {keycloak.VERSION} in "
        f"{keycloak_home}, OpenSearch {opensearch.opensearch_version()} in {search_libs.parent} "
        f"({time.monotonic() - began:.1f}s)\n"
    )


def main() -> None:
    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python -m devstack install")
    install()


if __name__ == "__main__":
    main()
