"""initialModel: the weights of an SVB or MLlib model (or a saved SVB model's path), in the rows
the fit trains (one for the binomial family, one per class for the multinomial), mapped into
the standardized space training runs in."""

from __future__ import annotations

import numpy as np

from svb_spark.core import standardization
from svb_spark.core.config import TrainingConfig


def initial_weights(model, config: TrainingConfig, owner: str) -> tuple[np.ndarray, np.ndarray]:
    """``model``'s (W, b) for the fit of ``config``, standardized; a ValueError naming
    ``owner``'s param when the shapes differ."""
    W, b = as_rows(*model_weights(model), config.num_classes)
    expected = (config.num_classes, config.num_features)
    if W.shape != expected:
        raise ValueError(
            f"The 'initialModel' parameter of {owner} has {_classes(W.shape[0])} classes x "
            f"{W.shape[1]} features but the data has {_classes(expected[0])} classes x "
            f"{expected[1]} features; give a model trained on data of the same shape (set "
            "numClasses if the labels do not reach the model's largest class)."
        )
    return standardization.standardize_weights(
        W, b, config.mean, config.scale, config.fit_intercept
    )


def model_weights(model) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) as float64 arrays, in the model's own rows, of an SVB model, an MLlib model or a
    saved SVB model's path."""
    from svb_spark.classification import SVBLogisticRegressionModel

    if isinstance(model, str):
        model = SVBLogisticRegressionModel.load(model)
    if isinstance(model, SVBLogisticRegressionModel):
        return model._W.copy(), model._b.copy()
    W = model.coefficientMatrix.toArray().astype(np.float64)
    return W, model.interceptVector.toArray().astype(np.float64)


def as_rows(W: np.ndarray, b: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes' weights in ``rows`` rows: a binomial model's margin m is the softmax of
    margins (0, m), and a 2-row softmax is the sigmoid of its margins' difference. Other
    shapes come back as they are."""
    if rows == 2 and W.shape[0] == 1:
        return np.vstack([np.zeros_like(W), W]), np.array([0.0, b[0]])
    if rows == 1 and W.shape[0] == 2:
        return (W[1] - W[0])[None, :], np.array([b[1] - b[0]])
    return W, b


def _classes(rows: int) -> int:
    return 2 if rows == 1 else rows
