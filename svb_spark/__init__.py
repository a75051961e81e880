"""svb_spark: multiclass logistic regression on Spark with the Sufficient Vector Broadcaster."""

from svb_spark.classification import (
    SVBConvergenceWarning,
    SVBLogisticRegression,
    SVBLogisticRegressionModel,
)
from svb_spark.summary import SVBLogisticRegressionSummary, SVBLogisticRegressionTrainingSummary

__version__ = "0.1.0"

__all__ = [
    "SVBConvergenceWarning",
    "SVBLogisticRegression",
    "SVBLogisticRegressionModel",
    "SVBLogisticRegressionSummary",
    "SVBLogisticRegressionTrainingSummary",
]
