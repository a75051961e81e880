"""Binary classification, SVB against MLlib's LogisticRegression in one session on local[2].

    python -m benchmarks.binary [--rows 200000] [--repeats 2]

After one untimed small fit of each estimator on each shape, writes
``benchmarks/results/binary.json`` and prints two tables:

- ``sparse``: CTR-like rows, both estimators at every default, and SVB with solver="sgd"
  (minibatch steps, the alternative to L-BFGS). 32 categorical fields (4 to 200,000
  Zipf-distributed values, each present with probability 0.8) hashed into D = 2^20; labels
  from a sparse logistic teacher, about 3% positive. Fit time, iterations, stop reason,
  held-out areaUnderROC (``BinaryClassificationEvaluator``) and log loss.
- ``lbfgs``: seconds per iteration on correlated dense rows x 100 features, tol 0, where
  SVB's solver="auto" takes L-BFGS. (time at maxIter 210 - at 10) / 200 cancels each fit's
  fixed costs; SVB's also from its training loop's phases, and the ratio takes the larger.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

from benchmarks import machine, peers, session, workloads
from benchmarks.session import markdown_table

RESULTS = session.RESULTS / "binary.json"
D_SPARSE, D_DENSE, POSITIVE_RATE, LBFGS_ITERS = 1 << 20, 100, 0.03, (10, 210)
NAMES = {"mllib": "MLlib", "svb": "SVB", "svb_sgd": "SVB, solver sgd"}


def ctr_rows(rows: int, seed: int, fields: int = 32):
    """Hashed categorical rows (CSR) and labels whose mean probability is POSITIVE_RATE."""
    rng = np.random.default_rng(seed)
    values = rng.zipf(1.15, (rows, fields)).astype(np.uint64) - np.uint64(1)
    values %= np.geomspace(4, 200_000, fields).astype(np.uint64)
    present = rng.random((rows, fields)) < 0.8
    columns = workloads.hashed_columns(values, D_SPARSE, np.arange(fields))[present]
    indptr = np.r_[0, np.cumsum(present.sum(axis=1))]
    X = sp.csr_matrix((np.ones(len(columns)), columns, indptr), shape=(rows, D_SPARSE))
    X.sum_duplicates()
    margin = X @ (rng.normal(0, 0.6, D_SPARSE) * (rng.random(D_SPARSE) < 0.3))
    low, high = -30.0, 10.0
    for _ in range(60):  # the teacher's intercept, by bisection on the mean probability
        mid = (low + high) / 2
        low, high = (low, mid) if expit(margin + mid).mean() > POSITIVE_RATE else (mid, high)
    return X, (rng.random(rows) < expit(margin + low)).astype(np.float64)


def dense_rows(rows: int, seed: int):
    """Correlated Gaussian rows (through a random mixing matrix, so that L-BFGS runs well past
    LBFGS_ITERS[1] iterations) and labels of a dense logistic teacher."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, D_DENSE)) @ rng.normal(size=(D_DENSE, D_DENSE))
    margin = X @ rng.normal(0, 2 / np.sqrt(D_DENSE), D_DENSE) / np.sqrt(D_DENSE) - 1.0
    return X, (rng.random(rows) < expit(margin)).astype(np.float64)


def estimators(svb_only: dict | None = None, **params) -> dict:
    """Both estimators with ``params``; ``svb_only`` holds SVB's own (e.g. solver)."""
    from pyspark.ml.classification import LogisticRegression

    from svb_spark import SVBLogisticRegression

    svb = SVBLogisticRegression(**params, **(svb_only or {}))
    return {"svb": svb, "mllib": LogisticRegression(**params)}


def fit(name: str, estimator, frame) -> tuple[object, dict]:
    """The model, and the fit's seconds, iterations and why it stopped (MLlib does not say
    why before maxIter)."""
    model, seconds = peers.timed_fit(estimator, frame)
    s, max_iter = model.summary, estimator.getMaxIter()
    out = {"seconds": seconds, "iterations": int(s.totalIterations)}
    if name.startswith("svb"):
        out.update(solver=s.solver, stop_reason=s.stopReason, steps=s.steps, timings=s.timings)
    else:
        out["stop_reason"] = "maxIter" if s.totalIterations >= max_iter else "converged"
    return model, out


def held_out(model, test_frame, X, y) -> dict:
    """areaUnderROC from Spark's evaluator on ``transform``, and the mean log loss."""
    from pyspark.ml.evaluation import BinaryClassificationEvaluator

    auc = BinaryClassificationEvaluator().evaluate(model.transform(test_frame))
    margin = X @ model.coefficientMatrix.toArray()[-1] + model.interceptVector.toArray()[-1]
    return {"auc": auc, "log_loss": float(np.mean(np.logaddexp(0, margin) - y * margin))}


def sparse_section(spark, rows: int, repeats: int) -> dict:
    X, y = ctr_rows(rows + rows // 4, seed=21)
    train, test = (
        session.cached_frame(spark, X[s], y[s]) for s in (slice(rows), slice(rows, None))
    )
    out = {"train_rows": rows, "test_rows": len(y) - rows, "num_features": D_SPARSE, "runs": [],
           "nonzeros_per_row": X.nnz / len(y), "positive_rate": float(y.mean())}  # fmt: skip
    for _ in range(repeats):
        fits = {}
        chosen = {**estimators(), "svb_sgd": estimators({"solver": "sgd"})["svb"]}
        for name, estimator in chosen.items():
            session.log(f"sparse: {name}")
            model, fits[name] = fit(name, estimator, train)
            fits[name].update(held_out(model, test, X[rows:], y[rows:]))
        for name in ("svb", "svb_sgd"):
            fits[name]["mllib_over_this_time"] = fits["mllib"]["seconds"] / fits[name]["seconds"]
        out["runs"].append(fits)
    train.unpersist(), test.unpersist()
    return out


def lbfgs_section(spark, rows: int, repeats: int) -> dict:
    frame = session.cached_frame(spark, *dense_rows(rows, seed=22))
    out = {"rows": rows, "num_features": D_DENSE, "max_iter": LBFGS_ITERS, "runs": []}
    for _ in range(repeats):
        fits = {}
        for name in ("svb", "mllib"):
            points = []
            for max_iter in LBFGS_ITERS:
                session.log(f"lbfgs: {name}, maxIter {max_iter}")
                both = estimators({"solver": "lbfgs"}, maxIter=max_iter, tol=0.0)
                points.append(fit(name, both[name], frame)[1])
            lo, hi = points
            per = (hi["seconds"] - lo["seconds"]) / max(hi["iterations"] - lo["iterations"], 1)
            fits[name] = {"fits": points, "seconds_per_iteration": per}
        svb, hi = fits["svb"], fits["svb"]["fits"][1]  # its loop's phases in the longer fit
        svb["loop_seconds_per_iteration"] = peers.loop_seconds(hi["timings"]) / hi["iterations"]
        larger = max(svb["seconds_per_iteration"], svb["loop_seconds_per_iteration"])
        fits["svb_over_mllib_per_iteration"] = larger / fits["mllib"]["seconds_per_iteration"]
        out["runs"].append(fits)
    frame.unpersist()
    return out


def tables(result: dict) -> str:
    sparse, lbfgs = [], []
    for i, r in enumerate(result["sparse"]["runs"]):
        for name, f in r.items():
            ratio = f"{f['mllib_over_this_time']:.2f}x" if "mllib_over_this_time" in f else ""
            sparse.append([f"run {i + 1}: {NAMES[name]}", f"{f['seconds']:.1f}",
                           str(f["iterations"]), f"{f.get('solver', 'lbfgs')}, {f['stop_reason']}",
                           f"{f['auc']:.4f}", f"{f['log_loss']:.4f}", ratio])  # fmt: skip
    for i, r in enumerate(result["lbfgs"]["runs"]):
        for name in ("mllib", "svb"):
            f, loop = r[name], r[name].get("loop_seconds_per_iteration")
            per = f"{1000 * f['seconds_per_iteration']:.1f}"
            lbfgs.append([f"run {i + 1}: {NAMES[name]}",
                          *(f"{p['seconds']:.2f} s, {p['iterations']} it" for p in f["fits"]),
                          per + (f" (loop {1000 * loop:.1f})" if loop else ""),
                          f"{r['svb_over_mllib_per_iteration']:.2f}x"])  # fmt: skip
    return "\n\n".join([
        markdown_table("sparse CTR | fit (s) | iterations | solver, stop | held-out AUC"
                       " | held-out log loss | MLlib / this time", sparse),
        markdown_table("dense, tol 0 | maxIter {} | maxIter {} | ms per iteration"
                       " | SVB / MLlib per iteration".format(*LBFGS_ITERS), lbfgs),
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="training rows of each section")
    parser.add_argument("--repeats", type=int, default=2, help="measurements of each fit")
    args = parser.parse_args(argv)

    spark = session.local_spark("binary", "6g", one_blas_thread=True)
    started, load = time.perf_counter(), machine.load_average()
    for X, y in (ctr_rows(2000, seed=1), dense_rows(2000, seed=1)):  # warm both up, untimed
        frame = session.cached_frame(spark, X, y)
        for name, estimator in estimators(maxIter=3).items():
            fit(name, estimator, frame)
        frame.unpersist()
    result = {"sparse": sparse_section(spark, args.rows, args.repeats),
              "lbfgs": lbfgs_section(spark, args.rows, args.repeats)}  # fmt: skip
    loads = [load, machine.load_average()]
    result["machine"] = {**machine.python_machine(), "jvm_blas": machine.jvm_blas(spark),
                         "load_average_at_start_and_end": loads}  # fmt: skip
    spark.stop()
    session.write(result, RESULTS)
    print(tables(result))
    print(f"({time.perf_counter() - started:.0f} s in all; written to {RESULTS})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
