"""svb_spark: multiclass logistic regression on Spark with the Sufficient Vector Broadcaster."""

import logging

from svb_spark.classification import (
    SVBConvergenceWarning,
    SVBLogisticRegression,
    SVBLogisticRegressionModel,
)
from svb_spark.summary import SVBLogisticRegressionSummary, SVBLogisticRegressionTrainingSummary

# A library adds no handler of its own: the application decides what its logging shows.
logging.getLogger("svb_spark").addHandler(logging.NullHandler())

__version__ = "0.1.0"

__all__ = [
    "SVBConvergenceWarning",
    "SVBLogisticRegression",
    "SVBLogisticRegressionModel",
    "SVBLogisticRegressionSummary",
    "SVBLogisticRegressionTrainingSummary",
]
