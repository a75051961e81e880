"""The ``>>>`` examples in the library's docstrings run, against the suite's SparkSession."""

import doctest
import importlib
import pkgutil

import pytest

import svb_spark

MODULES = sorted(
    name for _, name, _ in pkgutil.walk_packages(svb_spark.__path__, prefix="svb_spark.")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(spark, name):
    module = importlib.import_module(name)
    results = doctest.testmod(module, extraglobs={"spark": spark}, optionflags=doctest.ELLIPSIS)
    assert results.failed == 0


def test_the_public_classes_have_examples():
    finder = doctest.DocTestFinder()
    for public in (svb_spark.SVBLogisticRegression, svb_spark.SVBLogisticRegressionModel):
        assert any(test.examples for test in finder.find(public)), public.__name__
