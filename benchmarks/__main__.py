"""``python -m benchmarks run [--quick | --full | --smoke]``, ``python -m benchmarks show RESULT``.

``run`` measures SVB against MLlib and scikit-learn on a two-executor local cluster, writes
``benchmarks/results/NAME.json`` and prints its tables; ``show`` prints the tables of a saved
result. Nothing here edits a README: quote the figures from the result files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen subcommand; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="measure, write the result JSON, print its tables")
    size = run.add_mutually_exclusive_group()
    for mode, what in (
        ("quick", "smaller W1 (K=200, D=256, 10k/2k rows) and W3 (K=100, D=2^15, 2k/500 rows), "
         "under 10 minutes on 2 cores"),
        ("full", "the issue's sizes (W1: K=1000, D=512, 20k/5k rows; W3: K=500, D=2^18, 20k/5k)"),
        ("smoke", "tiny W1 (K=20, D=32) and W3: checks the harness end to end, figures mean "
         "nothing"),
    ):  # fmt: skip
        size.add_argument(f"--{mode}", action="store_const", dest="mode", const=mode, help=what)
    run.add_argument("--name", help="result name (default: the mode)")
    run.add_argument("--workloads", default="W1,W2,W3", help="comma-separated (default: all)")
    run.add_argument("--results-dir", type=Path,
                     help="directory of the result JSON (default: benchmarks/results)")  # fmt: skip
    show = commands.add_parser("show", help="print the tables of a saved result")
    show.add_argument("result", type=Path)
    args = parser.parse_args(argv)

    from benchmarks import report, run

    if args.command == "run":
        names = [w.strip() for w in args.workloads.split(",") if w.strip()]
        run.run(args.mode or "quick", name=args.name, names=names,
                results_dir=args.results_dir or run.RESULTS)  # fmt: skip
    else:
        print(report.tables(json.loads(args.result.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
