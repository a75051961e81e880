"""Param defaults: the keyword defaults of ``__init__`` and ``setParams`` are the Params'."""

import inspect

import pytest

from svb_spark import SVBLogisticRegression


@pytest.mark.parametrize("method", ["__init__", "setParams"])
def test_signature_defaults_equal_the_param_defaults(method):
    estimator = SVBLogisticRegression()
    signature = inspect.signature(getattr(SVBLogisticRegression, method))
    keywords = {name for name, p in signature.parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert keywords == {param.name for param in estimator.params}
    for param in estimator.params:
        default = signature.parameters[param.name].default
        expected = estimator._defaultParamMap.get(param)
        if param.name == "seed":
            # MLlib's HasSeed default is a hash of the class name; None in the signature means it.
            assert default is None and isinstance(expected, int)
            continue
        assert default == expected, param.name


def test_mllib_params_have_mllib_defaults():
    from pyspark.ml.classification import _LogisticRegressionParams

    mllib = _LogisticRegressionParams()
    estimator = SVBLogisticRegression()
    for name in ("threshold", "aggregationDepth", "maxBlockSizeInMB", "tol", "maxIter"):
        assert estimator.getOrDefault(name) == mllib.getOrDefault(name), name


def test_the_solver_param_takes_auto_and_every_registered_solver():
    from svb_spark.core.solvers import SOLVERS
    from svb_spark.params import validate_param_values

    for name in ("auto", *SOLVERS):
        validate_param_values(SVBLogisticRegression(solver=name))
    with pytest.raises(ValueError, match="must be one of auto, " + ", ".join(SOLVERS)):
        validate_param_values(SVBLogisticRegression()._set(solver="newton"))


@pytest.mark.parametrize(
    ("name", "value"),
    [("threshold", 1.5), ("threshold", -0.5), ("aggregationDepth", 1), ("maxBlockSizeInMB", -1.0)],
)
def test_out_of_range_mllib_params_are_refused_before_any_job(name, value):
    from svb_spark.params import validate_param_values

    estimator = SVBLogisticRegression()
    estimator._set(**{name: value})  # as a param map would, past the setter's own check
    with pytest.raises(ValueError, match=f"The '{name}' parameter of SVBLogisticRegression"):
        validate_param_values(estimator)


def test_threshold_and_thresholds_clear_each_other():
    estimator = SVBLogisticRegression(threshold=0.2)
    assert estimator.getThresholds() == [0.8, 0.2]
    estimator.setThresholds([0.3, 0.1])
    assert not estimator.isSet("threshold")
    assert estimator.getThreshold() == pytest.approx(0.25)
    estimator.setThreshold(0.6)
    assert not estimator.isSet("thresholds") and estimator.getThreshold() == 0.6
    estimator._set(thresholds=[0.5, 0.5])  # both set, as a param map can leave them
    with pytest.raises(ValueError, match="'threshold' .* and 'thresholds' .* disagree"):
        estimator.getThreshold()
    with pytest.raises(ValueError, match="'threshold' .* 3 values"):
        SVBLogisticRegression(threshold=0.5, thresholds=[0.2, 0.3, 0.5])
