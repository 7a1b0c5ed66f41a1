#!/usr/bin/env bash
# Create the virtualenv (default .venv) with Python 3.11. On Debian 12, `python3.11 -m venv` needs the package
# python3.11-venv (ensurepip), which a fresh machine lacks: when the attempt fails, that package (and python3.11
# itself when missing) is installed with apt-get and the virtualenv created again. Nothing to do when it exists.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=infra/scripts/lib/apt.sh
. "$here/lib/apt.sh"

venv=${1:-.venv}
[ -x "$venv/bin/python" ] && exit 0
command -v python3.11 >/dev/null 2>&1 || ensure_packages python3.11
if ! python3.11 -m venv "$venv" >/dev/null 2>&1; then
  rm -rf "$venv" # a failed attempt leaves a virtualenv without pip behind
  echo "python3.11 -m venv failed: installing python3.11-venv" >&2
  ensure_packages python3.11-venv
  python3.11 -m venv "$venv"
fi
