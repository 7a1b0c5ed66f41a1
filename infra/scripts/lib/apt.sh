# shellcheck shell=bash
# Shared helpers for infra/scripts (source this file, do not run it). Debian/Ubuntu: installs with apt-get.
#   as_root CMD...        run CMD as root (through sudo only when we are not root already)
#   ensure_packages PKG...  install whichever of the Debian packages PKG are missing; prints one line per step to
#                           stderr, nothing at all when every package is installed already.

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

_apt_updated=""         # set once `apt-get update` ran: at most one per script run
_apt_policy=${APT_POLICY_RC:-/usr/sbin/policy-rc.d}  # invoke-rc.d's policy (a test points it elsewhere)
_apt_policy_created=""  # set while /usr/sbin/policy-rc.d is ours

_apt_drop_policy() {
  if [ -n "$_apt_policy_created" ]; then
    as_root rm -f "$_apt_policy" || true
    _apt_policy_created=""
  fi
}

_apt_get() { # log file, apt-get arguments...
  local log=$1
  shift
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 "$@" >"$log" 2>&1 && return 0
  echo "apt-get $* failed; last lines of its output:" >&2
  tail -n 30 "$log" >&2
  return 1
}

ensure_packages() {
  local pkg missing=()
  for pkg in "$@"; do
    if [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" != installed ]; then missing+=("$pkg"); fi
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing ${missing[*]}, and there is no apt-get here: install them by hand" >&2
    return 1
  fi

  local log rc=0
  log=$(mktemp)
  if [ -z "$_apt_updated" ]; then
    echo "running apt-get update" >&2
    _apt_get "$log" update || rc=$?
    _apt_updated=1
  fi
  if [ "$rc" -eq 0 ]; then
    echo "installing ${missing[*]}" >&2
    # Package scripts must not start daemons (this machine may have no init system; these scripts start what is
    # needed, the way they want it): a policy-rc.d answering 101 makes invoke-rc.d skip every start. It is only
    # written when there is none, and removed again right after (also when interrupted).
    if [ ! -e "$_apt_policy" ]; then
      printf '#!/bin/sh\n# temporary, written by infra/scripts/lib/apt.sh\nexit 101\n' \
        | as_root tee "$_apt_policy" >/dev/null
      as_root chmod 755 "$_apt_policy"
      _apt_policy_created=1
    fi
    local saved_traps
    saved_traps=$(trap -p EXIT INT TERM)
    trap _apt_drop_policy EXIT
    trap '_apt_drop_policy; exit 130' INT
    trap '_apt_drop_policy; exit 143' TERM
    _apt_get "$log" install -y --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" || rc=$?
    _apt_drop_policy
    trap - EXIT INT TERM
    eval "$saved_traps"
  fi
  rm -f "$log"
  return "$rc"
}
