"""The benchmark's PNGs, drawn from one result JSON (nothing here measures anything)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.costmodel import METHODS
from benchmarks.report import METHOD_LABELS
from svb_spark.core.training import ROUND_PHASES


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
                ax.set(yscale="log", xlabel="workers P")
                ax.set_title(f"{shapes[key]['title']}, {gbit:g} Gbit/s", fontsize=9)
                if j == 0:
                    ax.set_ylabel("projected epoch time (s)")
        axes[0][0].legend(fontsize=8)
        save(fig, "scaling_projection")
    return written
