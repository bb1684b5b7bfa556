"""Shared helpers: time whole commands and write a section of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "benchmarks.md"


def machine() -> str:
    """Describe the machine and Python in one line."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def time_command(
    argv: Sequence[str],
    runs: int,
    env: Mapping[str, str] | None = None,
    warmup: int = 2,
) -> list[float]:
    """Run `argv` `runs` times and return the wall times in milliseconds."""
    times = []
    for index in range(warmup + runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        elapsed = (time.perf_counter() - start) * 1000
        if index >= warmup:
            times.append(elapsed)
    return times


def summary(times: Sequence[float]) -> tuple[float, float, float]:
    """Return the median and the 10th and 90th percentiles."""
    ordered = sorted(times)
    deciles = statistics.quantiles(ordered, n=10)
    return statistics.median(ordered), deciles[0], deciles[-1]


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section between this benchmark's markers."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = PAGE.read_text() if PAGE.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + block + "\n"
    )
    PAGE.write_text(text)
