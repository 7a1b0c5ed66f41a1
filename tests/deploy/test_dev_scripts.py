"""The setup scripts on a fresh Debian 12: `make`'s virtualenv step installs python3.11-venv when `python3.11 -m venv`
fails; ensure-services.sh installs curl and jq, and uses the project's role instead of changing how Postgres
authenticates. apt-get, dpkg-query and python3.11 are stand-ins on PATH that
record what they are asked (nothing is installed on this machine)."""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

from sqlalchemy.engine import make_url

from devstack.database import DEV_PASSWORD, DEV_ROLE, SERVER_URL
from devstack.run import StackConfig
from tests.deploy.charts import REPO
from tests.fixtures.database import LOCAL_SERVER_URL

SCRIPT = REPO / "infra" / "scripts" / "ensure-venv.sh"

# dpkg-query: a package is installed once the stand-in apt-get installed it.
DPKG_QUERY = """#!/bin/sh
pkg=$(eval echo \\${$#})
[ -e "$STATE/pkg-$pkg" ] && printf installed
exit 0
"""
APT_GET = """#!/bin/sh
echo "$*" >>"$STATE/apt.log"
case " $* " in *" install "*) for a in "$@"; do case "$a" in -*|install) ;; *) touch "$STATE/pkg-$a";; esac; done;; esac
exit 0
"""
# python3.11 -m venv: like Debian's without python3.11-venv, it leaves a directory behind and fails.
PYTHON = """#!/bin/sh
[ "$1 $2" = "-m venv" ] || exit 2
mkdir -p "$3/bin"
[ -e "$STATE/pkg-python3.11-venv" ] || { echo "ensurepip is not available" >&2; exit 1; }
printf '#!/bin/sh\\n' >"$3/bin/python" && chmod +x "$3/bin/python"
"""


def stand_ins(tmp_path: Path, *, venv_package: bool) -> dict[str, str]:
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    sudo = '#!/bin/sh\nexec "$@"\n'  # as_root's, when the tests do not run as root
    for name, text in {"dpkg-query": DPKG_QUERY, "apt-get": APT_GET, "python3.11": PYTHON, "sudo": sudo}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    if venv_package:
        (state / "pkg-python3.11-venv").touch()
    (state / "apt.log").touch()
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "STATE": str(state),
        "APT_POLICY_RC": str(tmp_path / "policy-rc.d"),
        "HOME": os.environ.get("HOME", "/root"),
    }


def ensure_venv(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "venv")], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_venv_step_that_fails_installs_python3_11_venv_and_creates_the_virtualenv(tmp_path: Path) -> None:
    env = stand_ins(tmp_path, venv_package=False)
    done = ensure_venv(tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "venv" / "bin" / "python").exists()
    apt = (tmp_path / "state" / "apt.log").read_text().splitlines()
    assert apt[0].endswith("update")
    assert apt[1].split()[-1] == "python3.11-venv" and "install" in apt[1].split()
    assert "installing python3.11-venv" in done.stderr
    assert not (tmp_path / "policy-rc.d").exists(), "the temporary invoke-rc.d policy is removed again"


def test_nothing_is_installed_when_the_venv_step_works_or_the_virtualenv_exists(tmp_path: Path) -> None:
    env = stand_ins(tmp_path, venv_package=True)
    assert ensure_venv(tmp_path, env).returncode == 0
    assert ensure_venv(tmp_path, env).returncode == 0  # already there: not even python3.11 is run
    assert (tmp_path / "state" / "apt.log").read_text() == ""


def test_make_creates_the_virtualenv_with_the_script() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "\t@bash infra/scripts/ensure-venv.sh .venv\n" in makefile
    assert "python3.11 -m venv" not in makefile


def _recipe(makefile: str, target: str) -> str:
    """The recipe lines of `target` (the tab-indented lines right after its rule)."""
    after = makefile.split(f"\n{target}:", 1)[1].splitlines()[1:]
    return "\n".join(itertools.takewhile(lambda line: line.startswith("\t"), after))


def test_make_run_installs_the_runtime_set_only_and_make_test_everything() -> None:
    """A newcomer's `make run` needs no test, lint or benchmark tools (≈ 210 MB against ≈ 900 MB); neither command
    removes what the other installed."""
    makefile = (REPO / "Makefile").read_text()
    assert "\nrun: install-runtime services\n" in makefile
    assert "uv sync --frozen --no-dev --inexact" in _recipe(makefile, ".venv/.installed-runtime")
    full = _recipe(makefile, ".venv/.installed")
    assert "uv sync --frozen" in full and "--no-dev" not in full
    assert "\npytest: install " in makefile


def test_ensure_services_installs_curl_and_jq_for_the_readme() -> None:
    script = (REPO / "infra" / "scripts" / "ensure-services.sh").read_text()
    (line,) = [line for line in script.splitlines() if line.startswith("ensure_packages postgresql")]
    assert {"curl", "jq"} <= set(line.split()[1:])


def test_ensure_services_uses_the_projects_role_and_never_edits_pg_hba() -> None:
    script = (REPO / "infra" / "scripts" / "ensure-services.sh").read_text()
    assert f"DEV_ROLE={DEV_ROLE}\n" in script
    assert f"DEV_PASSWORD={DEV_PASSWORD} " in script
    assert "trust" not in script
    code = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    assert not any("hba" in line for line in code), "the script must not touch pg_hba.conf"
    assert "create role ${DEV_ROLE} login createdb password '${DEV_PASSWORD}'" in script
    assert "create database payments owner ${DEV_ROLE}" in script


def test_make_run_and_the_tests_connect_as_the_projects_role_with_its_password() -> None:
    assert make_url(StackConfig().database_url).username == DEV_ROLE
    for url in (StackConfig().database_url, LOCAL_SERVER_URL, SERVER_URL):
        parsed = make_url(url)
        assert (parsed.username, parsed.password, parsed.host) == (DEV_ROLE, DEV_PASSWORD, "127.0.0.1"), url
