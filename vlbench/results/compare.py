"""Compare two runs (or two groups of seeds) question by question.

Differences are B - A. Metrics that are means over units (questions, or groups of them, as
the run records' ``metric_units`` say; see ``results.questions``) get a paired bootstrap
interval over exactly the units the official metric counts and a paired test: exact McNemar
on right/wrong units, a sign-flip permutation test on soft scores (or means over seeds).
Such a metric is paired only when its per-question scores rebuild the run records' values,
so that delta = B - A; other metrics get the plain difference of the run records. Runs on
different tasks, splits or data are refused: their numbers are not comparable.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vlbench.errors import DataError
from vlbench.results.leaderboard import split_metrics
from vlbench.results.questions import (
    CORRECT_THRESHOLD,
    QuestionTable,
    agrees,
    align,
    breakdown_name,
    category_labels,
    compared_kinds,
    counted,
    describing,
    discordant,
    load_questions,
    paired_units,
)
from vlbench.results.records import Run, find_runs
from vlbench.results.select import display_value
from vlbench.results.stats import bootstrap_interval, check_options, holm, paired_test

# Names of the paired tests in notes.
TEST_NAMES = {"mcnemar": "exact McNemar test", "sign-flip": "paired sign-flip permutation test"}


@dataclass
class Side:
    """One side of a comparison: a run, or the seeds of one group."""

    label: str
    runs: list[Run]

    @property
    def first(self) -> Run:
        return self.runs[0]

    def to_json(self) -> dict[str, Any]:
        r = self.first
        return {"label": self.label, "model": r.model, "variant": r.variant,
                "objectives": list(r.objectives), "n_seeds": len(self.runs),
                "seeds": [x.seed for x in self.runs],
                "runs": [{"run_id": x.run_id, "path": str(x.path)} for x in self.runs]}


@dataclass
class Difference:
    """B - A on one metric or category, with its interval and test (None when not defined)."""

    name: str
    a: float | None
    b: float | None
    delta: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    n: int | None = None  # units (questions or groups) behind the interval
    source: str = "per_question"  # or "run.json" when only the records' values are known
    kind: str | None = None  # category family (answer_type, structural, ...) for categories
    p_holm: float | None = None
    test: str | None = None  # "mcnemar" or "sign-flip" (see stats.paired_test), None if none


@dataclass
class Flip:
    """A question right under one side and wrong under the other."""

    id: str
    question: str
    answer: str | list[str]
    a_prediction: str
    b_prediction: str
    a_score: float
    b_score: float
    change: str  # "fixed" (B right, A wrong) or "broken"


@dataclass
class Comparison:
    """Everything ``vlbench compare`` reports."""

    a: Side
    b: Side
    task: str
    split: str
    fingerprint: str
    synthetic: bool
    metric: str
    confidence: float
    n_resamples: int
    n_questions: int  # questions the official metrics count (rows not marked uncounted)
    metrics: list[Difference]
    categories: list[Difference]
    table: dict[str, int]  # McNemar counts on the headline metric
    flips: list[Flip]
    notes: list[str] = field(default_factory=list)

    @property
    def headline(self) -> Difference:
        return next(d for d in self.metrics if d.name == self.metric)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict; the headline's ``delta``, ``ci_low``, ``ci_high``, ``p_value`` and
        ``test`` sit at the top level as well as in ``metrics``."""
        head = self.headline
        return {
            "a": self.a.to_json(), "b": self.b.to_json(), "task": self.task, "split": self.split,
            "data_fingerprint": self.fingerprint, "synthetic": self.synthetic,
            "metric": self.metric, "delta": head.delta, "ci_low": head.ci_low,
            "ci_high": head.ci_high, "p_value": head.p_value, "test": head.test,
            "confidence": self.confidence, "n_resamples": self.n_resamples,
            "n_questions": self.n_questions,
            "metrics": [_diff_json(d) for d in self.metrics],
            "categories": [_diff_json(d) for d in self.categories],
            "mcnemar": dict(self.table), "flips": [asdict(f) for f in self.flips],
            "notes": list(self.notes),
        }


def _diff_json(d: Difference) -> dict[str, Any]:
    out = asdict(d)
    out["metric" if d.kind is None else "category"] = out.pop("name")
    return out


def load_side(path: str | os.PathLike[str], label: str) -> Side:
    """The runs under ``path``; they must be seeds of one group (same task, data, model)."""
    runs, problems = find_runs([path])
    if not runs:
        detail = f" ({problems[0]})" if problems else ""
        raise DataError(f"{path}: no readable run to compare{detail}")
    keys = {(r.task, r.fingerprint, r.model, r.variant, r.objectives) for r in runs}
    if len(keys) > 1:
        raise DataError(
            f"{path}: holds runs of {len(keys)} different groups (task, data, model, variant, "
            f"objectives); point {label} at one run or at one group's folder"
        )
    return Side(label, runs)


def _split(a: Side, b: Side, split: str | None) -> str:
    if split is None:
        sa, sb = a.first.default_split(), b.first.default_split()
        if sa != sb:
            raise DataError(
                f"cannot compare: {a.label} reports split {sa!r} and {b.label} split {sb!r}; "
                "pass --split with a split both were evaluated on"
            )
        split = sa
    for side in (a, b):
        for run in side.runs:
            if split not in run.metrics:
                raise DataError(
                    f"cannot compare: {run.path / 'run.json'} has no results on split {split!r} "
                    f"(it has {', '.join(run.metrics) or 'none'})"
                )
    return str(split)


def check_comparable(a: Side, b: Side) -> None:
    """Refuse sides on different tasks or questions (one-line DataError saying which)."""
    if a.first.task != b.first.task:
        raise DataError(f"cannot compare: {a.label} is {a.first.task}, {b.label} is "
                        f"{b.first.task}; compare runs of one task")
    if a.first.benchmark != b.first.benchmark:  # other visual inputs on the same questions compare
        raise DataError(
            f"cannot compare: {a.label} ran on questions {a.first.benchmark} "
            f"({display_value(a.first.get('data.source'))}) and {b.label} on "
            f"{b.first.benchmark} ({display_value(b.first.get('data.source'))}); "
            "results on different questions are not comparable"
        )


def _mean_record_value(side: Side, split: str, name: str) -> float | None:
    values = [split_metrics(r, split, breakdowns=True).get(name) for r in side.runs]
    numbers = [v for v in values if v is not None]
    return float(np.mean(numbers)) if numbers else None


def _paired(name: str, ua: np.ndarray, ub: np.ndarray, opts: dict[str, Any]) -> Difference:
    """Paired bootstrap interval and paired test of B - A over aligned units (in percent)."""
    delta, low, high = bootstrap_interval(ub - ua, **opts)
    p, test = paired_test(ua, ub, n_resamples=opts["n_resamples"], seed=opts["seed"])
    return Difference(name, 100.0 * float(ua.mean()), 100.0 * float(ub.mean()), 100.0 * delta,
                      100.0 * low, 100.0 * high, p, int(ua.size), test=test)


def _disagreement(qa: QuestionTable, qb: QuestionTable, name: str, d: Difference,
                  ra: float | None, rb: float | None) -> str | None:
    """Why the per-question scores are not the records' ``name`` (None when they are)."""
    if ra is None or rb is None or (agrees(d.a, ra) and agrees(d.b, rb)):
        return None
    # Such records say nothing of which rows their metrics count: all rows are assumed.
    why = (" (the run records predate metric_units, so every per-question row was counted)"
           if qa.metric_units is None and qb.metric_units is None else "")
    return (f"{name}: per-question scores give A {d.a:.2f}, B {d.b:.2f}, the run records "
            f"{ra:.2f}, {rb:.2f}{why}; no interval or test. Rescore the runs "
            "(vlbench leaderboard --rescore RUN ...) to rewrite their per-question files")


def _metric(name: str, a: Side, b: Side, split: str, qa: QuestionTable, qb: QuestionTable,
            opts: dict[str, Any], notes: list[str]) -> Difference:
    """B - A on one metric: paired over units when they rebuild the records, else records.

    Paired or not, a metric the records report shows their values and delta = B - A (the
    per-question means may differ from them by rounding).
    """
    ra, rb = _mean_record_value(a, split, name), _mean_record_value(b, split, name)
    units = paired_units(qa, qb, name)
    if units is not None:
        d = _paired(name, *units, opts)
        problem = _disagreement(qa, qb, name, d, ra, rb)
        if problem is None:
            if ra is not None and rb is not None:
                d.a, d.b, d.delta = ra, rb, rb - ra
            return d
        notes.append(problem)
    delta = None if ra is None or rb is None else rb - ra
    return Difference(name, ra, rb, delta, source="run.json")


def _categories(a: Side, b: Side, split: str, qa: QuestionTable, qb: QuestionTable,
                opts: dict[str, Any], notes: list[str]) -> list[Difference]:
    """Per-category differences (the breakdowns), Holm-corrected within each family.

    A category whose per-question scores do not rebuild the records' breakdown is left out
    (with a note): its interval and test would be about other questions.
    """
    out: list[Difference] = []
    described = describing(qa, qb)
    for kind in compared_kinds(described):
        family = []
        for category in category_labels(described, kind):
            name = breakdown_name(kind, category)
            d = _metric(name, a, b, split, qa, qb, opts, notes)
            if d.source == "per_question":
                d.name, d.kind = category, kind
                family.append(d)
        adjusted, _ = holm([d.p_value for d in family])
        for d, p in zip(family, adjusted, strict=True):
            d.p_holm = p
        out.extend(family)
    return out


def _flips(qa: QuestionTable, qb: QuestionTable) -> list[Flip]:
    """Counted questions right under one side and wrong under the other."""
    sa, sb = qa.scores.mean(axis=0), qb.scores.mean(axis=0)
    kept = counted(describing(qa, qb))
    flipped = ((sa > CORRECT_THRESHOLD) != (sb > CORRECT_THRESHOLD)) & kept
    flips = []
    for i in np.flatnonzero(flipped):
        flips.append(Flip(
            id=qa.ids[i], question=str(qa.rows[i].get("question", "")), answer=qa.gold(i),
            a_prediction=qa.prediction(i), b_prediction=qb.prediction(i),
            a_score=float(sa[i]), b_score=float(sb[i]),
            change="fixed" if sb[i] > CORRECT_THRESHOLD else "broken",
        ))
    return flips


def _test_note(diffs: list[Difference], n_resamples: int) -> str | None:
    """Which test gave the p-values, when it is not McNemar for all of them."""
    soft = [d.name if d.kind is None else f"{d.kind} {d.name}" for d in diffs
            if d.test == "sign-flip"]
    if not soft:
        return None
    others = (f"; the other p-values: {TEST_NAMES['mcnemar']}"
              if any(d.test == "mcnemar" for d in diffs) else "")
    return (f"p-values of {', '.join(soft)}: {TEST_NAMES['sign-flip']} on the per-question "
            f"scores ({n_resamples} resamples), as they are not right/wrong{others}")


def compare_sides(
    a: Side,
    b: Side,
    *,
    split: str | None = None,
    metric: str | None = None,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> Comparison:
    """Compare ``b`` against ``a`` on ``split`` (default: the split both report).

    Raises :class:`ConfigError` for an interval level outside (0, 1) or fewer than one
    resample, and :class:`DataError` for runs that cannot be compared.
    """
    check_options(confidence, n_resamples)
    check_comparable(a, b)
    split = _split(a, b, split)
    qa = load_questions(a.runs, split)
    qb = align(qa, load_questions(b.runs, split))
    opts = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}
    notes: list[str] = []
    head = metric or a.first.primary_metric
    names = [head] + [n for n in dict.fromkeys(
        n for side in (a, b) for r in side.runs for n in split_metrics(r, split, False)
    ) if n != head]
    diffs = [_metric(name, a, b, split, qa, qb, opts, notes) for name in names]
    if diffs[0].delta is None:
        raise DataError(f"cannot compare on {head!r}: the runs do not report it on {split!r}")
    cats = _categories(a, b, split, qa, qb, opts, notes)
    note = _test_note(diffs + cats, n_resamples)
    if note is not None:
        notes.append(note)
    # McNemar's table on the headline's units, else on accuracy's (empty without either).
    ua, ub = (paired_units(qa, qb, head) or paired_units(qa, qb, "accuracy")
              or (np.zeros(0), np.zeros(0)))
    both, a_only, b_only, neither = discordant(ua, ub)
    first = a.first
    return Comparison(
        a=a, b=b, task=first.task, split=split, fingerprint=first.benchmark,
        synthetic=first.synthetic, metric=head, confidence=confidence, n_resamples=n_resamples,
        n_questions=int(counted(describing(qa, qb)).sum()), metrics=diffs, categories=cats,
        table={"both_right": both, "a_only": a_only, "b_only": b_only, "both_wrong": neither},
        flips=_flips(qa, qb), notes=notes,
    )


def compare_paths(
    a: str | os.PathLike[str], b: str | os.PathLike[str], **kwargs: Any
) -> Comparison:
    """:func:`compare_sides` on the runs found under two paths (labelled A and B)."""
    return compare_sides(load_side(a, "A"), load_side(b, "B"), **kwargs)
