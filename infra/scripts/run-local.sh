#!/usr/bin/env bash
# `make run`: the whole system on this machine, in the foreground (devstack/run.py supervises every part and
# starts again any part that exits). Ctrl-C (or SIGTERM) stops every part. Logs go to .run/<part>.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python -m devstack.run "$@"
