#!/usr/bin/env bash
# Check the Prometheus alert rules and run their unit tests with promtool (Debian package `prometheus`, installed
# here when missing; its daemon is not started).
set -euo pipefail

if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool is missing: installing Debian's prometheus package" >&2
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends prometheus >/dev/null \
    || { "${sudo_cmd[@]}" apt-get update -q >/dev/null && "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
fi
promtool check rules infra/prometheus/alerts.yml
promtool test rules infra/prometheus/alerts_test.yml
