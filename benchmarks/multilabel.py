"""Multi-label: generated Zipfian tags (1 to 10 labels a row, ``datasets.tagged_labels``);
SVB's default fit against scikit-learn's one-vs-rest logistic regression (2 jobs) and MLlib's
binomial LogisticRegression fitted label by label (timed on a few labels, extrapolated to
all): fit time, micro F1, precision@1 and @5 on held-out rows. Each is timed after an untimed
warm-up fit (SVB's and MLlib's on digits, scikit-learn's on 500 rows, which starts its pool).

    python -m benchmarks.multilabel --labels 1000 --rows 20000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from pyspark.ml.evaluation import RankingEvaluator
from pyspark.sql import functions as F

from benchmarks.session import RESULTS, WORKERS, local_spark, record_points, warm_up
from svb_spark import SVBLogisticRegression
from svb_spark.datasets import tagged_labels


def frame(spark, X, sets):
    """Rows and label sets as (features, label array<double>), one partition per worker."""
    from pyspark.ml.linalg import SparseVector, VectorUDT
    from pyspark.sql.types import ArrayType, DoubleType, StructField, StructType

    schema = StructType([StructField("features", VectorUDT()),
                         StructField("label", ArrayType(DoubleType()))])  # fmt: skip
    rows = [(SparseVector(X.shape[1], X.indices[a:b], X.data[a:b]), [float(k) for k in s])
            for a, b, s in zip(X.indptr[:-1], X.indptr[1:], sets)]  # fmt: skip
    data = spark.createDataFrame(rows, schema).repartition(WORKERS).cache()
    data.count()
    return data


def ranking_metrics(top: np.ndarray, sets) -> dict:
    """precision@1 and @5 of rows' ranked labels ``top`` (rows x 5) against their label sets."""
    hits = np.array([[k in s for k in row] for row, s in zip(top, sets)])
    return {"precision_at_1": float(hits[:, :1].mean()), "precision_at_5": float(hits.mean())}


def micro_f1(predicted, sets) -> float:  # 2 TP / (predicted + true labels)
    tp = sum(len(set(p) & set(s)) for p, s in zip(predicted, sets))
    return 2 * tp / max(sum(map(len, predicted)) + sum(map(len, sets)), 1)


def svb(train, test) -> dict:
    started = time.perf_counter()
    model = SVBLogisticRegression(numWorkers=WORKERS, topKCol="topK", probabilityCol="",
                                  rawPredictionCol="").fit(train)  # fmt: skip
    seconds = time.perf_counter() - started
    scored = model.transform(test).select("label", "prediction", "topK").collect()
    ranking = RankingEvaluator(predictionCol="topK", metricName="precisionAtK", k=5)
    precision = ranking.evaluate(model.transform(test))  # pyspark's, on the column as it is
    summary = model.summary
    return {"fit": "SVB default", "seconds": seconds, "epochs": summary.totalIterations,
            "solver": summary.solver, "exchange": summary.exchange, "stop": summary.stopReason,
            "micro_f1": micro_f1([r.prediction for r in scored], [r.label for r in scored]),
            "ranking_evaluator_precision_at_5": precision,
            **ranking_metrics(np.array([r.topK for r in scored]), [r.label for r in scored]),
            }  # fmt: skip


def sklearn_one_vs_rest(X, sets, X_test, test_sets, labels: int) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import MultiLabelBinarizer

    Y = MultiLabelBinarizer(classes=range(labels), sparse_output=True).fit_transform(sets)
    OneVsRestClassifier(LogisticRegression(), n_jobs=WORKERS).fit(X[:500], Y[:500])  # warm-up
    started = time.perf_counter()
    model = OneVsRestClassifier(LogisticRegression(), n_jobs=WORKERS).fit(X, Y)
    seconds = time.perf_counter() - started
    scores = model.decision_function(X_test)
    predicted = [np.flatnonzero(row > 0).tolist() for row in scores]
    top = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    return {"fit": "scikit-learn OneVsRest(LogisticRegression), n_jobs=2", "seconds": seconds,
            "micro_f1": micro_f1(predicted, test_sets), **ranking_metrics(top, test_sets),
            }  # fmt: skip


def mllib_per_label(train, labels: int, timed: int) -> dict:
    """MLlib's LogisticRegression per label on ``timed`` labels, frequent to rare; extrapolated."""
    from pyspark.ml.classification import LogisticRegression

    chosen = np.unique(np.linspace(0, labels - 1, timed).astype(int))
    seconds = []
    for k in chosen:
        one = train.withColumn("y", F.array_contains("label", float(k)).cast("double"))
        started = time.perf_counter()
        LogisticRegression(labelCol="y").fit(one)
        seconds.append(time.perf_counter() - started)
    return {"fit": "MLlib binomial LogisticRegression per label", "labels_timed": len(chosen),
            "seconds_per_label": float(np.mean(seconds)),
            "seconds": float(np.mean(seconds)) * labels, "extrapolated": True}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.multilabel")
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--features", type=int, default=1 << 16)
    parser.add_argument("--mllib-labels", type=int, default=20, help="labels MLlib is timed on")
    parser.add_argument("--skip", nargs="*", default=[], choices=["sklearn", "mllib"])
    args = parser.parse_args(argv)
    spark = local_spark("multilabel", driver_memory="6g")
    draw = tagged_labels(args.labels, np.random.default_rng(0), num_features=args.features)
    (X, sets), (X_test, test_sets) = draw(args.rows), draw(10_000)
    train, test = frame(spark, X, sets), frame(spark, X_test, test_sets)
    warm_up(spark, mllib="mllib" not in args.skip)
    runs = {"svb": lambda: svb(train, test),
            "sklearn": lambda: sklearn_one_vs_rest(X, sets, X_test, test_sets, args.labels),
            "mllib": lambda: mllib_per_label(train, args.labels, args.mllib_labels)}  # fmt: skip
    path = RESULTS / f"multilabel_{args.labels}x{args.features}.json"
    record_points([run for name, run in runs.items() if name not in args.skip], path, vars(args))
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
