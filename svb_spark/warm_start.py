"""initialModel: the weights of an SVB or MLlib model, in the rows the fit trains (one for the
binomial family, one per class for the multinomial), mapped into the standardized space
training runs in. A saved SVB model's path is loaded by the fit (:mod:`svb_spark.fitting`),
which knows the model class, so this module needs only the arrays a model exposes."""

from __future__ import annotations

import numpy as np

from svb_spark.core import standardization
from svb_spark.core.config import TrainingConfig


def initial_weights(model, config: TrainingConfig, owner: str) -> tuple[np.ndarray, np.ndarray]:
    """``model``'s (W, b) for the fit of ``config``, standardized; a ValueError naming
    ``owner``'s param when the shapes differ. ``model`` is a model object, not a path."""
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
    """(W, b) as float64 arrays, in the model's own rows, of an SVB model or an MLlib model."""
    if hasattr(model, "_model_arrays"):
        # An SVB model (the arrays it saves): its float64 arrays as they are, not through
        # coefficientMatrix, which a mostly-zero model compresses to a SparseMatrix.
        W, b = model._model_arrays()
        return W.copy(), b.copy()
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
