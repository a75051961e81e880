"""A benchmark result's tables, as markdown on stdout: what a person reads to quote a figure.

Nothing here measures anything or writes a file; :func:`tables` gives every table of one
result JSON (``python -m benchmarks show benchmarks/results/NAME.json``).
"""

from __future__ import annotations

import math

from benchmarks.workloads import power_of_two

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


def machine_line(result: dict) -> str:
    """One paragraph: where and how the run was measured (the result's ``machine`` has more)."""
    m = result["machine"]
    spark, jvm = m.get("spark", {}), m.get("spark", {}).get("jvm_blas", {})
    blas = ", ".join(f"{b.get('internal_api')} {b.get('version') or ''}".strip()
                     for b in m.get("numpy_blas", []))  # fmt: skip
    return (
        f"Run `{result['name']}` ({result['mode']}), {result.get('started', '')}, "
        f"{_fmt(result.get('duration_s'), 0)} s in all. {m.get('cpu')}, {m.get('cores')} cores; "
        f"Spark {spark.get('spark')} on `{spark.get('master')}`; numpy BLAS: {blas or 'unknown'}; "
        f"MLlib's JVM BLAS: `{jvm.get('blas')}`; executor BLAS warnings: "
        f"{m.get('executor_blas_failures')}. Load average (1/5/15 min) at start "
        f"{m.get('load_start')}, at end {m.get('load_end')}."
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
    """Milliseconds per step and phase of the loop, as measured."""
    # Results written before benchmarks/costmodel.py went kept the measured figures apart.
    breakdown = {k: v.get("measured", v) for k, v in workload.get("breakdown", {}).items()}
    phases = list(next(iter(breakdown.values()), {}))
    rows = [[METHOD_LABELS.get(key, key), *[_ms(seconds[p]) for p in phases],
             _ms(sum(seconds.values()))] for key, seconds in breakdown.items()]  # fmt: skip
    return markdown_table(["ms per step", *phases, "total"], rows)


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
            rows.append([f"sparse {part}: feature-major vs class-major W", what,
                         _ms(t["feature_major"]), _ms(t["class_major"]),
                         f"{t['speedup']:.2f}x"])  # fmt: skip
    rows += [
        ["replica check: one block vs the whole replica",
         f"K={r['num_classes']}, D={power_of_two(r['num_features'])}, {r['blocks']} blocks",
         _ms(r["one_check_s"]), _ms(r["whole_s"]), f"{r['ratio']:.2f}x"]
        for r in claims.get("digest", [])
    ]  # fmt: skip
    header = "claim | shape (float32, one thread) | library ms | alternative ms | speedup"
    return markdown_table(header, rows, "llrrr")


def latency_table(result: dict) -> str:
    """What a step must stay clear of: the exchange, a Spark job, a barrier allGather."""
    micro = result.get("micro", {})
    rows = [
        ["Flight p2p exchange, tiny payload", _fmt(micro.get("p2p_tiny_ms"), 3)],
        ["Flight p2p exchange, 4 MB payload", _fmt(micro.get("p2p_large_ms"), 2)],
        ["BarrierTaskContext.allGather, tiny", _fmt(micro.get("all_gather_ms"), 0)],
        ["trivial Spark job", _fmt(micro.get("spark_job_ms"), 0)],
    ]
    return markdown_table("mechanism (P=2) | ms per call", rows)


def tables(result: dict) -> str:
    """Every table of ``result``, headed, in markdown."""
    blocks = [machine_line(result), "## Summary", summary_table(result)]
    for name, workload in result["workloads"].items():
        d = workload["describe"]
        nonzeros = d.get("nonzeros_per_row")
        sparse = f", CSR with {nonzeros:.1f} non-zeros per row" if nonzeros else ""
        source = workload.get("target_source", "MLlib's final minus 0.005")
        blocks += [
            f"## {name}: {d['title']}",
            f"{d['train_rows']:,} train / {d['test_rows']:,} test rows{sparse}; target accuracy "
            f"{workload['target_accuracy']:.4f} ({source}).",
            methods_table(workload), "Bytes per step per worker:", bytes_table(workload),
            "Step time breakdown:", breakdown_table(workload),
        ]  # fmt: skip
    if result.get("claims"):
        blocks += ["## Speed claims", claims_table(result)]
    blocks += ["## Exchange latency", latency_table(result)]
    return "\n\n".join(blocks)
