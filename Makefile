# The two commands: `make run` serves the whole system, `make test` runs every test and check.
# Both install what is missing first: Debian packages (python3.11-venv, Postgres, Redis, promtool, curl, jq, a JDK,
# Maven) with apt-get, the virtualenv in .venv (pinned by uv.lock), Apache Kafka, Keycloak and OpenSearch (`make
# test`'s log-search test; `make run` only with PAYMENTS_LOGS__OPENSEARCH_URL) from Maven Central into ~/.cache/payments.
SHELL := /bin/bash
PY := .venv/bin/python
UV_VERSION := 0.13.9
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/.venv

.PHONY: run test lint typecheck imports alerts pytest chaos bench-api bench-dispatch bench-e2e bench-e2e-case install install-runtime services jvm-parts clean

.venv/.installed: pyproject.toml uv.lock
	@bash infra/scripts/ensure-venv.sh .venv
	@.venv/bin/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	@.venv/bin/uv sync --frozen --quiet
	@touch $@

install: .venv/.installed

# `make run` needs only the runtime set: no test, lint or benchmark tools (see the README for the sizes). --inexact
# keeps what `make test` installed, so the two commands never undo each other.
.venv/.installed-runtime: pyproject.toml uv.lock
	@bash infra/scripts/ensure-venv.sh .venv
	@.venv/bin/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	@.venv/bin/uv sync --frozen --no-dev --inexact --quiet
	@touch $@

install-runtime: .venv/.installed-runtime

services:
	@bash infra/scripts/ensure-services.sh

jvm-parts: install services
	@$(PY) -m devstack install

# RUN_ARGS="--api-port 8181 --kafka-port 19092" picks other ports (every port is a flag: .venv/bin/python -m devstack.run --help)
run: install-runtime services
	@bash infra/scripts/run-local.sh $(RUN_ARGS)

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

typecheck: install
	.venv/bin/mypy

imports: install
	.venv/bin/lint-imports

alerts:
	@bash infra/scripts/check-alerts.sh

pytest: install services jvm-parts
	.venv/bin/pytest -q

test: lint typecheck imports alerts pytest

# make chaos: the crash-and-fault suite (tests/chaos/, ~25 minutes on 2 cores) on real processes; writes the table to
# docs/reliability.md. CHAOS_ARGS="--only 'kill -9 API' --payments 300" for one scenario (see --help); the short
# fixed-seed part runs inside `make test` (tests/chaos/test_chaos.py).
chaos: install services jvm-parts
	$(PY) -m tests.chaos --write $(CHAOS_ARGS)

bench-api: install services
	$(PY) -m tests.benchmarks.bench_api

bench-dispatch: install services
	$(PY) -m tests.benchmarks.bench_dispatch

# make bench-e2e: the four cases (100, 300, 1,500 payments/s and NORMAL at 80/s), BENCH_ARGS="--duration 60" to shorten;
# make bench-e2e-case BENCH_ARGS="--rate 300 --duration 300 --warmup 30": one case (see docs/benchmarks/README.md)
bench-e2e: install services
	$(PY) -m tests.benchmarks.bench_suite $(BENCH_ARGS)

bench-e2e-case: install services
	$(PY) -m tests.benchmarks.bench_e2e $(BENCH_ARGS)

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
