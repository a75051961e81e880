"""Params of SVBLogisticRegression and its model: MLlib's shared mixins plus SVB's own.

Names and meanings follow ``pyspark.ml.classification.LogisticRegression`` wherever MLlib has the
concept, so that a user can swap one estimator for the other.
"""

from __future__ import annotations

import zlib

import numpy as np
from pyspark.ml.classification import _ProbabilisticClassifierParams
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (
    HasAggregationDepth,
    HasCheckpointInterval,
    HasElasticNetParam,
    HasFitIntercept,
    HasMaxBlockSizeInMB,
    HasMaxIter,
    HasRegParam,
    HasSeed,
    HasStandardization,
    HasStepSize,
    HasThreshold,
    HasTol,
    HasValidationIndicatorCol,
    HasWeightCol,
)

from svb_spark.core.modes import MODES
from svb_spark.core.solvers import SOLVERS as solver_registry
from svb_spark.ranking_params import HasTopK

# The exchange param's values: the registered modes, and "auto", which chooses among them.
EXCHANGE_MODES = (*MODES, "auto")
DTYPES = ("auto", "float32", "float64")
# The solver param's values: "auto" and the names of the solvers auto chooses among.
SOLVERS = ("auto", *solver_registry)
FAMILIES = ("auto", "binomial", "multinomial", "multilabel")


def _to_matrix(value):
    """A Matrix, or rows of numbers (a config file's or saved metadata's), as a Matrix."""
    from pyspark.ml.linalg import DenseMatrix, Matrix

    if isinstance(value, Matrix):
        return value
    try:
        rows = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        rows = None
    if rows is None or rows.ndim != 2:
        raise TypeError(f"Could not convert {value!r} to a Matrix: give a Matrix or a list of rows")
    return DenseMatrix(rows.shape[0], rows.shape[1], rows.ravel().tolist(), isTransposed=True)


class _SVBLogisticRegressionParams(
    _ProbabilisticClassifierParams,
    HasMaxIter,
    HasTol,
    HasRegParam,
    HasElasticNetParam,
    HasFitIntercept,
    HasStandardization,
    HasStepSize,
    HasSeed,
    HasWeightCol,
    HasThreshold,
    HasAggregationDepth,
    HasMaxBlockSizeInMB,
    HasTopK,
):
    """Params shared by :class:`SVBLogisticRegression` and its model."""

    def _weight_column(self) -> str | None:
        """The weight column's name, or None when unset or empty (every row weighs 1)."""
        return (self.getWeightCol() or None) if self.isDefined(self.weightCol) else None

    def _thresholds(self) -> list[float] | None:
        """The per-class thresholds, or None when unset."""
        return self.getThresholds() if self.isDefined(self.thresholds) else None

    # MLlib's binary threshold, with its rules: threshold t stands for thresholds [1 - t, t];
    # each setter clears the other param; both set with different values is an error.
    threshold: Param[float] = Param(
        Params._dummy(),
        "threshold",
        "Threshold in binary classification prediction, in range [0, 1]. If threshold and "
        "thresholds are both set, they must match: a threshold of p means thresholds "
        "[1-p, p].",
        typeConverter=TypeConverters.toFloat,
    )
    tol: Param[float] = Param(
        Params._dummy(),
        "tol",
        "the convergence tolerance (>= 0), MLlib's default 1e-6. lbfgs stops by MLlib's rule "
        "(breeze's convergence check): the objective within tol x |the first objective| of the "
        "largest of the last 20, or a gradient norm of at most max(tol x |objective|, 1e-8), "
        "or (with bounds) a projected gradient step under 1e-5, or a line search that fails "
        "twice. sgd, saga and asgd stop when the mean objective of their last 3 epochs "
        "improved on the 3 before by at most max(tol, 3e-3) x max(|current|, |first epoch's|), "
        "3e-3 being the noise of an epoch's objective; 0 leaves them to maxIter.",
        typeConverter=TypeConverters.toFloat,
    )
    aggregationDepth: Param[int] = Param(
        Params._dummy(),
        "aggregationDepth",
        "suggested depth for treeAggregate (>= 2). Accepted so that MLlib param maps carry "
        "over, but it has no effect: workers exchange directly and run no treeAggregate.",
        typeConverter=TypeConverters.toInt,
    )
    maxBlockSizeInMB: Param[float] = Param(
        Params._dummy(),
        "maxBlockSizeInMB",
        "maximum memory in MB for stacking input data into blocks (>= 0). Accepted so that "
        "MLlib param maps carry over, but it has no effect: each worker holds its rows as one "
        "matrix and batchSize sets the rows of a step.",
        typeConverter=TypeConverters.toFloat,
    )

    def setThreshold(self, value: float):
        """Sets the value of :py:attr:`threshold` and clears :py:attr:`thresholds`.

        A row is predicted 1 when its probability of class 1 exceeds ``value``: 0 predicts
        every row 1 and 1 predicts every row 0. Binary models only; a model of more classes
        ignores it, as MLlib's do.
        """
        value = TypeConverters.toFloat(value)
        if not 0.0 <= value <= 1.0:
            raise ValueError(
                f"The 'threshold' parameter of {type(self).__name__} must be a float in "
                f"[0, 1]. Got {value!r} instead."
            )
        self._set(threshold=value)
        self.clear(self.thresholds)
        return self

    def getThreshold(self) -> float:
        """The binary threshold: from :py:attr:`thresholds` [t0, t1] when it is set,
        ``1 / (1 + t0 / t1)``, otherwise :py:attr:`threshold` or its default (0.5)."""
        self._checkThresholdConsistency()
        if self.isSet(self.thresholds):
            thresholds = self.getOrDefault(self.thresholds)
            if len(thresholds) != 2:
                raise ValueError(
                    "getThreshold applies to binary classification only, but 'thresholds' "
                    f"has {len(thresholds)} values: {thresholds!r}. Use getThresholds instead."
                )
            return _binary_threshold(thresholds)
        return self.getOrDefault(self.threshold)

    def setThresholds(self, value: list[float]):
        """Sets the value of :py:attr:`thresholds` and clears :py:attr:`threshold`."""
        self._set(thresholds=value)
        self.clear(self.threshold)
        return self

    def getThresholds(self) -> list[float]:
        """:py:attr:`thresholds` when it is set; otherwise, when :py:attr:`threshold` is set,
        its binary equivalent ``[1 - threshold, threshold]``."""
        self._checkThresholdConsistency()
        if not self.isSet(self.thresholds) and self.isSet(self.threshold):
            t = self.getOrDefault(self.threshold)
            return [1.0 - t, t]
        return self.getOrDefault(self.thresholds)

    def _checkThresholdConsistency(self) -> None:
        """Raise ValueError when both threshold and thresholds are set and disagree."""
        if not (self.isSet(self.threshold) and self.isSet(self.thresholds)):
            return
        threshold = self.getOrDefault(self.threshold)
        thresholds = self.getOrDefault(self.thresholds)
        owner = type(self).__name__
        if len(thresholds) != 2:
            raise ValueError(
                f"The 'threshold' parameter of {owner} is set ({threshold:g}), which applies to "
                f"binary classification, but 'thresholds' is set with {len(thresholds)} values "
                f"({thresholds!r}). Clear one of them."
            )
        equivalent = _binary_threshold(thresholds)
        if abs(threshold - equivalent) >= 1e-5:  # MLlib's tolerance
            raise ValueError(
                f"The 'threshold' ({threshold:g}) and 'thresholds' ({thresholds!r}, equivalent to "
                f"a threshold of {equivalent:g}) parameters of {owner} are both set and "
                "disagree. Set only one: setThreshold clears thresholds and setThresholds "
                "clears threshold."
            )

    # Default 32, measured by the batch-size study (benchmarks/results/batch_size.json: 2
    # workers, batchSize 8 to 128, 20 epochs, target scikit-learn's accuracy minus 0.01):
    # smaller batches reach the digits target sooner (8: 3 epochs, 32: 14) but stall below the
    # quick W1 one (16: 0.2805 < 0.2835), larger ones the reverse (64 stops at 0.9578 < 0.9589
    # on digits); 32 is the only size that reaches both, each in 2 to 3 s of wall time, most
    # of it the fit's setup.
    batchSize: Param[int] = Param(
        Params._dummy(),
        "batchSize",
        "rows each worker contributes to one SGD step (> 0); the global minibatch is "
        "batchSize * numWorkers rows.",
        typeConverter=TypeConverters.toInt,
    )
    numWorkers: Param[int] = Param(
        Params._dummy(),
        "numWorkers",
        "number of barrier tasks that train together (>= 0); 0 means the session's default "
        "parallelism.",
        typeConverter=TypeConverters.toInt,
    )
    exchange: Param[str] = Param(
        Params._dummy(),
        "exchange",
        "how workers share each step: p2p (sufficient vectors over an Arrow Flight mesh), "
        "dense (the K x D gradient over the same mesh; the baseline), broadcast (sufficient "
        "vectors through Spark's TorrentBroadcast, one Spark job per exchange; classic mode "
        "only), sharded (each worker owns a block of the classes and only rows travel: for "
        "models larger than a worker; SGD only) or auto (sharded when a replica does not fit "
        "a worker; otherwise the mode whose step the cost model predicts fastest at "
        "numWorkers).",
        typeConverter=TypeConverters.toString,
    )
    dtype: Param[str] = Param(
        Params._dummy(),
        "dtype",
        "floating-point type of the rows, the weights and the exchanged vectors: float32 (half "
        "the memory and bytes), float64 (bit-for-bit comparisons), or auto: float64 for lbfgs, "
        "whose messages are one gradient and whose tol reaches MLlib's precision, float32 for "
        "the stochastic solvers.",
        typeConverter=TypeConverters.toString,
    )
    syncInterval: Param[int] = Param(
        Params._dummy(),
        "syncInterval",
        "SGD steps each worker takes between exchanges (>= 1). 1 is exact synchronous SGD; "
        "R > 1 exchanges R times less often and replays the round in canonical order, so all "
        "replicas agree again after every exchange.",
        typeConverter=TypeConverters.toInt,
    )
    verifyInterval: Param[int] = Param(
        Params._dummy(),
        "verifyInterval",
        "exchanges between comparisons of the replicas' checksums (>= 0; 0 never checks). "
        "On a mismatch every worker takes rank 0's replica and summary.replicaResyncs counts it.",
        typeConverter=TypeConverters.toInt,
    )
    solver: Param[str] = Param(
        Params._dummy(),
        "solver",
        "the optimizer: sgd (minibatch SGD with a step decaying as 1/sqrt(1 + epoch), the "
        "paper's method), saga (SAGA on sufficient vectors: the wire carries U differences, a "
        "constant step converges to the optimum; dense rows and syncInterval 1), lbfgs "
        "(full-batch L-BFGS, MLlib's method, inside the one stage: every iteration exchanges "
        "the K x (D + 1) gradient; maxIter counts its iterations), asgd (sgd whose model is "
        "the mean of its iterates from the second epoch on; dense rows) or auto (lbfgs for "
        "dense rows and at most 2^18 coefficients; for larger dense models sgd when it "
        "holds rows out to stop on (validationFraction), saga when not; sgd otherwise).",
        typeConverter=TypeConverters.toString,
    )
    # MLlib's bounds, in the original feature space: K x D (1 x D binomial) and K (1).
    lowerBoundsOnCoefficients: Param = Param(
        Params._dummy(),
        "lowerBoundsOnCoefficients",
        "The lower bounds on coefficients if fitting under bound constrained optimization. The "
        "bound matrix must be compatible with the shape (1, number of features) for binomial "
        "regression, or (number of classes, number of features) for multinomial regression.",
        typeConverter=_to_matrix,
    )
    upperBoundsOnCoefficients: Param = Param(
        Params._dummy(),
        "upperBoundsOnCoefficients",
        "The upper bounds on coefficients if fitting under bound constrained optimization. The "
        "bound matrix must be compatible with the shape (1, number of features) for binomial "
        "regression, or (number of classes, number of features) for multinomial regression.",
        typeConverter=_to_matrix,
    )
    lowerBoundsOnIntercepts: Param = Param(
        Params._dummy(),
        "lowerBoundsOnIntercepts",
        "The lower bounds on intercepts if fitting under bound constrained optimization. The "
        "bounds vector size must be equal to 1 for binomial regression, or the number of "
        "classes for multinomial regression.",
        typeConverter=TypeConverters.toVector,
    )
    upperBoundsOnIntercepts: Param = Param(
        Params._dummy(),
        "upperBoundsOnIntercepts",
        "The upper bounds on intercepts if fitting under bound constrained optimization. The "
        "bound vector size must be equal to 1 for binomial regression, or the number of "
        "classes for multinomial regression.",
        typeConverter=TypeConverters.toVector,
    )
    family: Param[str] = Param(
        Params._dummy(),
        "family",
        "The name of family which is a description of the label distribution to be used in "
        "the model. Supported options: auto (multilabel for a label column of label sets, "
        "else binomial for at most 2 classes, else multinomial), binomial (one row of "
        "coefficients: the sigmoid of one margin), multinomial (one row per class: the "
        "softmax), multilabel (a label column of array<double>, each row's set of label "
        "indices; one row per label: an independent sigmoid each).",
        typeConverter=TypeConverters.toString,
    )
    exchangeTimeout: Param[float] = Param(
        Params._dummy(),
        "exchangeTimeout",
        "seconds a worker waits for a peer's message before failing the fit (> 0).",
        typeConverter=TypeConverters.toFloat,
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._setDefault(
            maxIter=100,
            # MLlib's: lbfgs stops where MLlib's does; the stochastic solvers' bar is at least
            # the noise of their epoch objective (core.stopping).
            tol=1e-6,
            regParam=0.0,
            fitIntercept=True,
            standardization=True,
            stepSize=1.0,
            # A fixed default: HasSeed's hash(class name) changes with PYTHONHASHSEED.
            seed=zlib.crc32(b"SVBLogisticRegression"),
            batchSize=32,
            numWorkers=0,
            # benchmarks/exchange.py: auto never ran slower than p2p, and 0.29x to 0.94x of it
            # where it chose another mode.
            exchange="auto",
            dtype="auto",
            exchangeTimeout=120.0,
            syncInterval=1,
            verifyInterval=100,
            solver="auto",
            family="auto",
            elasticNetParam=0.0,
            threshold=0.5,
            aggregationDepth=2,
            maxBlockSizeInMB=0.0,
        )

    def getSolver(self) -> str:
        """Gets the value of solver or its default value."""
        return self.getOrDefault(self.solver)

    def getFamily(self) -> str:
        """Gets the value of family or its default value."""
        return self.getOrDefault(self.family)

    def getLowerBoundsOnCoefficients(self):
        """Gets the value of lowerBoundsOnCoefficients (unset by default)."""
        return self.getOrDefault(self.lowerBoundsOnCoefficients)

    def getUpperBoundsOnCoefficients(self):
        """Gets the value of upperBoundsOnCoefficients (unset by default)."""
        return self.getOrDefault(self.upperBoundsOnCoefficients)

    def getLowerBoundsOnIntercepts(self):
        """Gets the value of lowerBoundsOnIntercepts (unset by default)."""
        return self.getOrDefault(self.lowerBoundsOnIntercepts)

    def getUpperBoundsOnIntercepts(self):
        """Gets the value of upperBoundsOnIntercepts (unset by default)."""
        return self.getOrDefault(self.upperBoundsOnIntercepts)

    def getBatchSize(self) -> int:
        """Gets the value of batchSize or its default value."""
        return self.getOrDefault(self.batchSize)

    def getNumWorkers(self) -> int:
        """Gets the value of numWorkers or its default value."""
        return self.getOrDefault(self.numWorkers)

    def getExchange(self) -> str:
        """Gets the value of exchange or its default value."""
        return self.getOrDefault(self.exchange)

    def getDtype(self) -> str:
        """Gets the value of dtype or its default value."""
        return self.getOrDefault(self.dtype)

    def getVerifyInterval(self) -> int:
        """Gets the value of verifyInterval or its default value."""
        return self.getOrDefault(self.verifyInterval)

    def getSyncInterval(self) -> int:
        """Gets the value of syncInterval or its default value."""
        return self.getOrDefault(self.syncInterval)

    def getExchangeTimeout(self) -> float:
        """Gets the value of exchangeTimeout or its default value."""
        return self.getOrDefault(self.exchangeTimeout)


def json_params(values: dict) -> dict:
    """Param values as JSON can hold them: a Matrix as its rows, a Vector as a list (read back
    through the params' type converters)."""
    from pyspark.ml.linalg import Matrix, Vector

    def plain(value):
        if isinstance(value, Matrix):
            return value.toArray().tolist()
        if isinstance(value, Vector):
            return value.toArray().tolist()
        return value

    return {name: plain(value) for name, value in values.items()}


def _binary_threshold(thresholds: list[float]) -> float:
    """The threshold equivalent to binary ``thresholds`` [t0, t1]: ``1 / (1 + t0 / t1)``,
    with t1 = 0 giving 0 as in MLlib's floating point (class 1 always wins)."""
    t0, t1 = thresholds
    return 0.0 if t1 == 0 else 1.0 / (1.0 + t0 / t1)


def _to_initial_model(value):
    """TypeConverter of initialModel: the path of a saved model, or any model with
    ``coefficientMatrix`` and ``interceptVector`` (SVB's or MLlib's LogisticRegressionModel)."""
    if isinstance(value, str) or all(
        hasattr(type(value), name) for name in ("coefficientMatrix", "interceptVector")
    ):
        return value
    raise TypeError(
        "initialModel must be an SVBLogisticRegressionModel, a "
        "pyspark.ml.classification.LogisticRegressionModel, or the path of a saved "
        f"SVBLogisticRegressionModel; got {type(value).__name__}."
    )


class _SVBEstimatorParams(
    _SVBLogisticRegressionParams, HasCheckpointInterval, HasValidationIndicatorCol
):
    """Params of the estimator only: the model reports its class count as a property."""

    validationTol: Param[float] = Param(
        Params._dummy(),
        "validationTol",
        "with validationIndicatorCol: stop when the held-out loss has not improved by more "
        "than validationTol (relative, as MLlib's GBTs) for 3 epochs, and return the best "
        "model seen; with the rows validationFraction holds out, the same on their error "
        "(>= 0).",
        typeConverter=TypeConverters.toFloat,
    )

    validationFraction: Param[float] = Param(
        Params._dummy(),
        "validationFraction",
        "without validationIndicatorCol: the fraction of rows (chosen by seed) that an SGD or "
        "SAGA fit (p2p, dense or sharded) of at least 10,000 rows, 20 a class on average, with "
        "tol > 0 holds out, stopping when "
        "their error has not improved by validationTol (relative) for 3 epochs, then trains "
        "the most accurate model in one last pass over them (stopReason 'holdout'); 0 trains "
        "on every row (in [0, 1)).",
        typeConverter=TypeConverters.toFloat,
    )

    checkpointDir: Param[str] = Param(
        Params._dummy(),
        "checkpointDir",
        "directory (a path or a Hadoop-compatible URI every executor can reach) where rank 0 "
        "writes the weights every checkpointInterval epochs, so that a retried barrier stage "
        "resumes from the newest checkpoint; each fit uses its own subdirectory and removes it "
        "when it ends. Unset: no checkpoints.",
        typeConverter=TypeConverters.toString,
    )

    initialModel: Param = Param(
        Params._dummy(),
        "initialModel",
        "model whose coefficients and intercepts start the fit (warm start): an "
        "SVBLogisticRegressionModel, an MLlib LogisticRegressionModel, or the path of a saved "
        "SVBLogisticRegressionModel; its shape must match the data's classes x features.",
        typeConverter=_to_initial_model,
    )

    numClasses: Param[int] = Param(
        Params._dummy(),
        "numClasses",
        "number of classes (0 or >= 2); 0 infers it as max(label) + 1.",
        typeConverter=TypeConverters.toInt,
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._setDefault(
            numClasses=0, checkpointInterval=10, validationTol=0.01, validationFraction=0.1
        )

    def getValidationTol(self) -> float:
        """Gets the value of validationTol or its default value."""
        return self.getOrDefault(self.validationTol)

    def getValidationFraction(self) -> float:
        """Gets the value of validationFraction or its default value."""
        return self.getOrDefault(self.validationFraction)

    def _validation_column(self) -> str | None:
        """The validation indicator column's name, or None when unset or empty."""
        if not self.isDefined(self.validationIndicatorCol):
            return None
        return self.getValidationIndicatorCol() or None

    def getNumClasses(self) -> int:
        """Gets the value of numClasses or its default value."""
        return self.getOrDefault(self.numClasses)

    def getCheckpointDir(self) -> str | None:
        """Gets the value of checkpointDir, or None when it is unset."""
        return self.getOrDefault(self.checkpointDir) if self.isDefined(self.checkpointDir) else None

    def getInitialModel(self):
        """Gets the value of initialModel (unset by default)."""
        return self.getOrDefault(self.initialModel)


# (param name, predicate, what the value must be)
_VALUE_RULES = (
    ("maxIter", lambda v: v >= 0, "an int >= 0"),
    ("tol", lambda v: v >= 0, "a float >= 0"),
    ("validationTol", lambda v: v >= 0, "a float >= 0"),
    ("validationFraction", lambda v: 0 <= v < 1, "a float in [0, 1)"),
    ("regParam", lambda v: v >= 0, "a float >= 0"),
    ("elasticNetParam", lambda v: 0 <= v <= 1, "a float in [0, 1]"),
    ("stepSize", lambda v: v > 0, "a float > 0"),
    ("batchSize", lambda v: v > 0, "an int > 0"),
    ("topK", lambda v: v >= 1, "an int >= 1"),
    ("numWorkers", lambda v: v >= 0, "an int >= 0 (0 = default parallelism)"),
    # One class leaves nothing to separate: every prediction would be that class.
    ("numClasses", lambda v: v == 0 or v >= 2, "0 (infer from the labels) or an int >= 2"),
    ("exchange", lambda v: v in EXCHANGE_MODES, "one of " + ", ".join(EXCHANGE_MODES)),
    ("dtype", lambda v: v in DTYPES, "one of " + ", ".join(DTYPES)),
    ("solver", lambda v: v in SOLVERS, "one of " + ", ".join(SOLVERS)),
    ("family", lambda v: v in FAMILIES, "one of " + ", ".join(FAMILIES)),
    ("exchangeTimeout", lambda v: v > 0, "a float > 0"),
    ("syncInterval", lambda v: v >= 1, "an int >= 1"),
    ("verifyInterval", lambda v: v >= 0, "an int >= 0 (0 = never)"),
    ("threshold", lambda v: 0 <= v <= 1, "a float in [0, 1]"),
    ("aggregationDepth", lambda v: v >= 2, "an int >= 2"),
    ("maxBlockSizeInMB", lambda v: v >= 0, "a float >= 0"),
    # MLlib's convention: -1 disables checkpoints.
    ("checkpointInterval", lambda v: v >= 1 or v == -1, "an int >= 1, or -1 (no checkpoints)"),
)


def validate_param_values(instance: _SVBLogisticRegressionParams) -> None:
    """Raise ValueError naming the first param whose value is out of range."""
    owner = type(instance).__name__
    for name, is_valid, requirement in _VALUE_RULES:
        if not instance.hasParam(name):
            continue
        value = instance.getOrDefault(instance.getParam(name))
        # Passing None explicitly (e.g. maxIter=None) stores None rather than the default.
        if value is None or not is_valid(value):
            raise ValueError(
                f"The '{name}' parameter of {owner} must be {requirement}. Got {value!r} instead."
            )
    if instance.isDefined(instance.thresholds):
        thresholds = instance.getOrDefault(instance.thresholds)
        if any(t < 0 for t in thresholds) or sum(1 for t in thresholds if t == 0) > 1:
            raise ValueError(
                f"The 'thresholds' parameter of {owner} must be non-negative with at most one "
                f"zero. Got {thresholds!r} instead."
            )
    instance._checkThresholdConsistency()
