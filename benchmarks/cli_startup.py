"""CLI cold start: arbe's fast paths against `llm keys list` and `python -c pass`.

Run from the repository root with the project's venv:

    .venv/bin/python benchmarks/cli_startup.py [--runs 30]

`llm` is installed into a venv of its own (benchmarks/.venv-llm) on first
run, so it does not touch the project's environment. The figures go into
docs/benchmarks.md, with the machine and Python version.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import ROOT, machine, summary, time_command, write_section  # noqa: E402

LLM_VENV = ROOT / "benchmarks" / ".venv-llm"


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


def main() -> None:
    """Time each command and record the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="arbe-bench-")
    env = {**os.environ, "ARBE_HOME": home, "ARBE_PLUGINS": "", "LLM_USER_PATH": home}
    arbe = str(Path(sys.executable).with_name("arbe"))
    subprocess.run(
        [arbe, "secret", "set", "BENCH_TOKEN"], input=b"sk-test-123", env=env, check=True
    )
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "arbe secret list --json": [arbe, "secret", "list", "--json"],
        "arbe env list --json": [arbe, "env", "list", "--json"],
        "arbe --help": [arbe, "--help"],
    }
    llm = llm_command()
    if llm:
        commands["llm keys list"] = llm

    rows = []
    medians = {}
    for label, argv in commands.items():
        median, low, high = summary(time_command(argv, args.runs, env))
        medians[label] = median
        rows.append(f"| `{label}` | {median:.1f} | {low:.1f} | {high:.1f} |")
        print(f"{label}: median {median:.1f} ms", file=sys.stderr)

    lines = [
        "## CLI cold start",
        "",
        f"Machine: {machine()}. {args.runs} runs after 2 warm-ups, each a whole "
        "process, all in one run of `.venv/bin/python benchmarks/cli_startup.py`.",
        "",
        "| command | median ms | p10 ms | p90 ms |",
        "|---|---|---|---|",
        *rows,
        "",
    ]
    target = medians["arbe secret list --json"]
    if "llm keys list" in medians:
        ratio = medians["llm keys list"] / target
        lines.append(
            f"`arbe secret list --json` is {ratio:.1f} times faster than "
            f"`llm keys list` (target: at least 5) and its median is {target:.0f} ms "
            "(target: under 100 ms)."
        )
    else:
        lines.append("`llm` could not be installed, so it is missing from this run.")
    write_section("cli-startup", "\n".join(lines))


if __name__ == "__main__":
    main()
