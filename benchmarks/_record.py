"""Shared helpers: time whole commands and write a section of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "benchmarks.md"
#: The PostgreSQL server that the benchmarks use when none is given. Each run
#: works in a schema of its own and drops it at the end.
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


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


def _cpu_times() -> tuple[int, int] | None:
    """Return the total and idle jiffies of all CPUs, or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields]
    # idle plus iowait count as idle.
    return sum(values), values[3] + values[4]


def busy_cores(window_s: float = 1.0) -> float | None:
    """Return how many cores other processes kept busy over `window_s` seconds."""
    before = _cpu_times()
    time.sleep(window_s)
    after = _cpu_times()
    if before is None or after is None or after[0] == before[0]:
        return None
    total, idle = after[0] - before[0], after[1] - before[1]
    return (total - idle) / total * (os.cpu_count() or 1)


class OtherLoad:
    """Measure how many cores other processes kept busy during a `with` block.

    This process and its children are left out, so a benchmark can report
    whether other work disturbed its own figures.
    """

    def __enter__(self) -> OtherLoad:
        self._cpu = _cpu_times()
        self._own = _own_cpu_s()
        self._wall = time.perf_counter()
        self.cores: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        after = _cpu_times()
        wall = time.perf_counter() - self._wall
        if self._cpu is None or after is None or after[0] == self._cpu[0] or not wall:
            return
        total, idle = after[0] - self._cpu[0], after[1] - self._cpu[1]
        busy = (total - idle) / total * (os.cpu_count() or 1)
        self.cores = max(0.0, busy - (_own_cpu_s() - self._own) / wall)


def _own_cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def wait_until_quiet(
    max_busy: float = 0.3, timeout_s: float = 600.0, window_s: float = 3.0
) -> str:
    """Wait until other processes use less than `max_busy` cores, then describe the load.

    Timings taken while other work runs come out inflated, so each benchmark
    waits for a quiet machine first. After `timeout_s` it goes on anyway, and
    the returned description, which goes on the page, states the load. The
    load is averaged over `window_s` seconds, so one quiet moment between
    two busy ones does not count as quiet.
    """
    deadline = time.monotonic() + timeout_s
    busy = busy_cores(window_s)
    while busy is not None and busy > max_busy and time.monotonic() < deadline:
        print(f"waiting for a quiet machine ({busy:.2f} cores busy)", file=sys.stderr)
        busy = busy_cores(window_s)
    if busy is None:
        return "load not measured"
    load = os.getloadavg()[0]
    quiet = "quiet" if busy <= max_busy else "NOT quiet"
    return f"{quiet} at the start: {busy:.2f} cores busy, 1-minute load {load:.2f}"


def add_wait_option(parser: argparse.ArgumentParser) -> None:
    """Add `--wait-s`: how long to wait for a quiet machine before timing."""
    parser.add_argument(
        "--wait-s",
        type=float,
        default=600.0,
        help="Seconds to wait for a quiet machine before timing (0: start at once).",
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


def time_interleaved(
    commands: Mapping[str, Sequence[str]],
    runs: int,
    env: Mapping[str, str] | None = None,
    warmup: int = 2,
) -> dict[str, tuple[list[float], list[float]]]:
    """Run each command once per round, `runs` rounds, after `warmup` rounds.

    Taking turns spreads any change in the machine's load over all commands
    alike. Output is discarded.

    Returns:
        Per command, the wall times and the CPU times in milliseconds. CPU
        time is user plus system time of the process and of the children it
        waited for.
    """
    times: dict[str, tuple[list[float], list[float]]] = {
        label: ([], []) for label in commands
    }
    for index in range(warmup + runs):
        for label, argv in commands.items():
            start = time.perf_counter()
            proc = subprocess.Popen(
                argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            _, status, usage = os.wait4(proc.pid, 0)
            wall = (time.perf_counter() - start) * 1000
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                raise subprocess.CalledProcessError(proc.returncode, argv)
            if index >= warmup:
                times[label][0].append(wall)
                times[label][1].append((usage.ru_utime + usage.ru_stime) * 1000)
    return times


def summary(times: Sequence[float]) -> tuple[float, float, float]:
    """Return the median and the 10th and 90th percentiles."""
    ordered = sorted(times)
    if len(ordered) == 1:
        return ordered[0], ordered[0], ordered[0]
    deciles = statistics.quantiles(ordered, n=10, method="inclusive")
    return statistics.median(ordered), deciles[0], deciles[-1]


def row(label: str, times: Sequence[float], digits: int = 1) -> str:
    """Format one table row: label, median, p10 and p90."""
    median, low, high = summary(times)
    return f"| {label} | {median:.{digits}f} | {low:.{digits}f} | {high:.{digits}f} |"


def command_line() -> str:
    """Return the command that runs this benchmark, as the page shows it."""
    script = Path(sys.argv[0]).resolve()
    try:
        relative = script.relative_to(ROOT)
    except ValueError:
        relative = script
    return " ".join([".venv/bin/python", str(relative), *sys.argv[1:]])


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section between this benchmark's markers."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = PAGE.read_text() if PAGE.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    PAGE.write_text(text)
