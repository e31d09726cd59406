"""Leaderboards: group runs, summarise each group over seeds, sort.

A row is one group of runs that differ only by seed: same task, split, data fingerprint
(everything the runs read) and grouping keys (model, variant, pre-training objectives by
default). A section holds the rows of one task, split and benchmark (the questions'
fingerprint): runs on other questions are never averaged together nor ranked against each
other, while runs on the same questions with other visual inputs (detector regions, grid
features, pixels) are, each in its own row.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlbench.errors import ConfigError, DataError
from vlbench.results.questions import QuestionTable, agrees, load_questions, unit_values
from vlbench.results.records import Problem, Run
from vlbench.results.select import (
    Filter,
    apply_filters,
    display_value,
    parse_filters,
    run_value,
)
from vlbench.results.stats import Interval, bootstrap_interval, check_options, t_interval

DEFAULT_GROUP_BY = ("model", "variant", "objectives")
# Always part of a group, whatever --group-by says.
FIXED_KEYS = ("task", "fingerprint")


@dataclass
class Versus:
    """A grid row against the reference row: difference, raw and Holm-adjusted p-values."""

    delta: float | None
    p_value: float | None
    test: str | None  # "paired-t" or "welch-t" over seeds; "mcnemar" or "sign-flip" over questions
    p_holm: float | None = None
    significant: bool = False
    note: str | None = None
    ci_low: float | None = None  # t interval of the difference (paired by seed)
    ci_high: float | None = None


@dataclass
class Row:
    """One group of runs (seeds) on one split, with its metric summaries."""

    task: str
    split: str
    fingerprint: str
    synthetic: bool
    source: str
    group: dict[str, str]  # grouping key -> displayed value
    runs: list[Run]
    metrics: dict[str, Interval]
    params: float | None = None
    train_examples_per_s: float | None = None
    wall_seconds: float | None = None
    kind: str = "runs"  # or "baseline"
    is_reference: bool = False
    versus: Versus | None = None
    benchmark: str = ""  # the questions' fingerprint: the section the row belongs to

    @property
    def model(self) -> str:
        return self.group.get("model") or (self.runs[0].model if self.runs else "")

    @property
    def variant(self) -> str:
        return self.group.get("variant") or (self.runs[0].variant if self.runs else "")

    @property
    def objectives(self) -> list[str]:
        return list(self.runs[0].objectives) if self.runs else []

    @property
    def seeds(self) -> list[Any]:
        return [r.seed for r in self.runs]

    @property
    def n_seeds(self) -> int:
        return len(self.runs)

    def value(self, metric: str) -> float:
        """Mean of ``metric``, NaN when the row lacks it (sorts last)."""
        summary = self.metrics.get(metric)
        return summary.mean if summary is not None else math.nan

    @property
    def label(self) -> str:
        """Short name of the row: its distinct, non-empty grouping values joined by '/'."""
        parts = [v for v in dict.fromkeys(self.group.values()) if v and v != "none"]
        return " / ".join(parts) or self.model


@dataclass
class Section:
    """The rows of one task, split and benchmark, sorted by the headline metric."""

    task: str
    split: str
    fingerprint: str  # the benchmark's (questions') fingerprint
    metric: str
    metric_names: list[str]
    rows: list[Row]

    @property
    def synthetic(self) -> bool:
        return bool(self.rows) and all(r.synthetic for r in self.rows)

    @property
    def source(self) -> str:
        return self.rows[0].source if self.rows else ""

    @property
    def title(self) -> str:
        digest = self.fingerprint.split(":", 1)[-1][:8]
        suffix = " (synthetic data)" if self.synthetic else ""
        return f"{self.task.upper()} {self.split}, data {digest}{suffix}"


@dataclass
class Leaderboard:
    """Sections (task x split x data), plus what was skipped and why."""

    sections: list[Section]
    group_by: list[str]
    confidence: float
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def synthetic(self) -> bool:
        return bool(self.sections) and all(s.synthetic for s in self.sections)

    @property
    def title(self) -> str:
        return "vlbench leaderboard" + (" (synthetic data)" if self.synthetic else "")

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready dict; every row names ``mean``, ``std``, ``ci_low``, ``ci_high``,
        ``n_seeds`` for the headline metric and the same fields per metric."""
        rows = []
        for section in self.sections:
            for rank, row in enumerate(section.rows, start=1):
                rows.append(_row_json(section, row, rank))
        return {
            "title": self.title,
            "synthetic": self.synthetic,
            "confidence": self.confidence,
            "group_by": self.group_by,
            "rows": rows,
            "problems": [{"path": str(p.path), "message": p.message} for p in self.problems],
            "notes": list(self.notes),
        }


def _clean(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def summary_json(s: Interval | None) -> dict[str, Any]:
    """The JSON fields of one metric summary."""
    if s is None:
        return {"mean": None, "std": None, "ci_low": None, "ci_high": None, "n_seeds": 0,
                "ci_method": None}
    return {"mean": _clean(s.mean), "std": _clean(s.std), "ci_low": _clean(s.ci_low),
            "ci_high": _clean(s.ci_high), "n_seeds": s.n, "ci_method": s.method}


def _row_json(section: Section, row: Row, rank: int) -> dict[str, Any]:
    head = summary_json(row.metrics.get(section.metric))
    head["n_seeds"] = row.n_seeds
    versus = None
    if row.versus is not None:
        v = row.versus
        versus = {"delta": _clean(v.delta), "ci_low": _clean(v.ci_low),
                  "ci_high": _clean(v.ci_high), "p_value": _clean(v.p_value),
                  "p_holm": _clean(v.p_holm), "significant": v.significant, "test": v.test,
                  "note": v.note}
    return {
        "task": row.task, "split": row.split, "rank": rank, "kind": row.kind,
        "model": row.model, "variant": row.variant, "objectives": row.objectives,
        "group": row.group, "data_fingerprint": row.fingerprint, "data_source": row.source,
        "synthetic": row.synthetic, "seeds": row.seeds,
        "runs": [{"run_id": r.run_id, "path": str(r.path)} for r in row.runs],
        "params": row.params, "train_examples_per_s": row.train_examples_per_s,
        "wall_seconds": row.wall_seconds, "metric": section.metric, **head,
        "metrics": {name: summary_json(row.metrics.get(name)) for name in section.metric_names},
        "reference": row.is_reference, "vs_reference": versus,
    }


def split_metrics(run: Run, split: str, breakdowns: bool) -> dict[str, float]:
    """Scalar metrics of ``run`` on ``split``; breakdown dicts flattened to ``family.name``."""
    out: dict[str, float] = {}
    for name, value in (run.metrics.get(split) or {}).items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            out[name] = float(value)
        elif breakdowns and isinstance(value, dict):
            for sub, v in value.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    out[f"{name}.{sub}"] = float(v)
    return out


def mean_or_none(values: Sequence[float | None]) -> float | None:
    """Mean of the values that are not None (None when none is)."""
    numbers = [v for v in values if v is not None]
    return float(np.mean(numbers)) if numbers else None


@dataclass
class _Options:
    confidence: float
    n_resamples: int
    seed: int
    breakdowns: bool
    notes: list[str]
    tables: dict[tuple[int, str], QuestionTable | None] = field(default_factory=dict)


def group_questions(row: Row, opts: _Options) -> QuestionTable | None:
    """Per-question table of a row's runs (cached); None when a file is missing or unusable."""
    key = (id(row), row.split)
    if key not in opts.tables:
        try:
            opts.tables[key] = load_questions(row.runs, row.split) if row.runs else None
        except DataError as err:
            opts.notes.append(f"no per-question interval for {row.label} ({err})")
            opts.tables[key] = None
    return opts.tables[key]


def _summarise(row: Row, opts: _Options) -> None:
    per_run = [split_metrics(r, row.split, opts.breakdowns) for r in row.runs]
    names = list(dict.fromkeys(n for m in per_run for n in m))
    for name in names:
        values = [m[name] for m in per_run if name in m]
        summary = t_interval(values, opts.confidence)
        if summary.n == 1:
            summary = _bootstrap_single(row, name, summary, opts)
        row.metrics[name] = summary


def _bootstrap_single(row: Row, name: str, summary: Interval, opts: _Options) -> Interval:
    """A single run's interval: bootstrap over the questions the metric averages.

    Per-question scores that do not average to the run record's value (stale files, or a
    record that predates ``metric_units`` and so does not say which rows count) would give an
    interval around another number: the row then gets no interval, and a note says why.
    """
    if len(row.runs) != 1:
        return summary
    table = group_questions(row, opts)
    units = unit_values(table, name) if table is not None else None
    if units is None:
        return summary
    if not agrees(100.0 * float(units[0].mean()), summary.mean):
        opts.notes.append(f"no per-question interval for {row.label} {name}: its per-question "
                          "scores do not give the run record's value; rescore the run")
        return summary
    _, low, high = bootstrap_interval(
        units[0], confidence=opts.confidence, n_resamples=opts.n_resamples, seed=opts.seed
    )
    return Interval(summary.mean, None, 100.0 * low, 100.0 * high, 1, "bootstrap")


def _headline(rows: Sequence[Row], metric: str | None) -> str:
    if metric is not None and any(metric in r.metrics for r in rows):
        return metric
    primaries = Counter(run.primary_metric for r in rows for run in r.runs)
    return primaries.most_common(1)[0][0] if primaries else "accuracy"


def _baseline_rows(runs: Sequence[Run], split: str, group_by: Sequence[str]) -> list[Row]:
    """One row per answer-prior (or other) baseline stored in the runs, per benchmark (they
    read the questions only)."""
    rows: dict[tuple[str, str], Row] = {}
    for run in runs:
        for name, per_split in (run.record.get("baselines") or {}).items():
            metrics = (per_split or {}).get(split)
            if not isinstance(metrics, dict) or (name, run.benchmark) in rows:
                continue
            group = {k: "" for k in group_by}
            # named in the model column, or in the first column when rows are not by model
            group["model" if "model" in group_by or not group_by else group_by[0]] = f"{name} (baseline)"
            values = {k: float(v) for k, v in metrics.items()
                      if isinstance(v, int | float) and not isinstance(v, bool)}
            rows[(name, run.benchmark)] = Row(
                task=run.task, split=split, fingerprint=run.benchmark, synthetic=run.synthetic,
                source=display_value(run.get("data.source")), group=group, runs=[],
                metrics={k: Interval(v, None, None, None, 1, None) for k, v in values.items()},
                kind="baseline", benchmark=run.benchmark,
            )
    return list(rows.values())


def _splits(run: Run, split: str | None, split_filters: Sequence[Filter]) -> list[str]:
    """The splits of ``run`` a table reports: one named split, all, or the run's default."""
    if split == "all" or (split is None and split_filters):
        splits = list(run.metrics)
    elif split is not None:
        splits = [split] if split in run.metrics else []
    else:
        default = run.default_split()
        splits = [default] if default else []
    return [s for s in splits if all(f.matches_value(s) for f in split_filters)]


def _group(
    runs: Sequence[Run], keys: Sequence[str], split: str | None, split_filters: Sequence[Filter]
) -> list[Row]:
    """Rows of runs sharing task, split, data fingerprint and the values of ``keys``."""
    groups: dict[tuple[str, ...], Row] = {}
    for run in runs:
        for s in _splits(run, split, split_filters):
            shown = {k: display_value(run_value(run, k)) for k in keys if k not in FIXED_KEYS}
            gkey = (run.task, s, run.fingerprint, *shown.values())
            if gkey not in groups:
                groups[gkey] = Row(
                    task=run.task, split=s, fingerprint=run.fingerprint, synthetic=run.synthetic,
                    source=display_value(run.get("data.source")), group=shown, runs=[], metrics={},
                    benchmark=run.benchmark,
                )
            groups[gkey].runs.append(run)
    return list(groups.values())


def build_leaderboard(
    runs: Sequence[Run],
    *,
    task: str | None = None,
    split: str | None = None,
    metric: str | None = None,
    group_by: Sequence[str] | None = None,
    filters: Sequence[str] = (),
    breakdowns: bool = False,
    reference: Sequence[str] = (),
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    baselines: bool = False,
    include_unfinished: bool = False,
    problems: Sequence[Problem] = (),
) -> Leaderboard:
    """Group ``runs`` into rows and sections (see the module docstring).

    ``split`` None reports each run's default split (the last of its ``eval_splits``);
    ``"all"`` reports every evaluated split. ``reference`` (``key=value`` conditions) picks
    the reference row of a grid: every other row on the same data gets a difference, a test
    (Welch's t over seeds, else a paired test over questions) and a Holm-corrected verdict.
    Raises :class:`ConfigError` for a ``confidence`` outside (0, 1) or ``n_resamples`` < 1.
    """
    check_options(confidence, n_resamples)
    keys = list(dict.fromkeys(group_by or DEFAULT_GROUP_BY))
    notes: list[str] = []
    # A breakdown named as the headline (per_answer_type.yes/no) needs the breakdowns.
    breakdowns = breakdowns or (metric is not None and "." in metric)
    opts = _Options(confidence, n_resamples, seed, breakdowns, notes)
    flts = parse_filters(filters)
    selected = apply_filters(runs, flts)
    if task is not None:
        selected = [r for r in selected if r.task.lower() == task.lower()]
    if not include_unfinished:
        for r in selected:
            if r.status != "finished":
                notes.append(f"skipped {r.path}: status is {r.status!r} (not finished)")
        selected = [r for r in selected if r.status == "finished"]
    split_filters = [f for f in flts if f.key == "split"]

    by_section: dict[tuple[str, str, str], list[Row]] = {}
    for row in _group(selected, keys, split, split_filters):
        seeds = [r.seed for r in row.runs]
        if len(set(map(str, seeds))) < len(seeds):
            notes.append(f"{row.label} ({row.task} {row.split}) has several runs with the same "
                         f"seed: {sorted(map(str, seeds))}")
        _summarise(row, opts)
        row.params = mean_or_none([r.params for r in row.runs])
        row.train_examples_per_s = mean_or_none([r.train_examples_per_s for r in row.runs])
        row.wall_seconds = mean_or_none([r.wall_seconds for r in row.runs])
        by_section.setdefault((row.task, row.split, row.benchmark), []).append(row)
    if baselines:
        for (_task, s, _data), rows in by_section.items():
            rows.extend(_baseline_rows([r for row in rows for r in row.runs], s, keys))

    if metric is not None and by_section and not any(
        metric in r.metrics for rows in by_section.values() for r in rows
    ):
        raise ConfigError(f"--metric {metric}: no selected run reports it; pick a metric the "
                          "runs' run.json lists under 'metrics'")
    sections = []
    for (t, s, data), rows in sorted(by_section.items()):
        head = _headline(rows, metric)
        if metric is not None and head != metric:
            notes.append(f"{t} {s}: no run reports {metric!r}; sorted by {head!r}")
        names = [head] + [n for n in dict.fromkeys(n for r in rows for n in r.metrics) if n != head]
        rows.sort(key=lambda r: (math.isnan(r.value(head)), -np.nan_to_num(r.value(head))))
        sections.append(Section(t, s, data, head, names, rows))
        named = Counter(r.label for r in rows if r.kind == "runs")
        for label in (label for label, n in named.items() if n > 1):
            notes.append(f"{t} {s}: {named[label]} rows named {label!r} read different inputs "
                         "(region features, grid features or images); group by inputs too "
                         "(--group-by model,inputs) to tell them apart")
    board = Leaderboard(sections, keys, confidence, list(problems), notes)
    if reference:
        from vlbench.results.grid import mark_reference

        mark_reference(
            board, parse_filters(reference, "--reference"), alpha,
            questions=lambda row: group_questions(row, opts), n_resamples=n_resamples, seed=seed,
        )
    return board
