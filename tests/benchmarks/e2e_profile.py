"""`bench_e2e --profile S`: where the Python processes spend their CPU under the load, sampled with py-spy.

Each of the API, the outbox dispatcher and the consumers is sampled for S seconds from the middle of the measured
window (py-spy attaches to the running process; nothing in the product changes). The report lists, per process,
the functions whose calls hold the largest share of its samples (inclusive: a function counts with everything it
calls), so a target missed comes with where the time went.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY_SPY = str(ROOT / ".venv" / "bin" / "py-spy")
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::\d+)?\)$")
# Frames every sample shares (the interpreter and the event loop's entry), left out of the table.
_ROOTS = ("<module>", "_run_module_as_main", "_run_code", "main", "run", "Runner.run", "run_until_complete")


@dataclass(frozen=True, slots=True)
class Profile:
    part: str
    samples: int
    top: list[tuple[float, str]]  # (share of the samples, "function (module)"), largest first
    own: list[tuple[float, str]]  # the same for the innermost Python frame of each sample: time spent in itself


async def record(pids: Mapping[str, int], seconds: int, scratch: Path) -> dict[str, Path]:
    """Sample every process for `seconds` at once; a process py-spy cannot attach to is left out (and said so)."""

    async def one(part: str, pid: int) -> tuple[str, Path | None]:
        out = scratch / f"profile-{pid}.txt"
        process = await asyncio.create_subprocess_exec(
            PY_SPY,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            "200",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(out),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, errors = await process.communicate()
        if process.returncode != 0 or not out.exists():
            print(f"  profile of {part} failed: {errors.decode(errors='replace')[-300:]}")
            return part, None
        return part, out

    done = await asyncio.gather(*(one(part, pid) for part, pid in pids.items()))
    return {part: path for part, path in done if path is not None}


def summarise(part: str, raw: Path, *, rows: int = 25) -> Profile:
    """Inclusive share per function: every sample counts once for each distinct function on its stack."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        own[_label(frames[-1])] += samples
        for frame in {_label(f) for f in frames}:
            if frame and not frame.startswith(_ROOTS):
                inclusive[frame] += samples
    top = [(n / total, frame) for frame, n in inclusive.most_common(rows)] if total else []
    spent = [(n / total, frame) for frame, n in own.most_common(rows)] if total else []
    return Profile(part, total, top, spent)


def _label(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"].split("site-packages/")[-1].removeprefix(f"{ROOT}/")
    return f"{match['function']} ({path.removesuffix('.py').replace('/', '.')})"


def _cells(row: tuple[float, str] | None) -> str:
    return " | " if row is None else f"{row[0]:.1%} | `{row[1]}`"


def markdown(profiles: list[Profile], command: str, seconds: int) -> str:
    lines = [
        "# Where the CPU goes (py-spy)",
        "",
        f"`{command} --profile {seconds}`",
        "",
        f"Each Python process sampled for {seconds} s from the middle of the measured window, at 200 Hz. A share is "
        'of the samples in which the process was running (not waiting). "With what it calls": a function counts '
        'with everything it calls. "In itself": the innermost Python function of each sample (time in C code '
        "counts for the Python function that called it).",
    ]
    for profile in profiles:
        lines += [
            "",
            f"## {profile.part} ({profile.samples:,} samples)",
            "",
            "| share with what it calls | function (module) | share in itself | function (module) |",
            "|--:|---|--:|---|",
        ]
        for left, right in itertools.zip_longest(profile.top, profile.own):
            lines.append(f"| {_cells(left)} | {_cells(right)} |")
    return "\n".join(lines) + "\n"
