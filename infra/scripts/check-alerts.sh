#!/usr/bin/env bash
# Check the Prometheus alert rules and run their unit tests with promtool (Debian package `prometheus`, installed
# here when promtool is missing; its daemon is not started).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=infra/scripts/lib/apt.sh
. infra/scripts/lib/apt.sh

command -v promtool >/dev/null 2>&1 || ensure_packages prometheus
promtool check rules infra/prometheus/alerts.yml
promtool test rules infra/prometheus/alerts_test.yml
