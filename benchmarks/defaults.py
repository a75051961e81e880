"""Default fits side by side: SVBLogisticRegression with every param at its default against
MLlib's LogisticRegression with its defaults, in one session, on the same cached rows.

    python -m benchmarks.defaults [--sparse-features 32768] [--wide]
    python -m benchmarks.defaults --text [--text-features 16384] [--driver-memory 8g]

After one untimed short fit of each peer (the session's first jobs pay for JIT compilation
and starting Python workers), for each data set it prints and writes
(``benchmarks/results/defaults.json``) the fit's wall time, held-out accuracy, epochs or
iterations and why SVB stopped, and the ratio of MLlib's time to SVB's. SVB counts as
reaching MLlib when its accuracy is at least MLlib's minus 0.5 pt. ``--wide`` adds the
sparse 500 x 2^18 check: a default fit against a 3-epoch fit. ``--text`` runs only the
many-class text-like set (``workloads.text_like``) and adds its row, keyed by its number of
features, to ``benchmarks/results/text.json``; MLlib's failure (out of memory, past
``--mllib-seconds``) is recorded as its result.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
import time

from benchmarks import machine, peers, session, stopping, workloads
from benchmarks.session import markdown_table

RESULTS = session.RESULTS / "defaults.json"
TEXT_RESULTS = session.RESULTS / "text.json"


def compare(spark, workload: workloads.Workload, mllib_seconds: float | None = None) -> dict:
    """MLlib and SVB, both at their defaults, on one cached frame of ``workload``; MLlib's
    jobs are cancelled after ``mllib_seconds``."""
    frame = session.cached_frame(spark, workload.X_train, workload.y_train)
    Xt, yt = workload.X_test, workload.y_test
    result = {"workload": workload.describe()}
    session.log(f"{workload.title}: SVB")
    svb = peers.fit_svb(frame, Xt, yt, max_iter=100, numWorkers=session.WORKERS)
    result["svb"] = svb.to_dict()
    session.log(f"{workload.title}: MLlib")
    try:
        mllib = peers.fit_mllib(frame, Xt, yt, max_iter=100, time_limit=mllib_seconds)
        reaches = svb.accuracy >= mllib.accuracy - peers.TARGET_MARGIN
        result.update(mllib=mllib.to_dict(), mllib_over_svb_time=mllib.seconds / svb.seconds,
                      reaches_mllib=reaches)  # fmt: skip
    except peers.PeerFailed as failure:  # a time limit, out of memory: recorded, not fatal
        result.update(mllib_failed=failure.reason, mllib_failed_after_s=failure.seconds)
    with contextlib.suppress(Exception):  # MLlib out of memory may have ended the JVM
        frame.unpersist()
    return result


def _fit(point: dict, what: str = "") -> str:
    return f"{what}{point['seconds']:.1f} s, {point['accuracy']:.4f}"


def row(name: str, result: dict) -> list[str]:
    """One table row: MLlib's fit, SVB's, the time ratio and whether SVB reaches MLlib (or,
    for ``--wide``, the best fixed-epoch fit, SVB's default, and the same)."""
    if "best_fixed" in result:
        best = result["best_fixed"]
        return [name, _fit(result["fits"][best], f"{best}: "),
                _fit(result["fits"]["default"], "default: "),
                f"{result['default_over_best_fixed_time']:.2f}x of the {best} time",
                "yes" if result["reaches_best_fixed"] else "no"]  # fmt: skip
    svb, extra = result["svb"], result["svb"]["extra"]
    ours = (f"{_fit(svb)}, {extra['epochs']} epochs ({extra['solver']}, stopped by "
            f"{extra['stop_reason']})")  # fmt: skip
    if "mllib" not in result:
        return [name, f"failed: {result['mllib_failed'][:80]}", ours, "-", "-"]
    mllib = result["mllib"]
    return [
        name,
        f"{_fit(mllib)}, {mllib['iterations']} it",
        ours,
        f"{result['mllib_over_svb_time']:.2f}x",
        "yes" if result["reaches_mllib"] else "no",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 500 classes x 40 signature features each need at least 20,000 hashed features.
    parser.add_argument("--sparse-features", type=int, default=2**15)
    parser.add_argument("--wide", action="store_true", help="also the 500 x 2^18 sparse check")
    parser.add_argument("--text", action="store_true", help="only the many-class text-like set")
    parser.add_argument("--text-features", type=int, default=2**14, choices=(2**14, 2**18))
    parser.add_argument("--driver-memory", default="12g")
    parser.add_argument("--mllib-seconds", type=float, default=None, help="MLlib's time limit")
    args = parser.parse_args(argv)

    # MLlib's L-BFGS keeps several dense copies of K x D doubles on the driver (OOM at 1g for
    # 500 x 2^15); both peers get the same generous driver.
    spark = session.local_spark("defaults", args.driver_memory)
    started, load = time.perf_counter(), machine.load_average()
    session.warm_up(spark)
    if args.text:  # one row, added to the rows of TEXT_RESULTS
        path, workload = TEXT_RESULTS, workloads.text_like(args.text_features)
        results = json.loads(path.read_text()) if path.exists() else {}
        results[workload.title] = compare(spark, workload, args.mllib_seconds)
        results[workload.title].update(
            date=f"{datetime.date.today()}", driver_memory=args.driver_memory,
            load_average_at_start_and_end=[load, machine.load_average()],
        )  # fmt: skip
    else:
        path = RESULTS
        sets = {
            "digits": workloads.w2_digits(),
            "letter": workloads.letter(),
            "satellite": workloads.satellite(),
            "W1 quick": workloads.w1_planted(),
            "sparse text": workloads.sparse_text(500, args.sparse_features, 20_000, 5_000),
        }
        results = {name: compare(spark, workload) for name, workload in sets.items()}
        if args.wide:  # the sparse bar: a default fit against a 3-epoch fit of the same data
            wide = workloads.sparse_text(500, 2**18, 20_000, 5_000)
            results["sparse 500 x 2^18: default vs 3 epochs"] = stopping.against_fixed_epochs(
                spark, wide, [3]
            )
    with contextlib.suppress(Exception):  # MLlib out of memory may have ended the JVM
        spark.stop()
    session.write(results, path)
    header = "data | MLlib defaults | SVB defaults | MLlib / SVB time | reaches MLlib - 0.5 pt"
    print(markdown_table(header, [row(name, r) for name, r in results.items()], "lllll"))
    print(f"({time.perf_counter() - started:.0f} s in all; written to {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
