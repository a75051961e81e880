"""The settings of ``svb-spark train``: a TOML config file and ``--param`` flags, read into an
SVBLogisticRegression.

Precedence, lowest first: the library defaults, the ``[params]`` table of the ``--config``
file, the ``--param NAME=VALUE`` flags, then the column flags. Every name and value is checked
here, before any Spark work starts, and a bad one is a :class:`UsageError`.
"""

from __future__ import annotations

import ast
import difflib

# Keys a --config file may hold besides the [params] table, with their types.
CONFIG_INPUT_KEYS = {"format": str, "numFeatures": int}


class UsageError(ValueError):
    """A bad argument, config file or input path: reported in one line, without a traceback."""


def _toml_module():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the same parser as a package
        import tomli as tomllib
    return tomllib


def read_config(path: str) -> dict:
    """Read a ``train`` config file.

    Parameters
    ----------
    path : str
        A TOML file with an optional ``[input]`` table (``format``, ``numFeatures``) and an
        optional ``[params]`` table of SVBLogisticRegression params (see ``conf/train.toml``).

    Returns
    -------
    dict
        ``{"input": {...}, "params": {...}}``; both present, possibly empty.

    Raises
    ------
    UsageError
        If the file is missing, is not valid TOML or has keys this command does not know.
    """
    tomllib = _toml_module()
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"config file {path} is not valid TOML: {error}") from None
    unknown = sorted(set(document) - {"input", "params"})
    if unknown:
        raise UsageError(
            f"config file {path} has unknown section(s) {', '.join(unknown)}; "
            "expected [input] and [params]"
        )
    config = {"input": document.get("input", {}), "params": document.get("params", {})}
    for section in ("input", "params"):
        if not isinstance(config[section], dict):
            raise UsageError(f"config file {path}: '{section}' must be a table ([{section}])")
    for key, value in config["input"].items():
        expected = CONFIG_INPUT_KEYS.get(key)
        if expected is None:
            raise UsageError(
                f"config file {path}: unknown key '{key}' in [input]; valid keys: "
                + ", ".join(CONFIG_INPUT_KEYS)
            )
        if not isinstance(value, expected) or isinstance(value, bool):
            raise UsageError(
                f"config file {path}: [input] {key} must be a {expected.__name__}, got {value!r}"
            )
    return config


def parse_param_assignment(text: str) -> tuple[str, object]:
    """Split ``NAME=VALUE`` and parse VALUE as a Python or TOML-style literal.

    Values that are not literals (``float32``, ``features``) stay strings, so strings need no
    quotes on the command line; ``true``/``false`` are accepted as in TOML.
    """
    name, sep, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    if not sep or not name:
        raise UsageError(f"--param expects NAME=VALUE, got {text!r}")
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return name, lowered == "true"
    try:
        return name, ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return name, raw


def set_params(estimator, values: dict, source: str) -> None:
    """Set params on ``estimator`` after converting each value with the param's own converter.

    Parameters
    ----------
    estimator : pyspark.ml.param.Params
        The estimator whose params are set in place.
    values : dict
        Param name to value (from a config file or ``--param`` flags).
    source : str
        Where the values came from, for error messages (``"--param"``, the config path).

    Raises
    ------
    UsageError
        For an unknown param name (listing the valid ones) or a value the param cannot take.
    """
    valid = sorted(param.name for param in estimator.params)
    for name, value in values.items():
        if not estimator.hasParam(name):
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(
                f"{source}: unknown param '{name}'{hint}; valid params of "
                f"{type(estimator).__name__}: {', '.join(valid)}"
            )
        param = estimator.getParam(name)
        converted = _convert(param, value, source)
        estimator._set(**{name: converted})


def _convert(param, value, source: str):
    if value is None or param.typeConverter is None:
        return value
    try:
        return param.typeConverter(value)
    except (TypeError, ValueError) as first:
        # "--param weightCol=123" parses as an int; a string param still wants the text.
        if not isinstance(value, str):
            try:
                return param.typeConverter(str(value))
            except (TypeError, ValueError):
                pass
        raise UsageError(
            f"{source}: bad value {value!r} for param '{param.name}': {first}"
        ) from None


def build_estimator(config_params: dict, flag_params: list[str], columns: dict, config_path: str):
    """An SVBLogisticRegression with defaults < config file < ``--param`` < column flags.

    Raises
    ------
    UsageError
        For unknown names or bad values, before any Spark work starts.
    """
    from svb_spark import SVBLogisticRegression
    from svb_spark.params import validate_param_values

    estimator = SVBLogisticRegression()
    set_params(estimator, config_params, config_path)
    set_params(estimator, dict(parse_param_assignment(p) for p in flag_params), "--param")
    set_params(estimator, {k: v for k, v in columns.items() if v is not None}, "flags")
    try:
        validate_param_values(estimator)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return estimator
