"""Grids (e.g. ablations): every row against a reference row, Holm-corrected.

Each row on the same data as the reference gets the difference of the headline metric, a
p-value and a verdict that survives Holm's correction for the number of rows compared. The
test: a paired t over seeds when both rows ran the same two or more seeds (a controlled
comparison: each seed fixes the data order of both; the difference also gets its t
interval), Welch's t over seeds when both have two or more seeds otherwise, else a paired
test over the questions the metric counts (exact McNemar on right/wrong scores, a sign-flip
permutation test on soft ones).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from scipy.stats import ttest_1samp

from vlbench.errors import ConfigError, DataError
from vlbench.results.leaderboard import Leaderboard, Row, Versus, split_metrics
from vlbench.results.questions import QuestionTable, agrees, paired_units
from vlbench.results.select import Filter
from vlbench.results.stats import holm, paired_test, t_interval, welch_t_test

QuestionSource = Callable[[Row], QuestionTable | None]


def _seed_values(row: Row, metric: str) -> list[float]:
    values = (split_metrics(run, row.split, breakdowns=True).get(metric) for run in row.runs)
    return [v for v in values if v is not None]


def _by_seed(row: Row, metric: str) -> dict[Any, float]:
    """``{seed: value}`` of the row's runs (empty when a seed repeats or is unknown)."""
    out: dict[Any, float] = {}
    for run in row.runs:
        value = split_metrics(run, row.split, breakdowns=True).get(metric)
        if run.seed is None or run.seed in out:
            return {}
        if value is not None:
            out[run.seed] = value
    return out


def _paired_by_seed(ref: Row, row: Row, metric: str) -> Versus | None:
    """Paired t over the seeds both rows ran (None unless they ran the same two or more)."""
    a, b = _by_seed(ref, metric), _by_seed(row, metric)
    if len(a) < 2 or set(a) != set(b):
        return None
    diffs = [b[s] - a[s] for s in sorted(a)]
    d = t_interval(diffs)
    if d.std is None or d.std == 0:
        return Versus(d.mean, None, None, note="the same difference on every seed")
    p = float(ttest_1samp(diffs, 0.0).pvalue)
    return Versus(d.mean, p, "paired-t", ci_low=d.ci_low, ci_high=d.ci_high)


def compare_rows(
    ref: Row, row: Row, metric: str, questions: QuestionSource, *, n_resamples: int = 10_000,
    seed: int = 0,
) -> Versus:
    """Difference ``row - ref`` on ``metric`` and the p-value of the fitting test.

    ``n_resamples`` and ``seed`` drive the sign-flip test on soft per-question scores.
    """
    delta = row.value(metric) - ref.value(metric)
    delta_or_none = None if math.isnan(delta) else delta
    paired = _paired_by_seed(ref, row, metric)
    if paired is not None:
        return paired
    a, b = _seed_values(ref, metric), _seed_values(row, metric)
    if len(a) >= 2 and len(b) >= 2:
        _, _, p = welch_t_test(b, a)
        if math.isnan(p):
            return Versus(delta_or_none, None, None, note="no spread over seeds on either side")
        return Versus(delta_or_none, p, "welch-t")
    qa, qb = questions(ref), questions(row)
    if qa is None or qb is None:
        return Versus(delta_or_none, None, None, note="one seed and no per-question results")
    try:
        units = paired_units(qa, qb, metric)
    except DataError as err:
        return Versus(delta_or_none, None, None, note=str(err))
    if units is None:
        return Versus(delta_or_none, None, None, note=f"{metric} is not a mean over questions")
    ua, ub = units
    if not (agrees(100.0 * float(ua.mean()), ref.value(metric))
            and agrees(100.0 * float(ub.mean()), row.value(metric))):
        return Versus(delta_or_none, None, None,
                      note=f"per-question scores do not give the run records' {metric}")
    p, test = paired_test(ua, ub, n_resamples=n_resamples, seed=seed)
    return Versus(delta_or_none, p, test)


def mark_reference(
    board: Leaderboard, reference: Sequence[Filter], alpha: float, questions: QuestionSource,
    *, n_resamples: int = 10_000, seed: int = 0,
) -> None:
    """Mark the reference row of each section and fill ``versus`` of the others (in place).

    A section holds one task, split and benchmark (questions' fingerprint), so every
    comparison is on the same questions; the Holm family is the section's compared rows.
    """
    for section in board.sections:
        rows = [r for r in section.rows if r.kind == "runs" and r.runs]
        refs = [r for r in rows if all(f.matches(r.runs[0]) for f in reference)]
        wanted = " ".join(map(str, reference))
        if not refs:
            board.notes.append(f"{section.title}: no row matches the reference {wanted}")
            continue
        if len(refs) > 1:
            raise ConfigError(
                f"--reference {wanted} matches {len(refs)} rows of {section.title} "
                f"({'; '.join(r.label for r in refs)}); add conditions until it names one row"
            )
        ref = refs[0]
        ref.is_reference = True
        family = [r for r in rows if r is not ref]
        for row in family:
            row.versus = compare_rows(ref, row, section.metric, questions,
                                      n_resamples=n_resamples, seed=seed)
        p_values = [math.nan if r.versus.p_value is None else r.versus.p_value for r in family]
        adjusted, rejected = holm(p_values, alpha)
        for row, p_adj, reject in zip(family, adjusted, rejected, strict=True):
            row.versus.p_holm = None if math.isnan(p_adj) else p_adj
            row.versus.significant = reject
