"""The no-op drain of this checkout against another checkout of the project, side by side.

    .venv/bin/python -m benchmarks.compare_drain /path/to/other/checkout [--rounds 5]

Both drain the same ``--drain-runs`` no-op runs with ``--concurrency`` worker processes on the
same database (``benchmarks.run``'s), in alternating rounds so that neither gets the quieter
moments of a noisy machine; the medians and their ratio are printed. The other checkout's
workers run its own code on this checkout's schema (newer migrations only add columns with
database defaults). Neither folder may change while it runs: workers import their code.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from benchmarks.run import ROOT, ours_drain, reset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("other", type=Path, help="Another checkout of the project.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--drain-runs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=2)
    options = parser.parse_args(argv)
    if not (options.other / "manage.py").is_file():
        sys.exit(f"{options.other} is not a checkout of the project (no manage.py).")
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    here: list[float] = []
    there: list[float] = []
    for round_ in range(options.rounds):
        for root, rates in ((ROOT, here), (options.other.resolve(), there)):
            reset()
            rates.append(ours_drain(options.drain_runs, options.concurrency, root=root))
        print(f"round {round_ + 1}: this {here[-1]:,.0f}/s, other {there[-1]:,.0f}/s", flush=True)
    reset()
    mine, theirs = statistics.median(here), statistics.median(there)
    print(
        f"\ndrain of {options.drain_runs:,} no-op runs, {options.concurrency} processes, "
        f"medians of {options.rounds}: this checkout {mine:,.0f}/s, {options.other} "
        f"{theirs:,.0f}/s, ratio {mine / theirs:.2f} (ranges {min(here):,.0f}-{max(here):,.0f} "
        f"and {min(there):,.0f}-{max(there):,.0f})"
    )


if __name__ == "__main__":
    main()
