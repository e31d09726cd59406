"""Plots of results (optional extra ``plots``: matplotlib >= 3.7).

Figures are built with matplotlib's object API on the Agg canvas, never through pyplot's
global state, so they work headless and leave no open windows behind.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlbench.errors import ConfigError, DataError, VLBenchError
from vlbench.results.leaderboard import Row, Section
from vlbench.results.records import Run, read_history

X_AXES = {"params": "Parameters", "time": "Training wall time (s)"}
# Bars: the reference row, other rows, rows whose difference survives Holm's correction.
REFERENCE_COLOR, BAR_COLOR, SIGNIFICANT_COLOR = "#8c8c8c", "#4c72b0", "#c44e52"


def new_figure(width: float = 7.0, height: float = 4.0) -> Any:
    """An empty matplotlib Figure on the Agg canvas; a clear error if matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise VLBenchError(
            "plots need matplotlib, which is not installed; run: pip install 'vlbench[plots]'"
        ) from None
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _savefig(fig: Any, target: Any, kind: str, dpi: int) -> None:
    """``fig.savefig`` so that the same figure gives the same bytes: an SVG's element ids come
    from a fixed salt and it carries no date (PNGs carry none either)."""
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": "vlbench"}):
        fig.savefig(target, format=kind, dpi=dpi, metadata={"Date": None} if kind == "svg" else None)


def save_figure(fig: Any, out: str | Path) -> Path:
    """Write ``fig`` as PNG or SVG, chosen by the suffix of ``out``."""
    path = Path(out)
    kind = path.suffix.lower().lstrip(".")
    if kind not in ("png", "svg"):
        raise ConfigError(f"--out {path}: plots are written as .png or .svg")
    path.parent.mkdir(parents=True, exist_ok=True)
    _savefig(fig, path, kind, 150)
    return path


def figure_bytes(fig: Any, kind: str = "svg") -> bytes:
    """The figure encoded as ``svg`` or ``png`` bytes (for embedding in a page)."""
    buf = io.BytesIO()
    _savefig(fig, buf, kind, 110)
    return buf.getvalue()


def pareto_front(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats: lower or equal x with higher y, or equal y
    with lower x. Returned by increasing x (ties: best y first)."""
    order = sorted(range(len(xs)), key=lambda i: (xs[i], -ys[i]))
    front: list[int] = []
    best = -math.inf
    for i in order:
        if ys[i] > best:
            front.append(i)
            best = ys[i]
    return front


def learning_curves(runs: Sequence[Run], metric: str | None = None) -> Any:
    """Training loss and evaluation metric against step, one colour per run."""
    fig = new_figure(10.0, 4.0)
    ax_loss, ax_metric = fig.subplots(1, 2)
    for n, run in enumerate(runs):
        color = f"C{n % 10}"
        try:
            history = read_history(run.path)
        except DataError as err:
            raise DataError(f"{err}; learning curves need the run's history.jsonl") from None
        logs = [h for h in history if "loss" in h and "split" not in h]
        evals = [h for h in history if "split" in h and isinstance(h.get("metrics"), dict)]
        name = metric or run.primary_metric
        if logs:
            ax_loss.plot([h["step"] for h in logs], [h["loss"] for h in logs], color=color,
                         label=run.run_id)
            parts = list(dict.fromkeys(k for h in logs for k in (h.get("losses") or {})))
            if len(parts) > 1:
                for style, part in zip(("--", ":", "-."), parts, strict=False):
                    pts = [(h["step"], h["losses"][part]) for h in logs
                           if part in (h.get("losses") or {})]
                    ax_loss.plot(*zip(*pts, strict=True), style, color=color, alpha=0.6,
                                 linewidth=1, label=f"{run.run_id}: {part}")
        for style, split in zip(("-o", "--s", ":^"), dict.fromkeys(h["split"] for h in evals),
                                strict=False):
            pts = [(h["step"], h["metrics"][name]) for h in evals
                   if h["split"] == split and isinstance(h["metrics"].get(name), int | float)]
            if pts:
                ax_metric.plot(*zip(*pts, strict=True), style, color=color, markersize=4,
                               label=f"{run.run_id} {split}")
    ax_loss.set(xlabel="step", ylabel="training loss", title="Loss")
    ax_metric.set(xlabel="step", ylabel=f"{metric or runs[0].primary_metric} (%)",
                  title="Evaluation")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return fig


def _error(row: Row, metric: str) -> tuple[float, float]:
    """Lower and upper error bar lengths: the confidence interval, else the std, else 0."""
    s = row.metrics.get(metric)
    if s is None:
        return 0.0, 0.0
    if s.ci_low is not None and s.ci_high is not None:
        return max(0.0, s.mean - s.ci_low), max(0.0, s.ci_high - s.mean)
    return (s.std, s.std) if s.std is not None else (0.0, 0.0)


def grid_bars(section: Section) -> Any:
    """Bar chart of a section's headline metric with interval error bars.

    The reference row is grey; rows whose difference survives Holm's correction are red and
    starred.
    """
    rows = [r for r in section.rows if not math.isnan(r.value(section.metric))]
    if not rows:
        raise DataError(f"{section.title}: no row reports {section.metric!r}; nothing to plot")
    fig = new_figure(max(5.0, 0.8 * len(rows) + 2.0), 4.2)
    ax = fig.subplots()
    means = [r.value(section.metric) for r in rows]
    errors = [_error(r, section.metric) for r in rows]
    colors = [REFERENCE_COLOR if r.is_reference else
              SIGNIFICANT_COLOR if r.versus is not None and r.versus.significant else BAR_COLOR
              for r in rows]
    xs = range(len(rows))
    ax.bar(xs, means, color=colors, yerr=list(zip(*errors, strict=True)), capsize=4)
    for x, row, mean, (_, up) in zip(xs, rows, means, errors, strict=True):
        if row.versus is not None and row.versus.significant:
            ax.annotate("*", (x, mean + up), ha="center", va="bottom", fontsize=14)
    ax.set_xticks(list(xs), [r.label for r in rows], rotation=30, ha="right", fontsize=8)
    low = min(m - e[0] for m, e in zip(means, errors, strict=True))
    ax.set_ylim(bottom=max(0.0, low - 0.1 * (max(means) - low + 1.0)))
    ax.set(ylabel=f"{section.metric} (%)", title=section.title)
    ax.grid(axis="y", alpha=0.3)
    return fig


def sweep_curve(section: Section) -> Any:
    """The headline metric against a numeric setting (the rows' one grouping key, e.g.
    ``config.model.x_layers``), with interval error bars; the reference point is grey and
    points whose difference survives Holm's correction are starred."""
    rows = [r for r in section.rows if r.kind == "runs" and not math.isnan(r.value(section.metric))]
    keys = {k for r in rows for k in r.group}
    if len(keys) != 1:
        raise ConfigError(f"a sweep plots one setting: group the runs by exactly one key "
                          f"(--group-by config.model.x_layers), not {', '.join(sorted(keys)) or 'none'}")
    key = keys.pop()
    try:
        points = sorted((float(r.group[key]), r) for r in rows)
    except ValueError:
        raise ConfigError(f"--group-by {key}: a sweep needs numeric values, got "
                          f"{', '.join(sorted({r.group[key] for r in rows}))}") from None
    xs = [x for x, _ in points]
    means = [r.value(section.metric) for _, r in points]
    errors = [_error(r, section.metric) for _, r in points]
    fig = new_figure(6.0, 4.0)
    ax = fig.subplots()
    ax.errorbar(xs, means, yerr=list(zip(*errors, strict=True)), fmt="-o", color=BAR_COLOR,
                capsize=4)
    for x, (_, row), mean, (_, up) in zip(xs, points, means, errors, strict=True):
        if row.is_reference:
            ax.plot([x], [mean], "o", color=REFERENCE_COLOR, markersize=9, zorder=3)
        elif row.versus is not None and row.versus.significant:
            ax.annotate("*", (x, mean + up), ha="center", va="bottom", fontsize=14)
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.set(xlabel=key.rsplit(".", 1)[-1], ylabel=f"{section.metric} (%)", title=section.title)
    ax.grid(alpha=0.3)
    return fig


def accuracy_vs_compute(section: Section, x: str = "params") -> Any:
    """Headline metric against parameters or training time, with the Pareto front."""
    if x not in X_AXES:
        raise ConfigError(f"--x {x}: use one of {', '.join(X_AXES)}")
    attr = "params" if x == "params" else "wall_seconds"
    rows = [r for r in section.rows
            if getattr(r, attr) is not None and not math.isnan(r.value(section.metric))]
    if not rows:
        raise DataError(f"{section.title}: no run records {attr!r}; nothing to plot")
    xs = [float(getattr(r, attr)) for r in rows]
    ys = [r.value(section.metric) for r in rows]
    fig = new_figure(6.5, 4.2)
    ax = fig.subplots()
    errors = [_error(r, section.metric) for r in rows]
    ax.errorbar(xs, ys, yerr=list(zip(*errors, strict=True)), fmt="o", color=BAR_COLOR,
                ecolor="#9db4d6", capsize=3, label="runs")
    front = pareto_front(xs, ys)
    ax.step([xs[i] for i in front], [ys[i] for i in front], where="post", color=SIGNIFICANT_COLOR,
            label="Pareto front")
    for xv, yv, row in zip(xs, ys, rows, strict=True):
        ax.annotate(row.label, (xv, yv), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if min(xs) > 0 and max(xs) / min(xs) > 10:
        ax.set_xscale("log")
    ax.set(xlabel=X_AXES[x], ylabel=f"{section.metric} (%)", title=section.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
