"""report.png: one row per artifact, three aligned panels (accuracy delta with its bounds, size, latency).

Rows instead of a scatter: artifacts of similar size and latency (fp32 and onnx-fp32, the int8 family) would
otherwise sit on top of each other, and a row label can never collide with a point.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

COLOURS = {"pass": "#2e7d32", "FAIL": "#c62828", "inconclusive": "#ef8f00", "not run": "#9e9e9e"}
LEGEND = {"pass": "gate passed", "FAIL": "gate failed (worse with confidence)",
          "inconclusive": "inconclusive (split too small to decide)", "not run": "not run"}


def _delta_panel(ax, rows, ys, metric, keras) -> None:
    """Accuracy delta in pp with its bounds and the recipe's allowed drop; MSE ratio for autoencoders."""
    if metric == "accuracy":
        for y, r in zip(ys, rows):
            d = r["accuracy_delta_pp"]
            if d is None:
                continue
            lo, hi = r.get("accuracy_delta_low_pp"), r.get("accuracy_delta_high_pp")
            if lo is not None:
                ax.plot([lo, hi], [y, y], color=COLOURS[r["gate"]], lw=2.5, alpha=0.45, solid_capstyle="butt")
            ax.plot(d, y, "o", color=COLOURS[r["gate"]], ms=7)
            if r.get("max_drop_pp") is not None:
                ax.plot(-r["max_drop_pp"], y, "|", color="black", ms=14, mew=1.5)
        ax.axvline(0, color="grey", lw=1)
        ax.set_xlabel("accuracy - Keras (pp), bar: 95% bounds, |: allowed drop")
    else:
        for y, r in zip(ys, rows):
            if r["accuracy"] is not None and keras:
                ax.plot(r["accuracy"] / keras, y, "o", color=COLOURS[r["gate"]], ms=7)
        ax.axvline(1, color="grey", lw=1)
        ax.set_xlabel(f"{metric} / Keras (lower is better)")
    ax.grid(axis="x", alpha=0.3)


def _bar_panel(ax, rows, ys, values, xlabel, fmt, inner=None) -> None:
    """Horizontal bars with their values; ``inner`` (e.g. gzip size) drawn darker inside each bar."""
    vmax = max([v for v in values if v is not None] or [1])
    for i, (y, r, v) in enumerate(zip(ys, rows, values)):
        if v is None:
            ax.text(0, y, " not measured", va="center", fontsize=8, color="grey")
            continue
        ax.barh(y, v, color=COLOURS[r["gate"]], alpha=0.45 if inner is not None else 0.8, height=0.6)
        label = format(v, fmt)
        if inner is not None:
            ax.barh(y, inner[i], color=COLOURS[r["gate"]], alpha=0.9, height=0.6)
            label += f" ({format(inner[i], fmt)})"
        ax.text(v + vmax * 0.02, y, label, va="center", fontsize=8)
    ax.set_xlim(0, vmax * 1.45)  # room for the value labels, never clipped
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)


def plot_report(rep: Dict[str, Any], path: Path) -> None:
    """Write the report figure for ``rep`` (the dict of :func:`edgeport.check.report.build_report`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rows = rep["artifacts"]
    metric = rep["keras"]["metric"]
    ys = list(range(len(rows)))[::-1]  # first artifact on top
    fig, axes = plt.subplots(1, 3, figsize=(12, 1.2 + 0.42 * len(rows)), sharey=True,
                             gridspec_kw={"width_ratios": [1.4, 1, 1]})
    _delta_panel(axes[0], rows, ys, metric, rep["keras"].get(metric))
    _bar_panel(axes[1], rows, ys, [r["bytes"] / 1024 for r in rows], "size KiB (dark, in brackets: gzipped)", ".0f",
               inner=[r["gzip_bytes"] / 1024 for r in rows])
    lat = [r["latency_ms_p50"] * 1000 if r["latency_ms_p50"] is not None else None for r in rows]
    _bar_panel(axes[2], rows, ys, lat, "p50 latency (\u00b5s), batch 1, 1 thread", ".0f")
    axes[0].set_yticks(ys)
    axes[0].set_yticklabels([r["name"] for r in rows], fontsize=9)
    k = rep["keras"]
    kval = f"{k[metric]:.4f}" if metric == "accuracy" else f"{k[metric]:.4g}"
    fig.suptitle(f"{rep.get('model', '?')} on {rep.get('dataset', '?')}: n = {rep['test_samples']} held-out samples, "
                 f"Keras {metric} {kval}", fontsize=11)
    # always the three outcomes, so a reader knows what a colour would mean; "not run" only when it occurs
    present = [g for g in LEGEND if g != "not run" or any(r["gate"] == g for r in rows)]
    handles = [Line2D([], [], marker="o", ls="", color=COLOURS[g], label=LEGEND[g]) for g in present]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08 if len(rows) > 4 else 0.14, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)
