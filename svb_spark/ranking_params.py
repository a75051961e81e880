"""The ranking params that the estimator and its model share: the top-k columns that
``transform`` adds for many-class models (off by default, so MLlib's columns are unchanged)."""

from __future__ import annotations

from pyspark.ml.param import Param, Params, TypeConverters


class HasTopK(Params):
    """``topK`` and the names of the columns that hold each row's ``topK`` most probable
    classes, their probabilities and their labels; an empty name skips a column."""

    topK: Param[int] = Param(
        Params._dummy(),
        "topK",
        "how many classes the top-k columns hold per row, most probable first (>= 1; all of "
        "them for a model of fewer classes).",
        typeConverter=TypeConverters.toInt,
    )
    topKCol: Param[str] = Param(
        Params._dummy(),
        "topKCol",
        "top-k classes column name: the topK most probable class indices of a row, best "
        "first, as array<double> (what pyspark.ml.evaluation.RankingEvaluator takes). Empty "
        "(the default) adds no such column.",
        typeConverter=TypeConverters.toString,
    )
    topKProbabilityCol: Param[str] = Param(
        Params._dummy(),
        "topKProbabilityCol",
        "column name for the probabilities of the topKCol classes, in the same order, as "
        "array<double>. Empty (the default) adds no such column.",
        typeConverter=TypeConverters.toString,
    )
    topKLabelsCol: Param[str] = Param(
        Params._dummy(),
        "topKLabelsCol",
        "column name for the labels of the topKCol classes, as array<string>: the labels "
        "StringIndexer wrote into the label column's metadata, which the fitted model keeps. "
        "Empty (the default) adds no such column.",
        typeConverter=TypeConverters.toString,
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._setDefault(topK=5, topKCol="", topKProbabilityCol="", topKLabelsCol="")

    def getTopK(self) -> int:
        """Gets the value of topK or its default value."""
        return self.getOrDefault(self.topK)

    def getTopKCol(self) -> str:
        """Gets the value of topKCol or its default value."""
        return self.getOrDefault(self.topKCol)

    def getTopKProbabilityCol(self) -> str:
        """Gets the value of topKProbabilityCol or its default value."""
        return self.getOrDefault(self.topKProbabilityCol)

    def getTopKLabelsCol(self) -> str:
        """Gets the value of topKLabelsCol or its default value."""
        return self.getOrDefault(self.topKLabelsCol)

    def setTopK(self, value: int):
        """Sets the value of :py:attr:`topK`."""
        return self._set(topK=value)

    def setTopKCol(self, value: str):
        """Sets the value of :py:attr:`topKCol`."""
        return self._set(topKCol=value)

    def setTopKProbabilityCol(self, value: str):
        """Sets the value of :py:attr:`topKProbabilityCol`."""
        return self._set(topKProbabilityCol=value)

    def setTopKLabelsCol(self, value: str):
        """Sets the value of :py:attr:`topKLabelsCol`."""
        return self._set(topKLabelsCol=value)
