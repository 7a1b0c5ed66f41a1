"""Where downloads live, one installer at a time, and which JDK runs what."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def cache_root() -> Path:
    """`PAYMENTS_CACHE_DIR`, else `$XDG_CACHE_HOME/payments`, else `~/.cache/payments` (never the work tree)."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "payments"
    root = Path(os.environ.get("PAYMENTS_CACHE_DIR") or default)
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def install_lock(name: str) -> Iterator[None]:
    """Serialise installers across processes (`make run` and `make test` may start together)."""
    path = cache_root() / f".{name}.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def maven(*args: str, cwd: Path | None = None) -> None:
    """Run Maven in batch mode with its local repository inside the cache."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("Maven (mvn) is not on PATH: it resolves Kafka and Keycloak from Maven Central")
    repo = cache_root() / "m2"
    command = [mvn, "-q", "-B", f"-Dmaven.repo.local={repo}", *args]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


def pom_property(pom: Path, name: str) -> str:
    """A `<name>` property a pom pins (the version of what it resolves)."""
    match = re.search(rf"<{re.escape(name)}>([^<]+)</{re.escape(name)}>", pom.read_text())
    if match is None:
        raise RuntimeError(f"{pom} pins no <{name}>")
    return match.group(1)


def install_jars(name: str, version: str, pom: Path) -> Path:
    """The jars `pom` resolves, copied once into `<cache>/<name>-<version>/libs` (returned); nothing if done."""
    home = cache_root() / f"{name}-{version}"
    libs = home / "libs"
    done = home / ".complete"
    if done.exists():
        return libs
    with install_lock(name):
        if not done.exists():
            home.mkdir(parents=True, exist_ok=True)
            staging = home / "libs.partial"
            subprocess.run(["rm", "-rf", str(staging), str(libs)], check=True)
            maven("-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={staging}")
            staging.rename(libs)
            done.write_text(version)
    return libs


def java_home(prefer_newest: bool) -> str | None:
    """A JAVA_HOME for a child process: the newest JDK under /usr/lib/jvm when asked (Keycloak recommends
    the latest LTS), else the environment's; None means "the `java` on PATH"."""
    override = os.environ.get("PAYMENTS_JAVA_HOME")
    if override:
        return override
    if prefer_newest:
        candidates = sorted(Path("/usr/lib/jvm").glob("temurin-*-jdk*"), key=_major, reverse=True)
        for candidate in candidates:
            if (candidate / "bin" / "java").exists() and _major(candidate) >= 21:
                return str(candidate)
    return os.environ.get("JAVA_HOME")


def java_binary(home: str | None) -> str:
    if home:
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise RuntimeError("no java on PATH: Kafka and Keycloak need a JDK (17 or newer)")
    return found


def _major(path: Path) -> int:
    digits = "".join(ch if ch.isdigit() else " " for ch in path.name).split()
    return int(digits[0]) if digits else 0
