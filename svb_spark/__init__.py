"""svb_spark: multiclass logistic regression on Spark with the Sufficient Vector Broadcaster.

The public names load on first use: a Python worker that imports the training core pays for
numpy and Arrow only, not for ``pyspark.ml`` (about half a second in a fresh interpreter).
"""

import importlib
import logging

# A library adds no handler of its own: the application decides what its logging shows.
logging.getLogger("svb_spark").addHandler(logging.NullHandler())

__version__ = "0.1.0"

# Public name -> the module that defines it.
_PUBLIC = {
    "SVBConvergenceWarning": "svb_spark.classification",
    "SVBLogisticRegression": "svb_spark.classification",
    "SVBLogisticRegressionModel": "svb_spark.classification",
    "SVBLogisticRegressionSummary": "svb_spark.summary",
    "SVBLogisticRegressionTrainingSummary": "svb_spark.summary",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'svb_spark' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
