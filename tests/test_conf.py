"""conf/train.toml documents the library: every commented ``name = value`` line is the default.

A line whose param has no default (``weightCol``, ``checkpointDir`` ...) shows an example
instead, and the comment above it must say the param is unset by default.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from svb_spark import SVBLogisticRegression, cli, cli_settings

TRAIN_TOML = Path(__file__).resolve().parents[1] / "conf" / "train.toml"
ASSIGNMENT = re.compile(r"^# (\w+) = (.+)$")
SECTION = re.compile(r"^\[(\w+)\]$")


def documented_lines(text: str) -> list[tuple[str, str, object, str]]:
    """(section, name, value, the comment above it) for every commented ``name = value``.

    The comment is the run of comment lines before the assignment (or before the group of
    assignments it belongs to, as predictionCol, probabilityCol and rawPredictionCol).
    """
    tomllib = cli_settings._toml_module()
    entries, section, comment = [], None, []
    for line in text.splitlines():
        line = line.rstrip()
        if header := SECTION.match(line):
            section, comment = header.group(1), []
        elif assignment := ASSIGNMENT.match(line):
            name, raw = assignment.groups()
            value = tomllib.loads(f"value = {raw}")["value"]
            entries.append((section, name, value, " ".join(comment)))
        elif line.startswith("#") and not line.startswith("# ---"):
            comment.append(line.lstrip("# "))
        elif not line:
            comment = []
    return entries


def wrong_defaults(text: str) -> list[str]:
    """What the file states wrongly about the defaults, one message per line at fault."""
    estimator = SVBLogisticRegression()
    train_format = (
        cli.build_parser()
        .parse_args(["predict", "--model", "m", "--input", "i", "--output", "o"])
        .format
    )
    input_defaults = {"format": train_format}
    problems = []
    for section, name, value, comment in documented_lines(text):
        if section == "params":
            if not estimator.hasParam(name):
                problems.append(f"[params] {name} is not a param of SVBLogisticRegression")
                continue
            param = estimator.getParam(name)
            if estimator.hasDefault(param):
                default = estimator.getOrDefault(param)
                if param.typeConverter(value) != default:
                    problems.append(f"{name} = {value!r}, but the default is {default!r}")
                continue
        elif name in input_defaults:
            if value != input_defaults[name]:
                problems.append(f"{name} = {value!r}, but the default is {input_defaults[name]!r}")
            continue
        if "unset" not in comment.lower():
            problems.append(f"{name} has no default: its comment must say it is unset")
    return problems


def test_every_commented_value_in_train_toml_is_the_library_default():
    text = TRAIN_TOML.read_text()
    documented = {name for section, name, _, _ in documented_lines(text) if section == "params"}
    assert documented == {param.name for param in SVBLogisticRegression().params}
    assert wrong_defaults(text) == []


@pytest.mark.parametrize(
    "line, wrong",
    [
        ('# exchange = "auto"', '# exchange = "p2p"'),
        ("# tol = 1e-6", "# tol = 0.003"),
        ("# seed = 78852747", "# seed = 42"),
        ('# format = "parquet"', '# format = "libsvm"'),
    ],
)
def test_a_wrong_default_is_reported(line, wrong):
    text = TRAIN_TOML.read_text()
    assert line in text
    (problem,) = wrong_defaults(text.replace(line, wrong))
    assert problem.startswith(wrong.removeprefix("# ").split(" = ")[0] + " = ")


def test_an_example_value_must_say_the_param_is_unset():
    text = TRAIN_TOML.read_text()
    comment = "# Instance weights column (finite, >= 0); unset means every row weighs 1."
    assert comment in text
    problems = wrong_defaults(text.replace(comment, "# Instance weights column (finite, >= 0)."))
    assert problems == ["weightCol has no default: its comment must say it is unset"]
