"""``python -m benchmarks.profile [--shape dense784|sparse500|big] [--json FILE]``: where a warm
``SVBLogisticRegression.fit`` on local[2] spends its time, in seconds: on the driver (pre-pass,
planning, replica memory check, training frame, barrier stage, result decoding, model build),
from the stage's submission to its last task's start, in each barrier task (setup, Arrow decode
and standardization, Flight server start, rendezvous, loop, mesh close, result encoding), in the
loop's phases (rank 0's summary), and the curvature estimate (part of a task's ``load``),
re-measured on the driver on one worker's share of the rows.

Shapes (:mod:`svb_spark.datasets`): ``dense784``, 60k x 784 dense rows, 10 classes;
``sparse500``, 20k rows, 500 classes x 2^18 hashed features; ``big``, a 2^28 coefficient model
(1024 classes x 2^18 features, 4k rows, one epoch).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from contextlib import contextmanager

import numpy as np

from svb_spark.core.training import ROUND_PHASES

SHAPES = {
    # name: (rows, features, classes, sparse, maxIter)
    "dense784": (60000, 784, 10, False, 2),
    "sparse500": (20000, 2**18, 500, True, 1),
    "big": (4096, 2**18, 1024, True, 1),
}


def shape_data(name: str):
    """(X, y) of a shape: dense or CSR."""
    from svb_spark import datasets

    rows, features, classes, sparse, _ = SHAPES[name]
    if sparse:
        return datasets.planted_sparse(rows, features, classes, seed=0)
    return datasets.planted(rows, features, classes, seed=0)


@contextmanager
def driver_phases(marks: dict):
    """Time the driver's steps of ``fit`` by wrapping the functions ``_fit`` calls."""
    from svb_spark import classification
    from svb_spark.control import delivery

    wrapped = {
        (classification, "inspect_training_data"): "inspect",
        (classification.SVBLogisticRegression, "_plan_fit"): "plan",
        (classification, "check_replica_fits"): "replica_memory_check",
        (classification, "training_frame"): "training_frame",
        (classification, "fit_by_barrier_stage"): "barrier_stage",
        (delivery.ModelBuild, "finish"): "finish_model",
    }
    originals = {key: getattr(*key) for key in wrapped}

    def timed(function, phase):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                end = time.perf_counter()
                marks[phase] = marks.get(phase, 0.0) + end - start
                marks[phase + "_end"] = end

        return call

    for (owner, name), phase in wrapped.items():
        setattr(owner, name, timed(originals[(owner, name)], phase))
    try:
        yield marks
    finally:
        for (owner, name), original in originals.items():
            setattr(owner, name, original)


def profile_fit(df, max_iter: int, **params) -> dict:
    """One fit's phases in seconds: ``driver``, ``workers`` (per rank) and ``loop``."""
    from svb_spark import SVBLogisticRegression

    marks: dict = {}
    with driver_phases(marks), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        model = SVBLogisticRegression(maxIter=max_iter, **params).fit(df)
        ended = time.perf_counter()
    summary = model.summary
    timings = summary.timings
    driver = {
        "inspect": marks["inspect"],
        "plan": marks["plan"],
        "replica_memory_check": marks.get("replica_memory_check", 0.0),
        "training_frame": marks["training_frame"],
        "stage: submit to last task start": timings.get("task_start", float("nan")),
        "stage: collect (whole stage)": timings.get("stage", float("nan")),
        "decode result": timings.get("result_decode", float("nan")),
        "model build (after the stage)": ended - marks["barrier_stage_end"],
        "  of which finishing the model": marks.get("finish_model", 0.0),
    }
    workers = {w["rank"]: w.get("phases", {}) for w in summary.workers}
    loop = workers[0].get("loop", 0.0)
    return {
        "total": ended - started,
        "loop": loop,
        "outside_loop": ended - started - loop,
        "epochs": summary.totalIterations,
        "replica_checks": getattr(summary, "replicaChecks", None),
        "exchange": summary.exchange,
        "driver": driver,
        "workers": workers,
        "round_phases": {p: timings.get(p, 0.0) for p in ROUND_PHASES},
    }


def curvature_seconds(X, y, num_workers: int) -> float:
    """The curvature estimate on one worker's share of the rows, standardized as in a task."""
    from svb_spark.core import numerics

    rows = X[: X.shape[0] // num_workers].astype(np.float32)  # dense or CSR
    weights = np.ones(rows.shape[0], dtype=np.float32)
    start = time.perf_counter()
    numerics.curvature(rows, weights, True)
    return time.perf_counter() - start


def print_profile(name: str, profile: dict) -> None:
    print(f"\n== {name}: {profile['epochs']} epoch(s), exchange {profile['exchange']}, "
          f"{profile['replica_checks']} replica check(s)")  # fmt: skip
    for label, key in (("total fit", "total"), ("loop (rank 0)", "loop"),
                       ("outside the loop", "outside_loop")):  # fmt: skip
        print(f"{label:44s} {profile[key]:8.2f} s")
    sections = {
        "driver": profile["driver"],
        **{f"task rank {rank}": phases for rank, phases in sorted(profile["workers"].items())},
        "curvature (driver re-measure, one share)": {"curvature": profile["curvature"]},
        "loop phases (rank 0)": profile["round_phases"],
    }
    for section, phases in sections.items():
        print(section)
        for phase, seconds in phases.items():
            print(f"  {phase:42s} {seconds:8.2f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("--shape", choices=sorted(SHAPES), action="append")
    parser.add_argument("--json", help="also write the profiles to this file")
    parser.add_argument("--driver-memory", default="6g")
    args = parser.parse_args(argv)
    shapes = args.shape or ["dense784", "sparse500"]

    from svb_spark.datasets import planted, to_dataframe
    from svb_spark.spark.session import local_session

    spark = local_session(
        "local[2]",
        app_name="svb_spark-profile",
        **{"spark.driver.memory": args.driver_memory, "spark.driver.maxResultSize": "0"},
    )
    # Warm-up: Python workers, Arrow and the Flight libraries are loaded once per session.
    profile_fit(to_dataframe(spark, *planted(2000, 16, 10), 2).cache(), 1)
    profiles = {}
    for name in shapes:
        X, y = shape_data(name)
        df = to_dataframe(spark, X, y, 2).cache()
        df.count()
        _, _, _, _, max_iter = SHAPES[name]
        profile_fit(df, 1)  # a first fit warms this shape's code paths
        profiles[name] = profile_fit(df, max_iter)
        profiles[name]["curvature"] = curvature_seconds(X, y, 2)
        print_profile(name, profiles[name])
        df.unpersist()
    if args.json:
        with open(args.json, "w") as out:
            json.dump(profiles, out, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
