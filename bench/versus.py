"""Before/after: one benchmark run alternately against two checkouts of Zart, in one session.

    git worktree add ../zart-before ca24406 && (cd ../zart-before && python3 -m venv .venv \\
        && .venv/bin/pip install -q -e '.[dev]') && cp bench/*.py ../zart-before/bench/
    python -m bench.versus --before ../zart-before --rounds 5 --metric checkpoints_per_s \\
        --metric ratio -- bench.throughput --procs 2

Runs `python -m MODULE ARGS...` with this checkout's interpreter here and with the other checkout's
(`DIR/.venv/bin/python`, or --before-python) there, alternately, swapping which goes first every
round so that a drift of the machine (another process, a warming cache) falls on both equally.
The benchmark must print JSON lines (the bench/ scripts do, some with --json); lines with a "case"
field are told apart by it. Prints, per case and metric, the median before and after and their ratio.

Machines like this 2-core one vary by +-25% from run to run: a ratio is only worth the rounds
behind it, and every value is printed so that the spread is visible.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from .harness import REPO_ROOT, table, wait_for_quiet


def run_once(python: str, cwd: Path, module: str, args: list[str]) -> list[dict[str, Any]]:
    """The JSON lines one run of the benchmark printed."""
    done = subprocess.run(
        [python, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=3600
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} in {cwd} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return [orjson.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def compare(
    before: tuple[str, Path],
    after: tuple[str, Path],
    module: str,
    args: list[str],
    rounds: int,
    quiet: bool = True,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """{"before"|"after": {case: [result, ...]}}, the two alternating, the first swapped each round;
    each run waits for the machine to be idle first (`quiet`)."""
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        "before": defaultdict(list),
        "after": defaultdict(list),
    }
    sides = {"before": before, "after": after}
    for number in range(rounds):
        order = ("before", "after") if number % 2 == 0 else ("after", "before")
        for side in order:
            python, cwd = sides[side]
            busy = round(wait_for_quiet(), 2) if quiet else None
            for line in run_once(python, cwd, module, args):
                results[side][str(line.get("case", module))].append(line)
                print(
                    f"round {number + 1} {side} (CPUs busy before: {busy}): {orjson.dumps(line).decode()}",
                    file=sys.stderr,
                    flush=True,
                )
    return results


def summarise(
    results: dict[str, dict[str, list[dict[str, Any]]]], metrics: list[str]
) -> list[dict[str, Any]]:
    rows = []
    for case in dict.fromkeys([*results["before"], *results["after"]]):
        for metric in metrics:
            values = {
                side: [r[metric] for r in results[side].get(case, []) if r.get(metric) is not None]
                for side in ("before", "after")
            }
            medians = {side: statistics.median(v) if v else None for side, v in values.items()}
            ratio = (
                round(medians["after"] / medians["before"], 3)
                if medians["before"] and medians["after"] is not None
                else None
            )
            rows.append(
                {
                    "case": case,
                    "metric": metric,
                    "before": medians["before"],
                    "after": medians["after"],
                    "after/before": ratio,
                    "before runs": " ".join(f"{v:g}" for v in values["before"]),
                    "after runs": " ".join(f"{v:g}" for v in values["after"]),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], usage="%(prog)s [options] -- MODULE [ARGS...]"
    )
    parser.add_argument("--before", type=Path, required=True, help="the other checkout (with bench/ copied)")
    parser.add_argument("--before-python", help="its interpreter (default: BEFORE/.venv/bin/python)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--metric", action="append", required=True, help="a numeric field to compare")
    parser.add_argument("--json", action="store_true", help="the summary as JSON lines")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for an idle machine before a run")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- MODULE [ARGS...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the benchmark after --, e.g. -- bench.throughput --procs 2")
    before_dir = args.before.resolve()
    before_python = args.before_python or str(before_dir / ".venv" / "bin" / "python")
    results = compare(
        (before_python, before_dir),
        (sys.executable, REPO_ROOT),
        command[0],
        command[1:],
        args.rounds,
        quiet=not args.no_wait,
    )
    rows = summarise(results, args.metric)
    if args.json:
        for row in rows:
            print(orjson.dumps(row).decode())
    else:
        print(table(rows, ["case", "metric", "before", "after", "after/before", "before runs", "after runs"]))


if __name__ == "__main__":
    main()
