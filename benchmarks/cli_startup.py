"""CLI cold start: arbe's fast paths against `llm keys list` and `python -c pass`.

Run from the repository root with the project's venv:

    .venv/bin/python benchmarks/cli_startup.py [--runs 30] [--no-instructions]

`llm` is installed into a venv of its own (benchmarks/.venv-llm) on first
run, so it does not touch the project's environment. The commands take turns,
one run of each per round, so a change in the machine's load hits all of
them alike. Wall time and CPU time are both recorded.

arbe's bytecode is compiled first, as installing a wheel does, because an
editable install run with PYTHONDONTWRITEBYTECODE set would otherwise compile
every module on every start. With valgrind on the PATH, the instructions each
command executes are counted too (callgrind), a figure that other work on
the machine does not change. The page also gets the `-X importtime`
breakdown of `arbe secret list --json`, by top-level package.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import (
    ROOT,
    add_wait_option,
    command_line,
    machine,
    summary,
    time_interleaved,
    wait_until_quiet,
    write_section,
)

LLM_VENV = ROOT / "benchmarks" / ".venv-llm"
TARGET = "arbe secret list --json"
PEER = "llm keys list"
#: Importing the CLI's two largest libraries and nothing of arbe's own.
FLOOR = "python -c 'import typer, attrs'"


def llm_command() -> list[str] | None:
    """Return the argv of `llm keys list`, installing llm on first use."""
    llm = LLM_VENV / "bin" / "llm"
    if not llm.exists():
        subprocess.run([sys.executable, "-m", "venv", str(LLM_VENV)], check=True)
        done = subprocess.run(
            [str(LLM_VENV / "bin" / "pip"), "install", "-q", "llm"], check=False
        )
        if done.returncode != 0:
            return None
    return [str(llm), "keys", "list"]


def instructions(argv: list[str], env: dict[str, str]) -> int | None:
    """Count the instructions `argv` executes, with valgrind's callgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    done = subprocess.run(
        [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    return int(found.group(1).replace(",", "")) if found else None


def import_breakdown(env: dict[str, str], runs: int = 5) -> list[tuple[str, float]]:
    """Return `-X importtime` self time per top-level package, least of `runs`."""
    code = (
        "import sys; sys.argv = ['arbe', 'secret', 'list', '--json']; "
        "from arbe_entry.cli import main; main()"
    )
    best: dict[str, int] = {}
    for _ in range(runs):
        stderr = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        ).stderr
        for line in stderr.splitlines():
            parts = line.removeprefix("import time:").split("|")
            if len(parts) != 3 or not parts[0].strip().isdigit():
                continue
            module = parts[2].strip()
            best[module] = min(best.get(module, 1 << 62), int(parts[0]))
    packages: collections.Counter[str] = collections.Counter()
    for module, micros in best.items():
        packages[module.split(".")[0]] += micros
    return [(name, micros / 1000) for name, micros in packages.most_common()]


def command_tree_ms(env: dict[str, str], runs: int = 10) -> tuple[float, float]:
    """Return the median ms to build the click command of every group, and of `secret`.

    Each build runs first in a fresh process, as on a real start. The CLI
    builds only the group that the command line names; `arbe --help` still
    builds them all.
    """
    code = (
        "import time, typer; from arbe_entry import cli; "
        "start = time.perf_counter(); typer.main.get_command({app}); "
        "print((time.perf_counter() - start) * 1000)"
    )
    found: dict[str, list[float]] = {"all": [], "secret": []}
    apps = {"all": "cli.app", "secret": "cli._app_for(['secret', 'list', '--json'])"}
    for _ in range(runs):
        for name, app in apps.items():
            done = subprocess.run(
                [sys.executable, "-c", code.format(app=app)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            found[name].append(float(done.stdout))
    return statistics.median(found["all"]), statistics.median(found["secret"])


def main() -> None:
    """Time each command and record the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--no-instructions", action="store_true", help="Skip the callgrind counts."
    )
    add_wait_option(parser)
    args = parser.parse_args()

    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "src")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    home = tempfile.mkdtemp(prefix="arbe-bench-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARBE_", "LLM_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update({"ARBE_HOME": home, "ARBE_PLUGINS": "", "LLM_USER_PATH": home})
    arbe = str(Path(sys.executable).with_name("arbe"))
    subprocess.run(
        [arbe, "secret", "set", "BENCH_TOKEN"],
        input=b"sk-test-123",
        env=env,
        check=True,
        capture_output=True,
    )
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        FLOOR: [sys.executable, "-c", "import typer, attrs"],
        TARGET: [arbe, "secret", "list", "--json"],
        "arbe env list --json": [arbe, "env", "list", "--json"],
        "arbe --help": [arbe, "--help"],
    }
    llm = llm_command()
    if llm:
        commands[PEER] = llm

    load = wait_until_quiet(timeout_s=args.wait_s)
    times = time_interleaved(commands, args.runs, env)
    counts: dict[str, int | None] = {}
    if not args.no_instructions:
        for label in ("python -c pass", FLOOR, TARGET, PEER):
            if label in commands:
                counts[label] = instructions(commands[label], env)
    breakdown = import_breakdown(env)
    tree = command_tree_ms(env)
    shutil.rmtree(home, ignore_errors=True)

    write_section("cli-startup", report(args, load, times, counts, breakdown, tree))


def report(
    args: argparse.Namespace,
    load: str,
    times: dict[str, tuple[list[float], list[float]]],
    counts: dict[str, int | None],
    breakdown: list[tuple[str, float]],
    tree: tuple[float, float],
) -> str:
    lines = [
        "## CLI cold start",
        "",
        f"Machine: {machine()}; {load}. {args.runs} runs of each command after 2 "
        "warm-ups, taking turns, each a whole process. "
        f"Command: `{command_line()}`.",
        "",
        "| command | wall median ms | wall p10 ms | wall p90 ms | CPU median ms "
        "| instructions (millions) |",
        "|---|---|---|---|---|---|",
    ]
    for label, (wall, cpu) in times.items():
        median, low, high = summary(wall)
        count = counts.get(label)
        millions = f"{count / 1e6:,.0f}" if count else "-"
        lines.append(
            f"| `{label}` | {median:.1f} | {low:.1f} | {high:.1f} "
            f"| {statistics.median(cpu):.1f} | {millions} |"
        )

    lines += ["", *verdicts(times, counts), ""]
    lines.append(
        "Before it parses the command line, Typer builds a click command for "
        f"every function it registers: {tree[0]:.1f} ms for all of arbe's "
        f"groups, {tree[1]:.1f} ms for the `secret` group alone (median of 10 "
        "fresh processes each). So the CLI builds only the group that the "
        "command line names."
    )
    lines += ["", *import_table(breakdown)]
    return "\n".join(lines)


def verdicts(
    times: dict[str, tuple[list[float], list[float]]], counts: dict[str, int | None]
) -> list[str]:
    """State each target, met or missed, with the figures behind it."""
    target = statistics.median(times[TARGET][0])
    lines = []
    if PEER in times:
        ratio = statistics.median(times[PEER][0]) / target
        verdict = "met" if ratio >= 5 else "missed"
        line = (
            f"`{TARGET}` is {ratio:.1f} times faster than `{PEER}` by wall time "
            f"(target: at least 5; {verdict})."
        )
        peer_count, own_count = counts.get(PEER), counts.get(TARGET)
        if peer_count and own_count:
            line += (
                " By instructions, which the machine's load does not change, "
                f"it is {peer_count / own_count:.1f} times."
            )
        lines.append(line)
    else:
        lines.append("`llm` could not be installed, so it is missing from this run.")

    verdict = "met" if target < 100 else "missed"
    floor = statistics.median(times[FLOOR][0])
    lines.append(
        f"Its median is {target:.0f} ms (target: under 100 ms; {verdict}). "
        f"Importing typer and attrs alone takes {floor:.0f} ms on this machine, "
        "so arbe's own modules, its storage and the command itself take "
        f"{target - floor:.0f} ms."
    )
    return lines


def import_table(breakdown: list[tuple[str, float]]) -> list[str]:
    """Return the import time table: the 15 costliest packages, then the rest."""
    lines = [
        f"Where `{TARGET}` spends its imports (`python -X importtime`, self "
        "time summed per top-level package, the least of 5 runs):",
        "",
        "| package | ms |",
        "|---|---|",
    ]
    lines += [f"| `{name}` | {ms:.1f} |" for name, ms in breakdown[:15]]
    rest = sum(ms for _, ms in breakdown[15:])
    lines += [f"| others | {rest:.1f} |", ""]
    lines.append(f"Total: {sum(ms for _, ms in breakdown):.1f} ms.")
    return lines


if __name__ == "__main__":
    main()
