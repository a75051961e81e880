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
