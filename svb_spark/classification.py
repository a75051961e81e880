"""SVBLogisticRegression and SVBLogisticRegressionModel: the public estimator and model.

The estimator's ``fit`` is run by :mod:`svb_spark.fitting` (validate, plan the fit, run it,
build the model); the numerics and the training loop live in :mod:`svb_spark.core`, the
barrier task in :mod:`svb_spark.spark.task`; the model scores with :mod:`svb_spark.spark.scoring`.
"""

from __future__ import annotations

import warnings

import numpy as np
from pyspark import keyword_only
from pyspark.ml.classification import ProbabilisticClassificationModel, ProbabilisticClassifier
from pyspark.ml.linalg import DenseVector, Matrix, Vector
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable, DefaultParamsWriter

from svb_spark import multilabel_summary as multilabel
from svb_spark.core import numerics
from svb_spark.core.loss import Loss, of_model
from svb_spark.core.multilabel import MULTILABEL
from svb_spark.core.solvers import solver_type
from svb_spark.fitting import fit_model
from svb_spark.params import (
    _SVBEstimatorParams,
    _SVBLogisticRegressionParams,
    json_params,
    validate_param_values,
)
from svb_spark.spark import scoring
from svb_spark.spark.inspection import check_columns
from svb_spark.spark.mllib_interop import compressed_matrix, compressed_vector, to_mllib
from svb_spark.spark.persistence import SVBModelReadable, SVBModelWritable
from svb_spark.summary import (
    FitRecord,
    SVBBinaryLogisticRegressionSummary,
    SVBBinaryLogisticRegressionTrainingSummary,
    SVBLogisticRegressionSummary,
    SVBLogisticRegressionTrainingSummary,
)


class SVBConvergenceWarning(UserWarning):
    """maxIter ended training before the objective settled (tol) or the held-out loss did."""


class SVBLogisticRegression(
    ProbabilisticClassifier, _SVBEstimatorParams, DefaultParamsWritable, DefaultParamsReadable
):
    """Logistic regression, binomial or multinomial as MLlib's, trained on Spark with the
    Sufficient Vector Broadcaster.

    The ``numWorkers`` barrier tasks each hold their rows and a replica of the model; every
    step (L-BFGS: every iteration) they exchange sufficient vectors (``U = P - Y`` and the
    rows) or gradient sums over an Arrow Flight mesh, so communication grows with classes plus
    features, not their product, and every replica applies the same update.

    Params are those of :class:`pyspark.ml.classification.LogisticRegression` (``family``,
    ``regParam``, ``elasticNetParam``, the bounds, ``threshold(s)``, ``standardization``,
    ``weightCol``, ...) plus SVB's own: ``solver``, ``batchSize``, ``numWorkers``,
    ``numClasses``, ``exchange``, ``dtype``, ``syncInterval``, ``verifyInterval``,
    ``exchangeTimeout``, ``initialModel``, ``checkpointDir`` and the validation column.
    Progress goes to the ``svb_spark`` logger, or to a display updated in place in a notebook.

    Examples
    --------
    >>> from pyspark.ml.linalg import Vectors
    >>> from svb_spark import SVBLogisticRegression
    >>> df = spark.createDataFrame(
    ...     [(Vectors.dense([0.0, 1.0]), 0.0), (Vectors.dense([1.0, 0.0]), 1.0),
    ...      (Vectors.dense([0.0, 2.0]), 0.0), (Vectors.dense([2.0, 0.0]), 1.0)],
    ...     ["features", "label"])
    >>> model = SVBLogisticRegression(maxIter=50, numWorkers=2).fit(df)
    >>> model.numClasses, model.numFeatures
    (2, 2)
    >>> model.predict(Vectors.dense([3.0, 0.0]))
    1.0
    >>> model.transform(df).select("prediction").collect()[0].prediction
    0.0
    """

    @keyword_only
    def __init__(
        self,
        *,
        featuresCol: str = "features",
        labelCol: str = "label",
        predictionCol: str = "prediction",
        probabilityCol: str = "probability",
        rawPredictionCol: str = "rawPrediction",
        weightCol: str | None = None,
        threshold: float = 0.5,
        thresholds: list[float] | None = None,
        maxIter: int = 100,
        tol: float = 1e-6,
        regParam: float = 0.0,
        fitIntercept: bool = True,
        standardization: bool = True,
        stepSize: float = 1.0,
        seed: int | None = None,
        batchSize: int = 32,
        numWorkers: int = 0,
        numClasses: int = 0,
        exchange: str = "auto",
        dtype: str = "auto",
        exchangeTimeout: float = 120.0,
        syncInterval: int = 1,
        verifyInterval: int = 100,
        initialModel=None,
        checkpointDir: str | None = None,
        checkpointInterval: int = 10,
        solver: str = "auto",
        family: str = "auto",
        elasticNetParam: float = 0.0,
        lowerBoundsOnCoefficients=None,
        upperBoundsOnCoefficients=None,
        lowerBoundsOnIntercepts=None,
        upperBoundsOnIntercepts=None,
        validationIndicatorCol: str | None = None,
        validationTol: float = 0.01,
        validationFraction: float = 0.1,
        aggregationDepth: int = 2,
        maxBlockSizeInMB: float = 0.0,
        topK: int = 5,
        topKCol: str = "",
        topKProbabilityCol: str = "",
        topKLabelsCol: str = "",
    ) -> None:
        super().__init__()
        kwargs = self._input_kwargs
        self.setParams(**kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        featuresCol: str = "features",
        labelCol: str = "label",
        predictionCol: str = "prediction",
        probabilityCol: str = "probability",
        rawPredictionCol: str = "rawPrediction",
        weightCol: str | None = None,
        threshold: float = 0.5,
        thresholds: list[float] | None = None,
        maxIter: int = 100,
        tol: float = 1e-6,
        regParam: float = 0.0,
        fitIntercept: bool = True,
        standardization: bool = True,
        stepSize: float = 1.0,
        seed: int | None = None,
        batchSize: int = 32,
        numWorkers: int = 0,
        numClasses: int = 0,
        exchange: str = "auto",
        dtype: str = "auto",
        exchangeTimeout: float = 120.0,
        syncInterval: int = 1,
        verifyInterval: int = 100,
        initialModel=None,
        checkpointDir: str | None = None,
        checkpointInterval: int = 10,
        solver: str = "auto",
        family: str = "auto",
        elasticNetParam: float = 0.0,
        lowerBoundsOnCoefficients=None,
        upperBoundsOnCoefficients=None,
        lowerBoundsOnIntercepts=None,
        upperBoundsOnIntercepts=None,
        validationIndicatorCol: str | None = None,
        validationTol: float = 0.01,
        validationFraction: float = 0.1,
        aggregationDepth: int = 2,
        maxBlockSizeInMB: float = 0.0,
        topK: int = 5,
        topKCol: str = "",
        topKProbabilityCol: str = "",
        topKLabelsCol: str = "",
    ) -> SVBLogisticRegression:
        """Sets params for this estimator; see the class docstring. If threshold and
        thresholds are both set, they must be equivalent."""
        kwargs = self._input_kwargs
        self._set(**kwargs)
        self._checkThresholdConsistency()
        return self

    def setWeightCol(self, value: str) -> SVBLogisticRegression:
        return self._set(weightCol=value)

    def setFamily(self, value: str) -> SVBLogisticRegression:
        return self._set(family=value)

    def setElasticNetParam(self, value: float) -> SVBLogisticRegression:
        return self._set(elasticNetParam=value)

    def setLowerBoundsOnCoefficients(self, value) -> SVBLogisticRegression:
        return self._set(lowerBoundsOnCoefficients=value)

    def setUpperBoundsOnCoefficients(self, value) -> SVBLogisticRegression:
        return self._set(upperBoundsOnCoefficients=value)

    def setLowerBoundsOnIntercepts(self, value) -> SVBLogisticRegression:
        return self._set(lowerBoundsOnIntercepts=value)

    def setUpperBoundsOnIntercepts(self, value) -> SVBLogisticRegression:
        return self._set(upperBoundsOnIntercepts=value)

    def setThreshold(self, value: float) -> SVBLogisticRegression:
        """Sets :py:attr:`threshold` (in [0, 1]) and clears :py:attr:`thresholds`."""
        return _SVBLogisticRegressionParams.setThreshold(self, value)

    def setThresholds(self, value: list[float]) -> SVBLogisticRegression:
        """Sets :py:attr:`thresholds` and clears :py:attr:`threshold`."""
        return _SVBLogisticRegressionParams.setThresholds(self, value)

    def setAggregationDepth(self, value: int) -> SVBLogisticRegression:
        """Sets :py:attr:`aggregationDepth`, accepted for MLlib's sake: it has no effect."""
        return self._set(aggregationDepth=value)

    def setMaxBlockSizeInMB(self, value: float) -> SVBLogisticRegression:
        """Sets :py:attr:`maxBlockSizeInMB`, accepted for MLlib's sake: it has no effect."""
        return self._set(maxBlockSizeInMB=value)

    def setMaxIter(self, value: int) -> SVBLogisticRegression:
        return self._set(maxIter=value)

    def setTol(self, value: float) -> SVBLogisticRegression:
        return self._set(tol=value)

    def setRegParam(self, value: float) -> SVBLogisticRegression:
        return self._set(regParam=value)

    def setFitIntercept(self, value: bool) -> SVBLogisticRegression:
        return self._set(fitIntercept=value)

    def setStandardization(self, value: bool) -> SVBLogisticRegression:
        return self._set(standardization=value)

    def setStepSize(self, value: float) -> SVBLogisticRegression:
        return self._set(stepSize=value)

    def setSeed(self, value: int) -> SVBLogisticRegression:
        return self._set(seed=value)

    def setValidationIndicatorCol(self, value: str) -> SVBLogisticRegression:
        return self._set(validationIndicatorCol=value)

    def setValidationTol(self, value: float) -> SVBLogisticRegression:
        return self._set(validationTol=value)

    def setValidationFraction(self, value: float) -> SVBLogisticRegression:
        return self._set(validationFraction=value)

    def setSolver(self, value: str) -> SVBLogisticRegression:
        return self._set(solver=value)

    def setBatchSize(self, value: int) -> SVBLogisticRegression:
        return self._set(batchSize=value)

    def setNumWorkers(self, value: int) -> SVBLogisticRegression:
        return self._set(numWorkers=value)

    def setNumClasses(self, value: int) -> SVBLogisticRegression:
        return self._set(numClasses=value)

    def setExchange(self, value: str) -> SVBLogisticRegression:
        return self._set(exchange=value)

    def setDtype(self, value: str) -> SVBLogisticRegression:
        return self._set(dtype=value)

    def setVerifyInterval(self, value: int) -> SVBLogisticRegression:
        return self._set(verifyInterval=value)

    def setSyncInterval(self, value: int) -> SVBLogisticRegression:
        return self._set(syncInterval=value)

    def setExchangeTimeout(self, value: float) -> SVBLogisticRegression:
        return self._set(exchangeTimeout=value)

    def setCheckpointDir(self, value: str) -> SVBLogisticRegression:
        return self._set(checkpointDir=value)

    def setCheckpointInterval(self, value: int) -> SVBLogisticRegression:
        return self._set(checkpointInterval=value)

    def setInitialModel(self, value) -> SVBLogisticRegression:
        """Warm-start from ``value``: an SVB or MLlib LogisticRegressionModel, or a saved
        SVBLogisticRegressionModel's path."""
        return self._set(initialModel=value)

    def write(self):
        """A params writer that leaves out an ``initialModel`` given as a model object (only a
        path can be written as JSON metadata)."""
        return _EstimatorWriter(self)

    def _fit(self, dataset) -> SVBLogisticRegressionModel:
        model, config = fit_model(self, dataset, SVBLogisticRegressionModel)
        if model.summary.stopReason == "maxIter" and self.getMaxIter() > 0 and self.getTol() > 0:
            unit = solver_type(config).unit
            warnings.warn(
                f"SVBLogisticRegression stopped after maxIter={self.getMaxIter()} {unit} before "
                f"the objective settled within tol={self.getTol()} (see the tol param); raise "
                "maxIter or tol if the model is not good enough.",
                SVBConvergenceWarning,
                stacklevel=3,  # the caller of Estimator.fit
            )
        return model


class _EstimatorWriter(DefaultParamsWriter):
    def saveImpl(self, path: str) -> None:
        params = {
            param.name: value
            for param, value in self.instance._paramMap.items()
            if param.name != "initialModel" or isinstance(value, str)
        }
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sc, paramMap=json_params(params))


class SVBLogisticRegressionModel(
    ProbabilisticClassificationModel,
    _SVBLogisticRegressionParams,
    SVBModelWritable,
    SVBModelReadable,
):
    """A logistic regression model fitted by :class:`SVBLogisticRegression`.

    ``transform`` appends ``rawPredictionCol`` (margins), ``probabilityCol`` (softmax) and
    ``predictionCol`` using vectorized Arrow UDFs. Predictions follow MLlib's rules: a model of
    two classes predicts class 1 when its probability exceeds ``threshold`` (default 0.5, or the
    equivalent of ``thresholds``); a model of more classes honours ``thresholds``. A model of one
    row of coefficients is MLlib's binomial model: ``coefficients`` and ``intercept`` give that
    row, its rawPrediction is [-m, m] and its probability [1 - sigmoid(m), sigmoid(m)] for the
    margin m.

    Examples
    --------
    >>> import numpy as np
    >>> from pyspark.ml.linalg import Vectors
    >>> model = SVBLogisticRegressionModel(np.array([[1.0, -1.0], [-1.0, 1.0]]), np.zeros(2))
    >>> model.predict(Vectors.dense([0.0, 3.0]))
    1.0
    >>> model.coefficientMatrix.numRows, model.interceptVector.size
    (2, 2)
    >>> model.setThreshold(1.0).predict(Vectors.dense([0.0, 3.0]))
    0.0
    >>> binomial = SVBLogisticRegressionModel(np.array([[2.0, -1.0]]), np.array([0.5]))
    >>> binomial.numClasses, binomial.coefficients, binomial.intercept
    (2, DenseVector([2.0, -1.0]), 0.5)
    >>> binomial.predictRaw(Vectors.dense([1.0, 0.0]))
    DenseVector([-2.5, 2.5])
    """

    def __init__(
        self, coefficients: np.ndarray | None = None, intercepts: np.ndarray | None = None
    ):
        super().__init__()
        self._W = None if coefficients is None else np.asarray(coefficients, dtype=np.float64)
        self._b = None if intercepts is None else np.asarray(intercepts, dtype=np.float64)
        self._summary: SVBLogisticRegressionTrainingSummary | None = None
        self._class_blocks = scoring.ClassBlockBroadcasts()
        # The class labels of a label column StringIndexer made, or None (see labels).
        self._labels: list[str] | None = None

    @property
    def labels(self) -> list[str] | None:
        """The label of each class, from the label column's metadata as ``StringIndexer``
        writes it when the model was fitted (or None): what ``topKLabelsCol`` outputs."""
        return self._labels

    @property
    def _is_binomial(self) -> bool:
        """One row of coefficients: MLlib's binomial model of two classes, whose margin m of
        class 1 gives P(1) = sigmoid(m)."""
        return self._W.shape[0] == 1

    @property
    def _is_binary(self) -> bool:
        """Whether predictions follow MLlib's binary rule, P(1) > threshold. MLlib applies it
        to its binomial models and ignores threshold on multinomial ones; a 2-row model of
        family "auto" (saved before the binomial family) follows it too, as the sigmoid of its
        margins' difference."""
        return self.numClasses == 2 and self.getFamily() != "multinomial"

    @property
    def coefficients(self) -> DenseVector:
        """The binomial model's coefficients; a multinomial model raises, as MLlib's does."""
        if not self._is_binomial:
            raise RuntimeError(
                "Multinomial models contain a matrix of coefficients, use coefficientMatrix "
                "instead."
            )
        return DenseVector(self._W[0])

    @property
    def intercept(self) -> float:
        """The binomial model's intercept; a multinomial model raises, as MLlib's does."""
        if not self._is_binomial:
            raise RuntimeError(
                "Multinomial models contain a vector of intercepts, use interceptVector instead."
            )
        return float(self._b[0])

    @property
    def coefficientMatrix(self) -> Matrix:
        """Coefficients in the original feature space, numClasses x numFeatures (1 x
        numFeatures for a binomial model), compressed as MLlib's: a DenseMatrix, or a
        SparseMatrix when most are zero (L1)."""
        return compressed_matrix(self._W)

    @property
    def interceptVector(self) -> Vector:
        return compressed_vector(self._b)

    @property
    def numClasses(self) -> int:
        return 2 if self._is_binomial else int(self._W.shape[0])

    @property
    def numFeatures(self) -> int:
        return int(self._W.shape[1])

    def setThreshold(self, value: float) -> SVBLogisticRegressionModel:
        """Sets :py:attr:`threshold` (in [0, 1]) and clears :py:attr:`thresholds`: a row is
        predicted 1 when its probability of class 1 exceeds it."""
        return _SVBLogisticRegressionParams.setThreshold(self, value)

    def setThresholds(self, value: list[float]) -> SVBLogisticRegressionModel:
        """Sets :py:attr:`thresholds` and clears :py:attr:`threshold`."""
        return _SVBLogisticRegressionParams.setThresholds(self, value)

    def _prediction_threshold(self) -> float | None:
        """The binary threshold (see ``_is_binary``), a multi-label model's, or None."""
        return self.getThreshold() if self._is_binary or self._multilabel else None

    @property
    def _multilabel(self) -> bool:
        """Whether the model is of the multi-label family: one sigmoid a label."""
        return self.getFamily() == "multilabel"

    @property
    def _loss(self) -> Loss:
        """The model's family as its scoring reads it."""
        return MULTILABEL if self._multilabel else of_model(self._W.shape[0])

    @property
    def hasSummary(self) -> bool:
        return self._summary is not None

    @property
    def summary(self) -> SVBLogisticRegressionTrainingSummary:
        """The training summary (a binary one for two classes); raises if the model was not
        produced by ``fit``."""
        if self._summary is None:
            raise RuntimeError(
                f"No training summary available for this {type(self).__name__}: it was loaded "
                "or built by hand. Use evaluate(df) for metrics on a DataFrame."
            )
        return self._summary

    def _summary_columns(self) -> dict[str, str]:
        return {
            "predictionCol": self.getPredictionCol(),
            "labelCol": self.getLabelCol(),
            "weightCol": self._weight_column() or "",
            "probabilityCol": self.getProbabilityCol(),
            "featuresCol": self.getFeaturesCol(),
        }

    def _training_summary(self, dataset, record: FitRecord) -> SVBLogisticRegressionTrainingSummary:
        """The summary of the fit that made this model from ``dataset``: binary for two
        classes, as MLlib's; its predictions are scored on first use."""
        kind, metrics_alone = self._summary_kind(training=True)
        alone = (lambda: self._predictions_only().transform(dataset)) if metrics_alone else None
        return kind(lambda: self.transform(dataset), record, **self._summary_columns(),
                    metric_predictions=alone)  # fmt: skip

    def _summary_kind(self, training: bool) -> tuple[type, bool]:
        """The summary class for this model's family, and whether its metrics read the
        prediction column alone (the binary curves read the probabilities)."""
        if self._multilabel:
            training_kind = multilabel.SVBMultilabelTrainingSummary
            return (training_kind if training else multilabel.SVBMultilabelSummary), True
        if self.numClasses <= 2:
            binary = SVBBinaryLogisticRegressionTrainingSummary
            return (binary if training else SVBBinaryLogisticRegressionSummary), False
        multiclass = SVBLogisticRegressionTrainingSummary
        return (multiclass if training else SVBLogisticRegressionSummary), True

    def _predictions_only(self) -> SVBLogisticRegressionModel:
        """A copy that adds the prediction column alone: what the multiclass metrics read,
        without the K-wide columns (at 10^4 classes those are most of a scoring's bytes)."""
        names = ("rawPredictionCol", "probabilityCol", "topKCol", "topKProbabilityCol",
                 "topKLabelsCol")  # fmt: skip
        copied = self.copy({self.getParam(name): "" for name in names})
        if self._multilabel:  # and the top labels, which precisionAtK reads
            copied._set(topKCol=multilabel.RANKED_COLUMN, topK=multilabel.RANKED_LABELS)
        return copied

    def evaluate(self, dataset) -> SVBLogisticRegressionSummary:
        """Metrics of this model on ``dataset`` (which needs the label column): an
        :class:`~svb_spark.summary.SVBBinaryLogisticRegressionSummary` for two classes."""
        check_columns(dataset.schema, self.getFeaturesCol(), self.getLabelCol(), None)
        model = self.copy()
        # The summary needs every output column, even if the user switched some off.
        for param, name in (
            (model.predictionCol, "prediction"),
            (model.probabilityCol, "probability"),
            (model.rawPredictionCol, "rawPrediction"),
        ):
            if not model.getOrDefault(param):
                model._set(**{param.name: f"_svb_{name}"})
        kind, metrics_alone = model._summary_kind(training=False)
        alone = model._predictions_only().transform(dataset) if metrics_alone else None
        return kind(model.transform(dataset), **model._summary_columns(), metric_predictions=alone)

    def _outputs(self, value: Vector) -> tuple[np.ndarray, np.ndarray, float | list[float]]:
        margins = numerics.raw_margins(self._W, self._b, value.toArray().reshape(1, -1))
        raw, probability, prediction = scoring.outputs_from_margins(
            margins, self._thresholds(), self._prediction_threshold(), self._loss
        )
        if self._multilabel:  # the row's label set
            return raw[0], probability[0], prediction.indices.astype(float).tolist()
        return raw[0], probability[0], float(prediction[0])

    def predictRaw(self, value: Vector) -> DenseVector:
        """Margins ``W x + b`` of one feature vector ([-m, m] for a binomial model)."""
        return DenseVector(self._outputs(value)[0])

    def predictProbability(self, value: Vector) -> DenseVector:
        """Class probabilities of one feature vector."""
        return DenseVector(self._outputs(value)[1])

    def predict(self, value: Vector) -> float | list[float]:
        """One feature vector's class (by ``threshold``/``thresholds``), or labels (a list)."""
        return self._outputs(value)[2]

    def _transform(self, dataset):
        validate_param_values(self)
        return scoring.add_prediction_columns(
            dataset,
            self._W,
            self._b,
            features=self.getFeaturesCol(),
            raw_col=self.getRawPredictionCol(),
            probability_col=self.getProbabilityCol(),
            prediction_col=self.getPredictionCol(),
            thresholds=self._thresholds(),
            threshold=self._prediction_threshold(),
            class_blocks=self._class_blocks,
            top_k=self.getTopK(),
            top_k_col=self.getTopKCol(),
            top_k_probability_col=self.getTopKProbabilityCol(),
            top_k_labels_col=self.getTopKLabelsCol(),
            labels=self.labels,
            model_loss=self._loss,
        )

    def copy(self, extra: dict | None = None) -> SVBLogisticRegressionModel:
        copied = super().copy(extra)
        copied._summary = None if extra else self._summary
        copied._labels = self._labels
        return copied

    def _model_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self._W, self._b

    def toMLlib(self):
        """This model as a native ``pyspark.ml.classification.LogisticRegressionModel``.

        The MLlib model has the same coefficients, intercepts and column params: binomial for a
        binomial model, multinomial otherwise, so it predicts the same classes and
        probabilities and can be saved for JVM pipelines and serving. A 2-class model's
        ``threshold`` travels as its equivalent ``thresholds``, which MLlib's multinomial
        models honour. Classic mode only: it is built in the driver's JVM. A model of more
        than 2^31 - 1 coefficients, which MLlib's DenseMatrix cannot hold, is refused at once.

        Examples
        --------
        >>> import numpy as np
        >>> from pyspark.ml.linalg import Vectors
        >>> model = SVBLogisticRegressionModel(np.array([[1.0, -1.0], [-1.0, 1.0]]), np.zeros(2))
        >>> mllib = model.toMLlib()
        >>> mllib.numClasses, mllib.predict(Vectors.dense([0.0, 3.0]))
        (2, 1.0)
        """
        return to_mllib(self)

    @classmethod
    def _from_arrays(cls, W: np.ndarray, b: np.ndarray) -> SVBLogisticRegressionModel:
        return cls(W, b)

    def __repr__(self) -> str:
        if self._W is None:
            return f"{type(self).__name__}: uid={self.uid}"
        return (
            f"{type(self).__name__}: uid={self.uid}, numClasses={self.numClasses}, "
            f"numFeatures={self.numFeatures}"
        )
