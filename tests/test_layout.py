"""The package's layout holds: the core imports no Spark, no sockets, no filesystem and no
transport (it owns the message types and the Exchange contract the transports implement),
no module imports itself back through others, and every module says what it holds and stays
readable in one sitting."""

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "svb_spark"
CORE = PACKAGE / "core"

# What the pure core must not import: Spark, sockets, filesystems, and the packages that use
# them (the Spark side, the driver's control plane, the transports).
FORBIDDEN_IN_CORE = (
    "pyspark",
    "socket",
    "pyarrow.fs",
    "pyarrow.flight",
    "svb_spark.spark",
    "svb_spark.control",
    "svb_spark.transport",
    "svb_spark.classification",
)

# The driver's control plane (listeners, model delivery, progress) is handed what it reads of
# Spark (a conf reader), so it works with any session and is testable without one.
FORBIDDEN_IN_CONTROL = ("pyspark", "svb_spark.spark", "svb_spark.classification")

# About 600 lines: a module one can read in one sitting.
MAX_LINES = 600
# The benchmarks measure the library; they stay smaller than it, each study in a module.
MAX_BENCHMARK_LINES = 2000


def _imports(path: pathlib.Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _forbidden(path: pathlib.Path, forbidden: tuple[str, ...]) -> list[str]:
    return [
        name
        for name in _imports(path)
        for prefix in forbidden
        if name == prefix or name.startswith(prefix + ".")
    ]


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: p.name)
def test_the_core_imports_no_spark_socket_or_filesystem(path):
    bad = _forbidden(path, FORBIDDEN_IN_CORE)
    assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "control").rglob("*.py")), ids=lambda p: p.name)
def test_the_control_plane_imports_no_spark(path):
    bad = _forbidden(path, FORBIDDEN_IN_CONTROL)
    assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_importing_the_core_loads_no_spark_and_no_filesystem():
    modules = sorted(
        "svb_spark." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts)
        for p in CORE.rglob("*.py")
        if p.name != "__init__.py"
    )
    code = (
        f"import sys\nfor m in {modules!r}: __import__(m)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pyspark'"
        " or m.startswith(('pyarrow.fs', 'pyarrow._fs', 'svb_spark.spark', 'svb_spark.control',"
        " 'svb_spark.transport'))))"
    )
    assert printed_by_a_fresh_interpreter(code) == "[]"


def test_the_pre_pass_imports_the_training_modules_in_its_worker():
    # A fresh Python worker runs the pre-pass task; the barrier stage's modules follow in the
    # background, so the first fit's barrier tasks find them imported.
    code = (
        "import sys, threading\n"
        "from svb_spark.spark import inspection\n"
        "before = 'svb_spark.spark.task' in sys.modules\n"
        "list(inspection._statistics_task('features', 'label', None)(iter([])))\n"
        "for thread in threading.enumerate():\n"
        "    if thread is not threading.current_thread(): thread.join()\n"
        "print(before, 'svb_spark.spark.task' in sys.modules)"
    )
    assert printed_by_a_fresh_interpreter(code) == "False True"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_imports(path: pathlib.Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports anywhere in it, deferred imports included
    (``from package import module`` counts as the module)."""
    return {name for name in _imports(path) if name in modules} - {_module_name(path)}


def test_no_module_imports_itself_back_even_through_deferred_imports():
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: _package_imports(path, set(paths)) for name, path in paths.items()}
    # A package's __init__ that re-exports its modules is the package, not a step of a cycle.
    packages = {name for name, path in paths.items() if path.name == "__init__.py"}
    cycles, done = [], set()

    def visit(name: str, trail: list[str]) -> None:  # depth first; a back edge is a cycle
        for nxt in sorted(graph[name] - packages):
            if nxt in trail:
                cycles.append(trail[trail.index(nxt) :] + [nxt])
            elif nxt not in done:
                visit(nxt, trail + [nxt])
        done.add(name)

    for name in sorted(set(graph) - packages - done):
        visit(name, [name])
    assert not cycles, f"import cycles: {sorted({' -> '.join(c) for c in cycles})[:5]}"


def printed_by_a_fresh_interpreter(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.name))
def test_every_module_says_what_it_holds_and_stays_short(path):
    source = path.read_text()
    docstring = ast.get_docstring(ast.parse(source))
    assert docstring and docstring.split("\n")[0].strip(), f"{path.name} has no docstring"
    assert len(source.splitlines()) <= MAX_LINES, f"{path.name} is over {MAX_LINES} lines"


def test_the_benchmarks_stay_within_their_budget():
    paths = (PACKAGE.parent / "benchmarks").rglob("*.py")
    total = sum(len(path.read_text().splitlines()) for path in paths)
    assert total <= MAX_BENCHMARK_LINES, f"benchmarks/ has {total} lines"
