"""Targets and markdown, all generated from one result JSON.

Nothing here measures anything: :func:`benchmarks_readme` fills ``benchmarks/template.md`` and
:func:`readme_section` writes the top-level README's summary from a result dict, and
:func:`replace_section` puts that summary between the README's markers. Re-running them on the
same JSON gives the same text.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from benchmarks.costmodel import METHODS
from benchmarks.workloads import power_of_two
from svb_spark.core.training import ROUND_PHASES

TEMPLATE = Path(__file__).parent / "template.md"
START_MARKER = "<!-- benchmarks:start -->"
END_MARKER = "<!-- benchmarks:end -->"
METHOD_LABELS = {
    "svb-p2p": "SVB, exchange p2p",
    "svb-dense": "SVB, exchange dense",
    "svb-broadcast": "SVB, exchange broadcast",
    "mllib": "MLlib LogisticRegression",
    "sklearn": "scikit-learn (1 process)",
}


def _fmt(value, digits: int = 2, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def _ms(seconds, digits: int = 3) -> str:
    return _fmt(None if seconds is None else 1000 * seconds, digits)


def _bytes(value) -> str:
    if value is None:
        return "n/a"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= size:
            return f"{value / size:,.1f} {unit}"
    return f"{value:,.0f} B"


def markdown_table(header: str | list[str], rows: list[list[str]], align: str = "") -> str:
    """A markdown table; ``header`` a list or "a | b | c", ``align`` one l or r per column
    (default: the first column left, the others right)."""
    header = header.split(" | ") if isinstance(header, str) else header
    align = align or "l" + "r" * (len(header) - 1)
    marks = ["---" if a == "l" else "---:" for a in align]
    lines = [header, marks, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _reached(entry: dict | None) -> dict:
    """A method's time-to-target record ({} when it has none)."""
    return (entry or {}).get("time_to_target") or {}


def evaluate_targets(result: dict) -> list[dict]:
    """The issue's targets, each with its goal, the measured figure (``value`` and as text)
    and whether it is ``met`` (None: not measured in this run)."""
    targets = []

    def target(name: str, goal: str, measured: str, value, met) -> None:
        targets.append({"name": name, "goal": goal, "measured": measured, "value": value,
                        "met": met})  # fmt: skip

    workloads = result.get("workloads", {})
    for name in ("W1", "W2"):
        methods = workloads.get(name, {}).get("methods", {})
        svb, mllib = (_reached(methods.get(k)).get("seconds") for k in ("svb-p2p", "mllib"))
        ratio = svb / mllib if svb and mllib else None
        if ratio is not None:
            measured = f"{svb:.1f} s vs MLlib {mllib:.1f} s = {ratio:.2f}x"
        elif name not in workloads:
            measured = "not measured (workload not run)"
        else:
            measured = f"{'SVB' if mllib else 'MLlib'} did not reach the target"
        met = None if name not in workloads else ratio is not None and ratio <= 0.2
        target(f"{name} time to target", "SVB p2p <= 1/5 of MLlib's wall time", measured,
               ratio, met)  # fmt: skip
    w1 = workloads.get("W1", {})
    if small := w1.get("batch16_bytes"):
        ratio, d = small["p2p"] / small["dense"], w1["describe"]
        formulas = "; ".join(
            f"formula at K={k}, D={f}: 1/{k * (f + 1) / (16 * (k + f)):.1f}"
            for k, f in sorted({(d["num_classes"], d["num_features"]), (1000, 512)})
        )
        measured = f"{_bytes(small['p2p'])} vs {_bytes(small['dense'])} = 1/{1 / ratio:.1f}"
        target("W1 bytes per step, batchSize 16", "p2p <= 1/20 of dense",
               f"{measured} ({formulas})", ratio, ratio <= 0.05)  # fmt: skip
    if eff := w1.get("efficiency"):
        measured = f"{eff['epoch_s']:.3g} s vs {eff['bound_s']:.3g} s = {eff['ratio']:.1f}x"
        target("W1 time per epoch vs GEMM lower bound", "<= 1.3x", measured, eff["ratio"],
               eff["ratio"] <= 1.3)  # fmt: skip
    micro = result.get("micro", {})
    if (tiny := micro.get("p2p_tiny_ms")) is not None:
        measured = (f"{tiny:.2f} ms; allGather {_fmt(micro.get('all_gather_ms'), 0)} ms; "
                    f"Spark job {_fmt(micro.get('spark_job_ms'), 0)} ms")  # fmt: skip
        target("tiny p2p exchange at P=2", "<= 3 ms (allGather ~1000 ms, Spark job ~250 ms)",
               measured, tiny, tiny <= 3.0)  # fmt: skip
    validation = [r for w in workloads.values() for r in w.get("validation", [])
                  if r.get("measured_ms")]  # fmt: skip
    if validation:
        worst = max(validation, key=lambda row: row["error"])
        within = sum(r["error"] <= 0.25 for r in validation)
        measured = (f"worst {worst['error']:.0%} ({worst['workload']} {worst['method']} "
                    f"P={worst['workers']}); {within}/{len(validation)} within 25%")  # fmt: skip
        target("cost model vs measured step time", "within 25% at P in {1, 2, 4}", measured,
               worst["error"], worst["error"] <= 0.25)  # fmt: skip
    return targets


STATUS = {True: "met", False: "**not met**", None: "not measured"}


def targets_table(result: dict) -> str:
    rows = [[t["name"], t["goal"], t["measured"], STATUS[t["met"]]] for t in result["targets"]]
    return markdown_table("target | goal | measured | status", rows, "llll")


def machine_line(result: dict) -> str:
    """One paragraph: where and how the run was measured."""
    m = result["machine"]
    spark, failures = m.get("spark", {}), m.get("executor_blas_failures")
    jvm = spark.get("jvm_blas", {})
    blas = ", ".join(f"{b.get('internal_api')} {b.get('version') or ''}".strip()
                     for b in m.get("numpy_blas", []))  # fmt: skip
    if failures is None:
        executors = "executor BLAS not checked"
    elif failures:
        executors = f"executor BLAS warnings: {failures}"
    else:
        executors = "no executor logged a native BLAS load failure"
    driver = f", driver {spark['driver_memory']}" if spark.get("driver_memory") else ""
    return (
        f"Run `{result['name']}` ({result['mode']}), {result.get('started', '')}, "
        f"{_fmt(result.get('duration_s'), 0)} s in all. {m.get('cpu')}, {m.get('cores')} cores; "
        f"Spark {spark.get('spark')} on `{spark.get('master')}` ({spark.get('executors')} executor "
        f"JVMs, {spark.get('executor_memory')} each{driver}, Java {spark.get('java')}); "
        f"numpy BLAS: {blas or 'unknown'}; MLlib's JVM BLAS: `{jvm.get('blas')}` (native: "
        f"`{jvm.get('native')}`, libblas.so.3 -> `{jvm.get('libblas.so.3')}`; {executors}). "
        f"Load average (1/5/15 min) at start {m.get('load_start')}, at end {m.get('load_end')}: "
        "the machine is shared, so timings are noisy."
    )


def _method_row(entry: dict) -> list[str]:
    """A methods-table row after the label: accuracy, fit, iterations, time to target, bytes
    per step, peak RSS and the note."""
    if entry.get("skipped") or entry.get("failed"):
        seconds = f"{entry['seconds']:.1f}" if entry.get("failed") else ""
        status = "did not finish" if entry.get("failed") else "skipped"
        return [status, seconds, "", "", "", "", entry.get("failed") or entry["skipped"]]
    final, estimated = entry["final"], entry.get("estimated")
    extra, ttt = final.get("extra", {}), _reached(entry)
    if estimated:  # a probe of a few steps: its accuracy means nothing, its step time does
        cells = ["n/a", f"{final['seconds']:.1f} (probe)", f"{estimated['probe_steps']} steps",
                 f"~{estimated['seconds']:,.0f} s (estimated)"]  # fmt: skip
    else:
        reached = "not reached" if ttt else "-"
        if ttt.get("seconds") is not None:
            reached = f"{ttt['seconds']:.1f} s ({ttt['iterations']} it.)"
        cells = [_fmt(final["accuracy"], 4), f"{final['seconds']:.1f}", str(final["iterations"]),
                 reached]  # fmt: skip
    sent = _bytes(extra.get("bytes_per_step")) if "bytes_per_step" in extra else "-"
    rss = _bytes(extra["peak_rss"]) if extra.get("peak_rss") else "-"
    return [*cells, sent, rss, entry.get("note", "")]


def methods_table(workload: dict) -> str:
    """Per method: accuracy, fit time, time to target and bytes per step."""
    rows = [[label, *_method_row(workload["methods"][key])]
            for key, label in METHOD_LABELS.items() if key in workload["methods"]]  # fmt: skip
    header = ("method | held-out accuracy | fit (s) | iterations | time to target | "
              "bytes/step/worker | peak RSS/worker | note")  # fmt: skip
    return markdown_table(header, rows, "lrrrrrrl")


def bytes_table(workload: dict) -> str:
    """Bytes per step per worker, measured next to the formula."""
    rows = [
        [r["config"], r.get("exchange", r["config"].split(",")[0]), _bytes(r["measured"]),
         _bytes(r["predicted"]),
         f"{r['measured'] / r['predicted']:.3f}" if r["predicted"] else "n/a",
         _fmt(r.get("train_ms_per_step"), 2), _fmt(r.get("accuracy"), 4)]
        for r in workload.get("bytes", [])
    ]  # fmt: skip
    header = ("configuration | in force | measured (payload + framing) | formula (payload) "
              "| ratio | train ms/step | held-out accuracy")  # fmt: skip
    return markdown_table(header, rows, "llrrrrr")


def breakdown_table(workload: dict) -> str:
    """Milliseconds per step and phase, measured and predicted."""
    rows = [
        [f"{METHOD_LABELS.get(key, key)} ({source})"]
        + [_ms(entry[source][p]) for p in ROUND_PHASES]
        + [_ms(sum(entry[source][p] for p in ROUND_PHASES))]
        for key, entry in workload.get("breakdown", {}).items()
        for source in ("measured", "model")
    ]
    return markdown_table(["ms per step", *ROUND_PHASES, "total"], rows)


def efficiency_text(eff: dict) -> str:
    """SVB p2p's epoch time against its bare products, in a sentence."""
    if eff.get("kind") == "sparse":
        bound = (
            f"{eff['bound_s']:.3g} s for the bare CSR-times-dense products at the fit's "
            f"shapes ({eff['ratio']:.1f}x) and {eff['bound_peak_s']:.3g} s for their flops"
        )
    else:
        bound = (f"a GEMM lower bound of {eff['bound_s']:.3g} s at the fit's shapes "
                 f"({eff['ratio']:.1f}x) and {eff['bound_peak_s']:.3g} s")  # fmt: skip
    return (f"Hardware efficiency (SVB p2p): {eff['epoch_s']:.3g} s per epoch in the training "
            f"loop against {bound} at the peak single-core sgemm rate of "
            f"{eff['peak_gflops']:.1f} GFLOP/s ({eff['ratio_peak']:.1f}x).")  # fmt: skip


def validation_table(result: dict) -> str:
    """The cost model's step time against measured runs."""
    rows = [
        [r["workload"], r["method"], str(r["workers"]), r["how"], _fmt(r["measured_ms"], 2),
         _fmt(r["predicted_ms"], 2), f"{r['error']:.0%}"]
        for w in result["workloads"].values() for r in w.get("validation", [])
    ]  # fmt: skip
    header = "workload | method | P | measured how | measured ms/step | model ms/step | error"
    return markdown_table(header, rows, "lllllrr")


def projection_table(result: dict, shape_key: str, gbit: float) -> str:
    """Projected epoch time and bytes per epoch per worker at one bandwidth."""
    rows = [r for r in result["projection"]["rows"][shape_key] if r["gbit_per_s"] == gbit]
    workers = sorted({r["workers"] for r in rows})
    cells = {(r["method"], r["workers"]): f"{_fmt(r['epoch_s'], 1)} s / {_bytes(r['epoch_bytes'])}"
             for r in rows}  # fmt: skip
    header = ["epoch time / bytes sent per worker", *[f"P={p}" for p in workers]]
    return markdown_table(header, [[m, *[cells[m, p] for p in workers]] for m in METHODS])


def summary_table(result: dict) -> str:
    """One row per workload: accuracy and time to target of SVB p2p, MLlib and scikit-learn."""

    def reached(entry: dict) -> str:
        if entry.get("failed"):
            return "did not finish"
        seconds = _reached(entry).get("seconds")
        return "not reached" if seconds is None else _fmt(seconds, 1, " s")

    def accuracy(entry: dict) -> str:
        if entry.get("failed"):
            return f"after {entry['seconds']:.0f} s"
        if entry.get("skipped"):
            return "not run"
        return f"{entry['final']['accuracy']:.4f}" if entry.get("final") else "n/a"

    rows = []
    for name, workload in result["workloads"].items():
        svb, mllib, sk = (workload["methods"].get(k) or {} for k in ("svb-p2p", "mllib", "sklearn"))
        rows.append([f"{name}: {workload['describe']['title']}",
                     f"{workload['target_accuracy']:.4f}", f"{reached(svb)} ({accuracy(svb)})",
                     f"{reached(mllib)} ({accuracy(mllib)})", accuracy(sk)])  # fmt: skip
    header = ("workload | target accuracy | SVB p2p: time to target (final acc.) | "
              "MLlib: time to target (final acc.) | scikit-learn acc.")  # fmt: skip
    return markdown_table(header, rows)


def claims_table(result: dict) -> str:
    """The speed-claim microbenchmarks, one row per claim and shape."""
    claims = result.get("claims") or {}
    rows = [
        ["rebuild: in-place sgemm (beta=1) vs `W -= lr * U.T @ V`",
         f"K={r['num_classes']}, D={r['num_features']}, {r['workers']} x {r['batch_size']} rows",
         _ms(r["library_s"]), _ms(r["naive_s"]), f"{r['speedup']:.2f}x"]
        for r in claims.get("rebuild", [])
    ]  # fmt: skip
    for r in claims.get("sparse_layout", []):
        shape = (f"K={r['num_classes']}, D={power_of_two(r['num_features'])}, {r['workers']} x "
                 f"{r['batch_size']} rows, {r['nonzeros_per_row']:.0f} nnz/row")  # fmt: skip
        for part, what in (("apply", shape), ("forward", f"{r['batch_size']} rows of the above")):
            t = r[part]
            rows.append(
                [
                    f"sparse {part}: feature-major vs class-major W",
                    what,
                    _ms(t["feature_major"]),
                    _ms(t["class_major"]),
                    f"{t['speedup']:.2f}x",
                ]
            )
    header = "claim | shape (float32, one thread) | library ms | alternative ms | speedup"
    return markdown_table(header, rows, "llrrr")


def _images(plots: dict[str, str], names, prefix: str = "") -> list[str]:
    return [f"![{name}]({prefix}{plots[name]})" for name in names if name in plots]


def workload_section(name: str, workload: dict, plots: dict[str, str]) -> str:
    d = workload["describe"]
    nonzeros = d.get("nonzeros_per_row")
    sparse = f", CSR with {nonzeros:.1f} non-zeros per row" if nonzeros else ""
    source = workload.get("target_source", "MLlib's final minus 0.005")
    blocks = [
        f"## {name}: {d['title']}",
        f"{d['train_rows']:,} train / {d['test_rows']:,} test rows{sparse}; target accuracy "
        f"{workload['target_accuracy']:.4f} ({source}).",
        methods_table(workload),
        "Bytes per step per worker:",
        bytes_table(workload),
        "Step time breakdown:",
        breakdown_table(workload),
    ]
    if eff := workload.get("efficiency"):
        blocks.append(efficiency_text(eff))
    blocks += _images(plots, (f"{name}_time_to_accuracy", f"{name}_step_breakdown"))
    return "\n\n".join(blocks)


def projections_text(result: dict, plots: dict[str, str]) -> str:
    """Epochs to target in this run, then the projection tables at 10 Gbit/s."""
    passes = []
    for name, workload in result["workloads"].items():
        svb, mllib = (_reached(workload["methods"].get(k)) for k in ("svb-p2p", "mllib"))
        passes.append(f"{name}: SVB {svb.get('iterations', 'n/a')} epoch(s), "
                      f"MLlib {mllib.get('iterations', 'n/a')} iteration(s)")  # fmt: skip
    blocks = [
        "The projections compare one pass over the data: an SGD epoch against an L-BFGS "
        "iteration. Reaching the target took, in this run, " + "; ".join(passes) + "."
    ]
    for key, shape in result["projection"]["shapes"].items():
        blocks += [
            f"### Projection: {shape['title']}",
            f"N={shape['rows']:,} rows, K={shape['num_classes']}, D={shape['num_features']}, "
            f"batchSize {shape['batch_size']} per worker; an MLlib-style epoch is one "
            "iteration. At 10 Gbit/s:",
            projection_table(result, key, 10.0),
        ]
    return "\n\n".join(blocks + _images(plots, ["scaling_projection"]))


def benchmarks_readme(result: dict, plots: dict[str, str]) -> str:
    """The whole of ``benchmarks/README.md`` for one result: ``template.md`` filled in;
    ``plots``: name -> path relative to ``benchmarks/``."""
    d = result.get("svb_defaults", {"batchSize": 32, "maxIter": 100, "tol": 1e-6})
    micro = result.get("micro", {})
    latency = [
        ["Flight p2p exchange, tiny payload", _fmt(micro.get("p2p_tiny_ms"), 3)],
        ["Flight p2p exchange, 4 MB payload", _fmt(micro.get("p2p_large_ms"), 2)],
        ["BarrierTaskContext.allGather, tiny", _fmt(micro.get("all_gather_ms"), 0)],
        ["trivial Spark job", _fmt(micro.get("spark_job_ms"), 0)],
    ]
    calibration = ", ".join(
        f"`{k}` = " + ("{" + ", ".join(f"{p}: {s:.3g}" for p, s in v.items()) + "}"
                       if isinstance(v, dict) else f"{v:.3g}")
        for k, v in result["calibration"].items() if v is not None
    )  # fmt: skip
    claims = ""
    if result.get("claims"):
        claims = (
            "## Speed claims\n\nMedian milliseconds per call, library against the "
            "alternative, measured in this run (`benchmarks/micro.py`: "
            "`rebuild_in_place_vs_naive`, `sparse_layouts`).\n\n" + claims_table(result)
        )
    text = TEMPLATE.read_text().format(
        name=result["name"],
        defaults=f"batchSize {d['batchSize']}, maxIter {d['maxIter']}, tol {d['tol']:.0e}",
        machine=machine_line(result),
        targets=targets_table(result),
        summary=summary_table(result),
        workloads="\n\n".join(
            workload_section(name, w, plots) for name, w in result["workloads"].items()
        ),  # fmt: skip
        claims=claims,
        latency=markdown_table("mechanism (P=2) | ms per call", latency),
        calibration=calibration,
        validation="\n\n".join([validation_table(result), *_images(plots, ["bytes_per_step"])]),
        projections=projections_text(result, plots) if result.get("projection") else "",
    )
    return re.sub(r"\n{3,}", "\n\n", text)  # no blank run where a part is absent


def readme_section(result: dict, plots: dict[str, str]) -> str:
    """The top-level README's benchmark summary (markers included); plot paths from the root."""
    blocks = [
        f"{START_MARKER}\n## Benchmarks",
        "<!-- Generated by `python -m benchmarks run`; do not edit by hand. -->",
        "`bash benchmarks/setup.sh && python -m benchmarks run --quick` measures SVB against "
        "MLlib's LogisticRegression and scikit-learn in one run on a two-executor local cluster; "
        "[benchmarks/README.md](benchmarks/README.md) has every table and how each is measured.",
        machine_line(result),
        summary_table(result),
        targets_table(result),
    ]
    if result.get("claims"):
        blocks += ["Speed claims, measured in the same run:", claims_table(result)]
    blocks += _images(plots, ["W1_time_to_accuracy", "scaling_projection"], "benchmarks/")
    return "\n\n".join([*blocks, END_MARKER])


def replace_section(text: str, section: str) -> str:
    """``text`` with the part between the markers replaced by ``section`` (appended if absent)."""
    pattern = re.compile(re.escape(START_MARKER) + r".*?" + re.escape(END_MARKER), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: section, text, count=1)
    return text.rstrip("\n") + "\n\n" + section + "\n"
