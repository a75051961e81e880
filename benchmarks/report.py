"""Markdown, README sections, targets and plots, all generated from one result JSON.

Nothing here measures anything: :func:`benchmarks_readme` and :func:`readme_section` turn a
result dict into text, :func:`replace_section` puts that text between the markers of a README,
and :func:`plot_all` draws the PNGs. Re-running them on the same JSON gives the same files.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from benchmarks.costmodel import METHODS
from benchmarks.workloads import power_of_two
from svb_spark.training import ROUND_PHASES

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


def _short(values: dict) -> str:
    return "{" + ", ".join(f"{k}: {v:.3g}" for k, v in values.items()) + "}"


def _bytes(value) -> str:
    if value is None:
        return "n/a"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= size:
            return f"{value / size:,.1f} {unit}"
    return f"{value:,.0f} B"


def markdown_table(header: str | list[str], rows: list[list[str]], align: str = "") -> str:
    """A markdown table; ``header`` a list or "a | b | c", ``align`` one l or r per column."""
    header = header.split(" | ") if isinstance(header, str) else header
    align = align or "l" + "r" * (len(header) - 1)
    marks = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _target(name: str, goal: str, measured: str, value, met) -> dict:
    # met: True, False, or None when the run could not measure it
    return {"name": name, "goal": goal, "measured": measured, "value": value, "met": met}


def evaluate_targets(result: dict) -> list[dict]:
    """The issue's targets, each with its measured figure and whether it is met."""
    targets = []
    workloads = result.get("workloads", {})
    for name in ("W1", "W2"):
        methods = workloads.get(name, {}).get("methods", {})
        svb, mllib = (
            (methods.get(k) or {}).get("time_to_target") or {} for k in ("svb-p2p", "mllib")
        )
        ratio, measured = None, "not measured (workload not run)"
        if svb.get("seconds") and mllib.get("seconds"):
            ratio = svb["seconds"] / mllib["seconds"]
            measured = f"{svb['seconds']:.1f} s vs MLlib {mllib['seconds']:.1f} s = {ratio:.2f}x"
        elif mllib.get("seconds"):
            measured = "SVB did not reach the target"
        met = None if name not in workloads else (ratio is not None and ratio <= 0.2)
        goal = "SVB p2p <= 1/5 of MLlib's wall time"
        targets.append(_target(f"{name} time to target", goal, measured, ratio, met))
    w1 = workloads.get("W1", {})
    if small := w1.get("batch16_bytes"):
        ratio, d = small["p2p"] / small["dense"], w1["describe"]
        formulas = "; ".join(
            f"formula at K={k}, D={f}: 1/{k * (f + 1) / (16 * (k + f)):.1f}"
            for k, f in sorted({(d["num_classes"], d["num_features"]), (1000, 512)})
        )
        measured = (
            f"{_bytes(small['p2p'])} vs {_bytes(small['dense'])} = 1/{1 / ratio:.1f} ({formulas})"
        )
        targets.append(_target("W1 bytes per step, batchSize 16", "p2p <= 1/20 of dense",
                               measured, ratio, ratio <= 0.05))  # fmt: skip
    if eff := w1.get("efficiency"):
        ratio = eff["ratio"]
        measured = f"{eff['epoch_s']:.3g} s vs {eff['bound_s']:.3g} s = {ratio:.1f}x"
        targets.append(_target("W1 time per epoch vs GEMM lower bound", "<= 1.3x", measured,
                               ratio, ratio <= 1.3))  # fmt: skip
    micro = result.get("micro", {})
    if (tiny := micro.get("p2p_tiny_ms")) is not None:
        measured = (f"{tiny:.2f} ms; allGather {_fmt(micro.get('all_gather_ms'), 0)} ms; "
                    f"Spark job {_fmt(micro.get('spark_job_ms'), 0)} ms")  # fmt: skip
        goal = "<= 3 ms (allGather ~1000 ms, Spark job ~250 ms)"
        targets.append(_target("tiny p2p exchange at P=2", goal, measured, tiny, tiny <= 3.0))
    validation = [
        r for w in workloads.values() for r in w.get("validation", []) if r.get("measured_ms")
    ]
    if validation:
        worst = max(validation, key=lambda row: row["error"])
        within = sum(r["error"] <= 0.25 for r in validation)
        measured = (f"worst {worst['error']:.0%} ({worst['workload']} {worst['method']} "
                    f"P={worst['workers']}); {within}/{len(validation)} within 25%")  # fmt: skip
        targets.append(_target("cost model vs measured step time", "within 25% at P in {1, 2, 4}",
                               measured, worst["error"], worst["error"] <= 0.25))  # fmt: skip
    return targets


def _met(met) -> str:
    return {True: "met", False: "**not met**", None: "not measured"}[met]


def targets_table(result: dict) -> str:
    """Markdown table of :func:`evaluate_targets`."""
    rows = [[t["name"], t["goal"], t["measured"], _met(t["met"])] for t in result["targets"]]
    return markdown_table(["target", "goal", "measured", "status"], rows, "llll")


def machine_line(result: dict) -> str:
    """One paragraph: where and how the run was measured."""
    m = result["machine"]
    spark = m.get("spark", {})
    blas = ", ".join(
        f"{b.get('internal_api')} {b.get('version') or ''}".strip() for b in m.get("numpy_blas", [])
    )
    jvm = spark.get("jvm_blas", {})
    executors = m.get("executor_blas_failures")
    executor_note = (
        "no executor logged a native BLAS load failure"
        if executors == []
        else f"executor BLAS warnings: {executors}"
        if executors
        else "executor BLAS not checked"
    )
    load = m.get("load_start"), m.get("load_end")
    driver = f", driver {spark['driver_memory']}" if spark.get("driver_memory") else ""
    return (
        f"Run `{result['name']}` ({result['mode']}), {result.get('started', '')}, "
        f"{_fmt(result.get('duration_s'), 0)} s in all. {m.get('cpu')}, {m.get('cores')} cores; "
        f"Spark {spark.get('spark')} on `{spark.get('master')}` ({spark.get('executors')} executor "
        f"JVMs, {spark.get('executor_memory')} each{driver}, Java {spark.get('java')}); "
        f"numpy BLAS: {blas or 'unknown'}; MLlib's JVM BLAS: `{jvm.get('blas')}` (native: "
        f"`{jvm.get('native')}`, libblas.so.3 -> `{jvm.get('libblas.so.3')}`; {executor_note}). "
        f"Load average (1/5/15 min) at start {load[0]}, at end {load[1]}: the machine is shared, "
        f"so timings are noisy."
    )


def methods_table(workload: dict) -> str:
    """Markdown table: per method, accuracy, fit time, time to target and bytes per step."""
    rows = []
    for key, label in METHOD_LABELS.items():
        entry = workload["methods"].get(key)
        if entry is None:
            continue
        if entry.get("skipped") or entry.get("failed"):
            seconds = f"{entry['seconds']:.1f}" if entry.get("failed") else ""
            status = "did not finish" if entry.get("failed") else "skipped"
            rows.append(
                [label, status, seconds, "", "", "", "", entry.get("failed") or entry["skipped"]]
            )
            continue
        final, estimated = entry["final"], entry.get("estimated")
        extra, ttt = final.get("extra", {}), entry.get("time_to_target") or {}
        bytes_cell = _bytes(extra.get("bytes_per_step")) if "bytes_per_step" in extra else "-"
        rss_cell = _bytes(extra.get("peak_rss")) if extra.get("peak_rss") else "-"
        if estimated:  # a probe of a few steps: its accuracy means nothing, its step time does
            cells = ["n/a", f"{final['seconds']:.1f} (probe)", f"{estimated['probe_steps']} steps",
                     f"~{estimated['seconds']:,.0f} s (estimated)"]  # fmt: skip
        else:
            reached = "-" if not ttt else "not reached"
            if ttt.get("seconds") is not None:
                reached = f"{ttt['seconds']:.1f} s ({ttt['iterations']} it.)"
            cells = [_fmt(final["accuracy"], 4), f"{final['seconds']:.1f}",
                     str(final["iterations"]), reached]  # fmt: skip
        rows.append([label, *cells, bytes_cell, rss_cell, entry.get("note", "")])
    header = ("method | held-out accuracy | fit (s) | iterations | time to target | "
              "bytes/step/worker | peak RSS/worker | note")  # fmt: skip
    return markdown_table(header, rows, "lrrrrrrl")


def bytes_table(workload: dict) -> str:
    """Markdown table: bytes per step per worker, measured next to the formula."""
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
    """Markdown table: milliseconds per step and phase, measured and predicted."""
    rows = []
    for key, entry in workload.get("breakdown", {}).items():
        for source in ("measured", "model"):
            phases = entry[source]
            rows.append(
                [f"{METHOD_LABELS.get(key, key)} ({source})"]
                + [_fmt(1000 * phases[p], 3) for p in ROUND_PHASES]
                + [_fmt(1000 * sum(phases[p] for p in ROUND_PHASES), 3)]
            )
    return markdown_table(["ms per step", *ROUND_PHASES, "total"], rows)


def validation_table(result: dict) -> str:
    """Markdown table: the cost model's step time against measured runs."""
    rows = [
        [r["workload"], r["method"], str(r["workers"]), r["how"], _fmt(r["measured_ms"], 2),
         _fmt(r["predicted_ms"], 2), f"{r['error']:.0%}"]
        for w in result["workloads"].values() for r in w.get("validation", [])
    ]  # fmt: skip
    header = "workload | method | P | measured how | measured ms/step | model ms/step | error"
    return markdown_table(header, rows, "lllllrr")


def projection_table(result: dict, shape_key: str, gbit: float) -> str:
    """Markdown table: projected epoch time and bytes per epoch per worker at one bandwidth."""
    rows_in = [r for r in result["projection"]["rows"][shape_key] if r["gbit_per_s"] == gbit]
    workers = sorted({r["workers"] for r in rows_in})
    rows = []
    for method in METHODS:
        cells = {r["workers"]: r for r in rows_in if r["method"] == method}
        rows.append([method] + [f"{_fmt(cells[p]['epoch_s'], 1)} s / "
                                f"{_bytes(cells[p]['epoch_bytes'])}" for p in workers])  # fmt: skip
    return markdown_table(
        ["epoch time / bytes sent per worker", *[f"P={p}" for p in workers]], rows
    )


def summary_table(result: dict) -> str:
    """One row per workload: accuracy and time to target of SVB p2p, MLlib and scikit-learn."""

    def ttt(entry: dict) -> str:
        if entry.get("failed"):
            return "did not finish"
        seconds = (entry.get("time_to_target") or {}).get("seconds")
        return _fmt(seconds, 1, " s") if seconds is not None else "not reached"

    def acc(entry: dict) -> str:
        if entry.get("failed"):
            return f"after {entry['seconds']:.0f} s"
        if entry.get("skipped"):
            return "not run"
        return f"{entry['final']['accuracy']:.4f}" if entry.get("final") else "n/a"

    rows = []
    for name, workload in result["workloads"].items():
        svb, mllib, sklearn = (
            workload["methods"].get(k) or {} for k in ("svb-p2p", "mllib", "sklearn")
        )
        title, target = workload["describe"]["title"], workload["target_accuracy"]
        rows.append([f"{name}: {title}", f"{target:.4f}", f"{ttt(svb)} ({acc(svb)})",
                     f"{ttt(mllib)} ({acc(mllib)})", acc(sklearn)])  # fmt: skip
    rows += [[name, "skipped (see below)", "", "", ""] for name in result.get("skipped", {})]
    header = ("workload | target accuracy | SVB p2p: time to target (final acc.) | "
              "MLlib: time to target (final acc.) | scikit-learn acc.")  # fmt: skip
    return markdown_table(header, rows, "lrrrr")


def method_text(result: dict) -> str:
    """How everything is measured, with the run's SVB defaults filled in."""
    d = result.get("svb_defaults", {"batchSize": 32, "maxIter": 100, "tol": 1e-6})
    defaults = f"batchSize {d['batchSize']}, maxIter {d['maxIter']}, tol {d['tol']:.0e}"
    return f"""\
How it is measured (all in one run, on one Spark session on `local-cluster[2,1,...]`: two executor
JVMs with one core each, the same cached two-partition DataFrames for every Spark method):

- **Peers.** SVB (`SVBLogisticRegression`, defaults: {defaults}) with exchange `p2p`, `dense`
  and `broadcast`; MLlib's `LogisticRegression(family="multinomial", maxIter=100, tol=1e-6)`
  with its default aggregation depth, using the native BLAS reported below
  (`benchmarks/setup.sh` installs Debian's OpenBLAS as `libblas.so.3`); scikit-learn's
  `LogisticRegression` (lbfgs, standardized input, single process) as the accuracy reference.
  Executors and the driver JVM run one BLAS thread per core (`OPENBLAS_NUM_THREADS=1`).
- **Sparse rows (W3).** The data stays CSR everywhere: SparseVectors in Spark, CSR for
  scikit-learn (scaled, not centered, as the library and MLlib do) and for held-out accuracy.
  A peer that cannot run gets a row saying why: MLlib's own error when it runs out of memory or
  past its time limit, scikit-learn's optimizer state against the memory available, and the
  dense exchange, when the cost model puts it past the run's budget, is timed on a few steps
  and its training loop extrapolated to the steps p2p needed (labelled "estimated").
- **Time to accuracy.** The target is MLlib's final held-out accuracy minus 0.5 points (when
  MLlib cannot finish, scikit-learn's; each workload says which). A fit
  with `maxIter = k` ends on exactly the k-th iterate of a longer fit (L-BFGS iterations and SVB
  epochs are deterministic), so the harness re-fits with k = 1, 2, 4, ... until the target is
  reached, then bisects twice between the last two rungs; the time reported is the wall time
  of that fit, setup and Spark jobs included. The curves plot every fit made. `dense` and
  `broadcast` run the same SGD as `p2p`, so they are timed once, at the epochs p2p needed.
- **Bytes per step** come from `model.summary.bytesPerStep` (payload + Arrow framing, rank 0);
  the formula is `summary.predictedBytesPerStep` (payload only) of the mode in force. On W1
  every exchange mode (`p2p`, `dense`, `auto`, `p2p` with `syncInterval=4`) also trains one
  epoch at batchSize 16, side by side; train ms/step is `summary.timings["train"]` over the
  steps. Peak RSS is the largest worker's `peak_rss` (`summary.workers`).
- **Step breakdown** is `summary.timings` divided by the steps, next to the cost model.
- **Hardware efficiency** divides the training loop's time per epoch by the time the same
  GEMMs (forward 2BKD and rebuild 2PBKD flops per step) take at the shapes of the fit, timed
  with numpy on one thread in the same run; for sparse rows, by the bare CSR-times-dense
  products (2 nnz K flops per row each way) at the fit's shapes, timed with scipy.
- **Speed claims** (in-place rebuild, feature-major sparse replica) are microbenchmarks of the
  library's own functions against the alternative, in the same run, on one thread.
- **Cost model** (`benchmarks/costmodel.py`): latency, bandwidth and GEMM rate come from
  microbenchmarks in the same run: a 4 MB Flight exchange between threads (bytes), single-core
  sgemm, CSR-times-dense products, numpy streaming ops, the codec, the training loop itself on
  a tiny problem (the fixed cost of each phase on one worker; the latency as the loop sees it
  between two processes), a trivial Spark job and the JVM's dgemm. No fit it is validated
  against feeds it. It is validated against measured runs: P=1 and P=2 on the cluster, P=4 as
  four processes over a Flight mesh without Spark (oversubscribed: 2 cores).
"""


def claims_table(result: dict) -> str:
    """Markdown table of the speed-claim microbenchmarks, one row per claim and shape."""
    claims = result.get("claims") or {}
    rows = [
        ["rebuild: in-place sgemm (beta=1) vs `W -= lr * U.T @ V`",
         f"K={r['num_classes']}, D={r['num_features']}, {r['workers']} x {r['batch_size']} rows",
         _fmt(1000 * r["library_s"], 3), _fmt(1000 * r["naive_s"], 3), f"{r['speedup']:.2f}x"]
        for r in claims.get("rebuild", [])
    ]  # fmt: skip
    for r in claims.get("sparse_layout", []):
        shape = (f"K={r['num_classes']}, D={power_of_two(r['num_features'])}, {r['workers']} x "
                 f"{r['batch_size']} rows, {r['nonzeros_per_row']:.0f} nnz/row")  # fmt: skip
        for part, what in (("apply", shape), ("forward", f"{r['batch_size']} rows of the above")):
            t = r[part]
            rows.append([f"sparse {part}: feature-major vs class-major W", what,
                         _fmt(1000 * t["feature_major"], 3), _fmt(1000 * t["class_major"], 3),
                         f"{t['speedup']:.2f}x"])  # fmt: skip
    header = "claim | shape (float32, one thread) | library ms | alternative ms | speedup"
    return markdown_table(header, rows, "llrrr")


def benchmarks_readme(result: dict, plots: dict[str, str]) -> str:
    """The whole of ``benchmarks/README.md`` for one result; ``plots``: name -> path relative
    to ``benchmarks/``."""
    parts = [
        "# Benchmarks",
        "",
        "<!-- Generated by `python -m benchmarks run` from "
        f"`benchmarks/results/{result['name']}.json`; edit benchmarks/report.py, not this "
        "file. -->",
        "",
        "```bash",
        "bash benchmarks/setup.sh                # once: native BLAS for MLlib, the bench extra",
        "python -m benchmarks run --quick        # under 10 minutes on 2 cores",
        "python -m benchmarks run --full         # the issue's sizes",
        "python -m benchmarks report benchmarks/results/NAME.json   # regenerate the READMEs",
        "python -m benchmarks.batch_size        # batchSize 8..128 side by side (results/)",
        "```",
        "",
        method_text(result),
        machine_line(result),
        "",
        "## Targets",
        "",
        targets_table(result),
        "",
        "## Summary",
        "",
        summary_table(result),
        "",
    ]
    for name, workload in result["workloads"].items():
        d = workload["describe"]
        nonzeros = d.get("nonzeros_per_row")
        sparse = f", CSR with {nonzeros:.1f} non-zeros per row" if nonzeros else ""
        source = workload.get("target_source", "MLlib's final minus 0.005")
        parts += [
            f"## {name}: {d['title']}",
            "",
            f"{d['train_rows']:,} train / {d['test_rows']:,} test rows{sparse}; target accuracy "
            f"{workload['target_accuracy']:.4f} ({source}).",
            "",
            methods_table(workload),
            "",
            "Bytes per step per worker:",
            "",
            bytes_table(workload),
            "",
            "Step time breakdown:",
            "",
            breakdown_table(workload),
            "",
        ]
        if eff := workload.get("efficiency"):
            bound = (
                f"{eff['bound_s']:.3g} s for the bare CSR-times-dense products at the fit's "
                f"shapes ({eff['ratio']:.1f}x) and {eff['bound_peak_s']:.3g} s for their flops"
                if eff.get("kind") == "sparse"
                else f"a GEMM lower bound of {eff['bound_s']:.3g} s at the fit's shapes "
                f"({eff['ratio']:.1f}x) and {eff['bound_peak_s']:.3g} s"
            )
            parts += [
                f"Hardware efficiency (SVB p2p): {eff['epoch_s']:.3g} s per epoch in the training "
                f"loop against {bound} at the peak single-core sgemm rate of "
                f"{eff['peak_gflops']:.1f} GFLOP/s ({eff['ratio_peak']:.1f}x).",
                "",
            ]
        for plot in (f"{name}_time_to_accuracy", f"{name}_step_breakdown"):
            if plot in plots:
                parts += [f"![{plot}]({plots[plot]})", ""]
    for name, reason in result.get("skipped", {}).items():
        parts += [f"## {name}", "", f"Skipped: {reason}.", ""]
    if result.get("claims"):
        parts += [
            "## Speed claims",
            "",
            "Median milliseconds per call, library against the alternative, measured in this "
            "run (`benchmarks/micro.py`: `rebuild_in_place_vs_naive`, `sparse_layouts`).",
            "",
            claims_table(result),
            "",
        ]
    micro = result.get("micro", {})
    parts += [
        "## Exchange latency and the cost model",
        "",
        markdown_table(
            ["mechanism (P=2)", "ms per call"],
            [
                ["Flight p2p exchange, tiny payload", _fmt(micro.get("p2p_tiny_ms"), 3)],
                ["Flight p2p exchange, 4 MB payload", _fmt(micro.get("p2p_large_ms"), 2)],
                ["BarrierTaskContext.allGather, tiny", _fmt(micro.get("all_gather_ms"), 0)],
                ["trivial Spark job", _fmt(micro.get("spark_job_ms"), 0)],
            ],
        ),
        "",
        "Calibration: "
        + ", ".join(
            f"`{k}` = {v:.3g}" if isinstance(v, (int, float)) else f"`{k}` = {_short(v)}"
            for k, v in result["calibration"].items()
            if v is not None
        )
        + ".",
        "",
        validation_table(result),
        "",
    ]
    if "bytes_per_step" in plots:
        parts += [f"![bytes per step]({plots['bytes_per_step']})", ""]
    projection = result.get("projection")
    if projection:
        passes = []
        for name, workload in result["workloads"].items():
            svb = (workload["methods"].get("svb-p2p") or {}).get("time_to_target") or {}
            mllib = (workload["methods"].get("mllib") or {}).get("time_to_target") or {}
            passes.append(
                f"{name}: SVB {svb.get('iterations', 'n/a')} epoch(s), MLlib "
                f"{mllib.get('iterations', 'n/a')} iteration(s)"
            )
        parts += [
            "The projections compare one pass over the data: an SGD epoch against an L-BFGS "
            "iteration. Reaching the target took, in this run, " + "; ".join(passes) + ".",
            "",
        ]
        for key, shape in projection["shapes"].items():
            parts += [
                f"### Projection: {shape['title']}",
                "",
                f"N={shape['rows']:,} rows, K={shape['num_classes']}, D={shape['num_features']}, "
                f"batchSize {shape['batch_size']} per worker; an MLlib-style epoch is one "
                "iteration. At 10 Gbit/s:",
                "",
                projection_table(result, key, 10.0),
                "",
            ]
        if "scaling_projection" in plots:
            parts += [f"![scaling projection]({plots['scaling_projection']})", ""]
    return "\n".join(parts)


def readme_section(result: dict, plots: dict[str, str]) -> str:
    """The top-level README's benchmark summary (markers included); plot paths from the root."""
    body = [
        START_MARKER,
        "## Benchmarks",
        "",
        "<!-- Generated by `python -m benchmarks run`; do not edit by hand. -->",
        "",
        "`bash benchmarks/setup.sh && python -m benchmarks run --quick` measures SVB against "
        "MLlib's LogisticRegression and scikit-learn in one run on a two-executor local cluster; "
        "[benchmarks/README.md](benchmarks/README.md) has every table and how each is measured.",
        "",
        machine_line(result),
        "",
        summary_table(result),
        "",
    ]
    body += [f"{name} skipped: {reason}." for name, reason in result.get("skipped", {}).items()]
    body += ["", targets_table(result), ""]
    if result.get("claims"):
        body += ["Speed claims, measured in the same run:", "", claims_table(result), ""]
    for plot in ("W1_time_to_accuracy", "scaling_projection"):
        if plot in plots:
            body += [f"![{plot}](benchmarks/{plots[plot]})", ""]
    body.append(END_MARKER)
    return "\n".join(body)


def replace_section(text: str, section: str) -> str:
    """``text`` with the part between the markers replaced by ``section`` (appended if absent)."""
    pattern = re.compile(re.escape(START_MARKER) + r".*?" + re.escape(END_MARKER), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: section, text, count=1)
    return text.rstrip("\n") + "\n\n" + section + "\n"


def plot_all(result: dict, directory: Path) -> dict[str, str]:
    """Draw every plot of ``result`` into ``directory``; returns name -> file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}

    def save(fig, name: str, ax=None, legend: dict | None = None, **labels) -> None:
        """Label ``ax`` (any ``Axes.set`` property) and its legend, write the PNG."""
        if ax is not None:
            ax.set(**labels)
            ax.legend(fontsize=8, **(legend or {}))
        fig.tight_layout()
        fig.savefig(directory / f"{name}.png", dpi=90)
        plt.close(fig)
        written[name] = f"{directory.name}/{name}.png"

    for name, workload in result["workloads"].items():
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for key, label in METHOD_LABELS.items():
            entry = workload["methods"].get(key) or {}
            curve = (entry.get("time_to_target") or {}).get("curve")
            points = curve or ([entry["final"]] if entry.get("final") else [])
            if points and not entry.get("estimated"):  # a few-step probe has no accuracy
                ax.plot([p["seconds"] for p in points], [p["accuracy"] for p in points],
                        "-o" if curve else "s", label=label)  # fmt: skip
        ax.axhline(workload["target_accuracy"], color="grey", linestyle="--", label="target")
        title = f"{name}: {workload['describe']['title']}"
        save(fig, f"{name}_time_to_accuracy", ax, xscale="log", title=title,
             xlabel="wall time of the fit (s, log)", ylabel="held-out accuracy")  # fmt: skip
        if breakdown := workload.get("breakdown", {}):
            fig, ax = plt.subplots(figsize=(6.5, 3.5))
            bars = {f"{key}\n{source}": [1000 * entry[source][p] for p in ROUND_PHASES]
                    for key, entry in breakdown.items()
                    for source in ("measured", "model")}  # fmt: skip
            left = [0.0] * len(bars)
            for i, phase in enumerate(ROUND_PHASES):
                values = [ms[i] for ms in bars.values()]
                ax.barh(list(bars), values, left=left, label=phase)
                left = [x + v for x, v in zip(left, values)]
            below = {"ncol": 5, "loc": "upper center", "bbox_to_anchor": (0.5, -0.25)}
            save(fig, f"{name}_step_breakdown", ax, below, xlabel="ms per step",
                 title=f"{name}: step time breakdown")  # fmt: skip

    rows = [(f"{name} {row['config']}", row["measured"], row["predicted"])
            for name, w in result["workloads"].items() for row in w.get("bytes", [])]  # fmt: skip
    if rows:
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.5))
        positions = list(range(len(rows)))
        ax.barh([p + 0.2 for p in positions], [r[1] for r in rows], height=0.4, label="measured")
        ax.barh([p - 0.2 for p in positions], [r[2] for r in rows], height=0.4, label="formula")
        ax.set_yticks(positions, [r[0] for r in rows], fontsize=8)
        save(fig, "bytes_per_step", ax, xscale="log", xlabel="bytes per step per worker (log)")

    if projection := result.get("projection"):
        shapes = projection["shapes"]
        bandwidths = sorted({r["gbit_per_s"] for r in projection["rows"][next(iter(shapes))]})
        fig, axes = plt.subplots(
            len(shapes), len(bandwidths), figsize=(4 * len(bandwidths), 3.3 * len(shapes)),
            squeeze=False, sharey="row",
        )  # fmt: skip
        for i, key in enumerate(shapes):
            for j, gbit in enumerate(bandwidths):
                ax = axes[i][j]
                for method in METHODS:
                    cells = [r for r in projection["rows"][key]
                             if r["method"] == method and r["gbit_per_s"] == gbit]  # fmt: skip
                    ax.plot([r["workers"] for r in cells], [r["epoch_s"] for r in cells],
                            marker=".", label=method)  # fmt: skip
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_title(f"{shapes[key]['title']}, {gbit:g} Gbit/s", fontsize=9)
                ax.set_xlabel("workers P")
                if j == 0:
                    ax.set_ylabel("projected epoch time (s)")
        axes[0][0].legend(fontsize=8)
        save(fig, "scaling_projection")
    return written
