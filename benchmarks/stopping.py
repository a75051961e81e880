"""Where a default fit stops: SVBLogisticRegression at its defaults against the same fit
training on every row (validationFraction=0, the tol rule alone) and against fixed-epoch
fits, on the many-class sets, in one session.

    python -m benchmarks.stopping [--epochs 1 2 4]
    python -m benchmarks.stopping --seeds 1 2 3 [--epochs 4 7 10]

For the text-like set (``workloads.text_like``, 1,000 classes x 2^14) and the dense
many-class mixture (``workloads.many_classes_dense``, 1,000 classes x 1,024) it prints and
writes (``benchmarks/results/stopping.json``) each fit's wall time, epochs, stop reason,
held-out accuracy, the held-out rows' accuracy per epoch and the loop's milliseconds per
step and phase. The fixed-epoch fits take the default's solver and exchange mode, so that
only the stop differs; the best of them is the most accurate. The default reaches it when its
accuracy is at least the best's minus 0.5 pt, and the ratio of their times is recorded.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks import machine, peers, session, workloads
from benchmarks.session import markdown_table

RESULTS = session.RESULTS / "stopping.json"
SEED_RESULTS = session.RESULTS / "stopping_seeds.json"


def against_fixed_epochs(
    spark, workload: workloads.Workload, epochs: list[int], variants: dict | None = None
) -> dict:
    """The default fit of ``workload``, its ``variants`` (name: params) and its fixed-epoch
    fits, and how the default fares against the most accurate of those."""
    frame = session.cached_frame(spark, workload.X_train, workload.y_train)
    Xt, yt = workload.X_test, workload.y_test
    points = {"default": peers.fit_svb(frame, Xt, yt, 100, numWorkers=session.WORKERS)}
    for name, params in (variants or {}).items():
        points[name] = peers.fit_svb(frame, Xt, yt, 100, numWorkers=session.WORKERS, **params)
    default = points["default"]
    chosen = {"solver": default.extra["solver"], "exchange": default.extra["exchange"]}
    for k in epochs:
        name = f"{k} epoch" if k == 1 else f"{k} epochs"
        points[name] = peers.fit_svb(frame, Xt, yt, k, numWorkers=session.WORKERS, tol=0, **chosen)
    frame.unpersist()
    best = max((name for name in points if "epoch" in name), key=lambda n: points[n].accuracy)
    reaches = default.accuracy >= points[best].accuracy - peers.TARGET_MARGIN
    return {"workload": workload.describe(), "best_fixed": best,
            "default_over_best_fixed_time": default.seconds / points[best].seconds,
            "reaches_best_fixed": reaches,
            "fits": {name: point.to_dict() for name, point in points.items()}}  # fmt: skip


def table(result: dict) -> str:
    rows = []
    for name, fit in result["fits"].items():
        extra = fit["extra"]
        held_out = " ".join(f"{a:.3f}" for a in extra.get("validation_accuracy") or [])
        step = peers.per_step(extra["timings"], extra["steps"])
        rows.append([name, f"{fit['seconds']:.1f}", str(extra["epochs"]), extra["stop_reason"],
                     f"{fit['accuracy']:.4f}", held_out or "-",
                     " / ".join(f"{v * 1e3:.2f}" for v in step.values())])  # fmt: skip
    header = ("fit | s | epochs | stop | test acc. | held-out acc. per epoch | "
              "ms per step: compute / encode / exchange / decode / apply")  # fmt: skip
    return markdown_table(header, rows, "lrrlrll")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seeds", type=int, nargs="+", help="only the dense mixture, per seed")
    args = parser.parse_args(argv)

    # Each set's rows are built on the driver: three 30k x 1024 mixtures outgrow a 1g heap.
    spark = session.local_spark("stopping", "6g")
    session.log("warm-up fit")
    session.warm_up(spark, mllib=False, solver="sgd")
    result = session.where_and_when()
    if args.seeds:  # the held-out stop's patience and bar on other draws of the mixture
        sets = [workloads.many_classes_dense(seed=seed) for seed in args.seeds]
        variants = {"validationTol 0.001": dict(validationTol=0.001)}
    else:
        sets = [workloads.text_like(2**14), workloads.many_classes_dense()]
        variants = {"every row": dict(validationFraction=0.0)}
    for workload in sets:
        session.log(workload.title)
        key = workload.title if args.seeds else workload.name
        result[key] = fits = against_fixed_epochs(spark, workload, args.epochs, variants)
        print(f"\n### {workload.title}\n\n{table(fits)}\n\nthe default against the best "
              f"fixed-epoch fit ({fits['best_fixed']}): "
              f"{fits['default_over_best_fixed_time']:.2f}x its time, "
              f"{'reaches' if fits['reaches_best_fixed'] else 'misses'} its accuracy "
              "minus 0.5 pt", flush=True)  # fmt: skip
    result["load_average_at_end"] = machine.load_average()
    spark.stop()
    session.write(result, SEED_RESULTS if args.seeds else RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
