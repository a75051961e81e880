"""``python -m benchmarks.profile [--shape dense784|sparse500|big] [--json FILE]``: where a warm
``SVBLogisticRegression.fit`` on local[2] spends its time, in seconds: on the driver (pre-pass,
planning and memory checks, training frame, barrier stage, result decoding, model build),
from the stage's submission to its last task's start, in each barrier task (setup, Arrow decode
and standardization, Flight server start, rendezvous, loop, mesh close, result encoding), in the
loop's phases (rank 0's summary).

Shapes (``workloads.planted_rows``): ``dense784``, 60k x 784 dense rows, 10 classes;
``sparse500``, 20k rows, 500 classes x 2^18 hashed features; ``big``, a 2^28 coefficient model
(1024 classes x 2^18 features, 4k rows, one epoch); ``letter16``, letter's shape (16k x 16 dense
rows, 26 classes) at every default, so an L-BFGS fit to MLlib's tol: its iterations, exchange
rounds (line-search evaluations) and ms per round and phase.
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from pathlib import Path

from benchmarks import peers, session, workloads
from svb_spark.core.loop import ROUND_PHASES

SHAPES = {
    # name: (rows, features, classes, sparse, maxIter)
    "dense784": (60000, 784, 10, False, 2),
    "sparse500": (20000, 2**18, 500, True, 1),
    "big": (4096, 2**18, 1024, True, 1),
    "letter16": (16000, 16, 26, False, 100),
}


def driver_steps() -> dict:
    """The functions ``fit`` calls on the driver, as (owner, name), and the phase of each."""
    from svb_spark import fitting, planning
    from svb_spark.control import delivery

    return {
        (fitting, "inspect_training_data"): "inspect",
        (planning, "plan_fit"): "plan",
        (fitting, "training_frame"): "training_frame",
        (fitting, "fit_by_barrier_stage"): "barrier_stage",
        (delivery.ModelBuild, "finish"): "finish_model",
    }


@contextmanager
def driver_phases(marks: dict):
    """Time the driver's steps of ``fit`` by wrapping the functions of :func:`driver_steps`."""
    wrapped = driver_steps()
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
    with driver_phases(marks):
        started = time.perf_counter()
        model, _ = peers.timed_fit(SVBLogisticRegression(maxIter=max_iter, **params), df)
        ended = time.perf_counter()
    summary = model.summary
    timings = summary.timings
    driver = {
        "inspect": marks["inspect"],
        "plan": marks["plan"],
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
        "rounds": summary.steps,
        "solver": summary.solver,
        "replica_checks": getattr(summary, "replicaChecks", None),
        "exchange": summary.exchange,
        "driver": driver,
        "workers": workers,
        "round_phases": {p: timings.get(p, 0.0) for p in ROUND_PHASES},
    }


def print_profile(name: str, profile: dict) -> None:
    print(f"\n== {name}: {profile['epochs']} epoch(s) of {profile['solver']} in "
          f"{profile['rounds']} exchange rounds, exchange {profile['exchange']}, "
          f"{profile['replica_checks']} replica check(s)")  # fmt: skip
    for label, key in (("total fit", "total"), ("loop (rank 0)", "loop"),
                       ("outside the loop", "outside_loop")):  # fmt: skip
        print(f"{label:44s} {profile[key]:8.2f} s")
    sections = {
        "driver": profile["driver"],
        **{f"task rank {rank}": phases for rank, phases in sorted(profile["workers"].items())},
        "loop phases (rank 0)": profile["round_phases"],
    }
    for section, phases in sections.items():
        print(section)
        for phase, seconds in phases.items():
            print(f"  {phase:42s} {seconds:8.2f} s")
    rounds = max(profile["rounds"], 1)
    print("per exchange round (rank 0)")
    for phase, seconds in profile["round_phases"].items():
        print(f"  {phase:42s} {seconds / rounds * 1e3:8.3f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("--shape", choices=sorted(SHAPES), action="append")
    parser.add_argument("--json", help="also write the profiles to this file")
    parser.add_argument("--driver-memory", default="6g")
    args = parser.parse_args(argv)
    shapes = args.shape or ["dense784", "sparse500"]

    spark = session.local_spark(
        "profile", args.driver_memory, **{"spark.driver.maxResultSize": "0"}
    )
    # Warm-up: Python workers, Arrow and the Flight libraries are loaded once per session.
    session.warm_up(spark, mllib=False)
    profiles = {}
    for name in shapes:
        *shape, max_iter = SHAPES[name]
        df = session.cached_frame(spark, *workloads.planted_rows(*shape))
        profile_fit(df, 1)  # a first fit warms this shape's code paths
        profiles[name] = profile_fit(df, max_iter)
        print_profile(name, profiles[name])
        df.unpersist()
    if args.json:
        session.write(profiles, Path(args.json))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
