"""The README's examples run as written, and the README keeps the shape a new user needs.

Conventions the README follows, so that this test can run it:

- Every ```python block runs, in the README's order, in one namespace (a later block may use
  what an earlier one made, as a reader would), in this process on the shared SparkSession:
  the Quickstart's ``SparkSession.builder...getOrCreate()`` returns it.
- A block that cannot run here (a remote server, a cluster) is preceded by the line
  ``<!-- not run: REASON -->``, which a reader of the rendered page does not see.
- Paths under ``/tmp/`` are moved into the test's own temporary directory.
- The ```bash block of the "Command line" section runs too: its ``svb-spark`` commands through
  ``cli.main`` on the shared session, the others (making the data) with bash; relative paths
  are taken from a temporary directory, except ``conf/``, which is the repository's. The other
  bash blocks install the package, run this suite or start a cluster, and are not run here.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from svb_spark import cli, cli_settings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
NOT_RUN = re.compile(r"<!-- not run: (.+?) -->\s*$")
# A line of a bash block that ends in a backslash goes on in the next.
CONTINUATION = re.compile(r"\\\n\s*")


def code_blocks(text: str) -> list[dict]:
    """Every fenced block: its language, code, the section it sits in, and why it is not run
    (None when it runs)."""
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").splitlines()
        headings = [line for line in before if line.startswith("## ")]
        not_run = NOT_RUN.search(before[-1]) if before else None
        blocks.append(
            {
                "language": match.group(1),
                "code": match.group(2),
                "section": headings[-1][3:] if headings else "",
                "not_run": not_run.group(1) if not_run else None,
            }
        )
    return blocks


def test_the_two_commands_come_first_and_the_quickstart_within_60_lines():
    lines = README.read_text().splitlines()
    assert lines[2:6] == [
        "```bash",
        'pip install ".[demo]" && svb-spark demo',
        'pip install ".[test]" && python -m pytest',
        "```",
    ]
    quickstart = lines.index("## Quickstart")
    code_end = lines.index("```", lines.index("```python", quickstart) + 1)
    assert code_end < 60
    sections = [line[3:] for line in lines if line.startswith("## ")]
    order = [
        "Quickstart",
        "Params",
        "Command line",
        "Run on a cluster",
        "Databricks and Spark Connect",
    ]
    assert [s for s in sections if s in order] == order
    assert sections[-1] == "How it works"


def test_the_demo_extra_holds_scikit_learn_alone():
    project = cli_settings._toml_module().loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["demo"] == ["scikit-learn>=1.2"]


def test_the_readme_logging_line_shows_progress_and_not_py4j():
    (line,) = re.findall(r"`(logging\.basicConfig\(\);[^`]*)`", README.read_text())
    script = "\n".join(
        [
            "import logging",
            "from svb_spark.control.progress import ProgressDisplay",
            line,
            "ProgressDisplay('fit')({'epoch': 3, 'epochs': 100, 'objective': 0.5,"
            " 'rows_per_second': 1000.0, 'bytes_sent': 2048, 'unit': 'epochs'})",
            # pyspark's gateway logs at INFO through these loggers
            "logging.getLogger('py4j.clientserver').info('Closing down clientserver connection')",
            "logging.getLogger('py4j.java_gateway').info('Callback Server Starting')",
        ]
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert completed.returncode == 0, completed.stderr
    assert "svb_spark:epoch 3/100  objective 0.500000" in completed.stderr
    assert "py4j" not in completed.stderr


def test_table_cells_are_short():
    text = README.read_text()
    cells = [
        cell.strip()
        for line in text.splitlines()
        if line.startswith("|")
        for cell in line.strip("|").split(" | ")
    ]
    assert max(len(cell) for cell in cells) <= 200, max(cells, key=len)


PAGES = ["README.md", *sorted(f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES)
def test_links_between_the_pages_resolve(page):
    path = ROOT / page
    text = FENCE.sub("", path.read_text())
    for target, fragment in re.findall(r"\]\(([^):#]*)(?:#([^)]+))?\)", text):
        linked = (path.parent / target).resolve() if target else path
        assert linked.exists(), (page, target)
        if fragment:
            assert fragment in heading_anchors(linked.read_text()), (page, target, fragment)


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to
    hyphens."""
    headings = re.findall(r"(?m)^#+ (.+)$", FENCE.sub("", markdown))
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_block_that_is_not_run_says_why():
    blocks = code_blocks(README.read_text())
    python = [block for block in blocks if block["language"] == "python"]
    assert python and all(block["not_run"] is None or block["not_run"].strip() for block in python)
    assert any(block["not_run"] is None for block in python)


def _anchored(token: str, workdir: Path) -> str:
    if token.startswith("-") or "/" not in token or token.startswith("/"):
        return token
    return str((ROOT if token.startswith("conf/") else workdir) / token)


def test_readme_examples_run(spark, tmp_path, capsys):
    blocks = code_blocks(README.read_text())
    namespace: dict = {"__name__": "readme"}
    for block in blocks:
        if block["language"] == "python" and block["not_run"] is None:
            code = block["code"].replace("/tmp/", f"{tmp_path}/")
            exec(compile(code, f"README.md ({block['section']})", "exec"), namespace)
    printed = capsys.readouterr().out
    model = namespace["model"]
    assert (model.numClasses, model.numFeatures) == (10, 64)
    assert float(re.search(r"test accuracy (\S+)", printed).group(1)) > 0.9

    (command_line,) = [
        block
        for block in blocks
        if block["language"] == "bash" and block["section"] == "Command line"
    ]
    commands = [
        command.strip()
        for command in CONTINUATION.sub(" ", command_line["code"]).split("\n\n")
        if command.strip()
    ]
    for command in commands:
        lines = [line for line in command.splitlines() if not line.startswith("#")]
        if lines[0].startswith("svb-spark "):
            argv = [_anchored(token, tmp_path) for token in shlex.split(" ".join(lines))[1:]]
            assert cli.main(argv) == 0, command
        else:
            completed = subprocess.run(
                ["bash", "-c", "\n".join(lines)], cwd=tmp_path, capture_output=True, text=True
            )
            assert completed.returncode == 0, completed.stderr
    evaluation = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluation["accuracy"] > 0.9 and evaluation["rows"] > 400
    assert (tmp_path / "predictions").is_dir()


@pytest.mark.parametrize("marker", ["<!-- not run: needs a cluster -->\n", ""])
def test_the_not_run_marker_is_read(marker):
    text = f"## Section\n\n{marker}```python\nraise SystemExit\n```\n"
    (block,) = code_blocks(text)
    assert (block["not_run"] is None) == (marker == "")
