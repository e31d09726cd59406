"""Per-question results (``RUN/per_question/{split}.jsonl``) aligned across runs.

The per-question scores let statistics resample questions: a metric that is a mean over
units (questions, or groups of questions) is rebuilt here from the units whose mean, times
100, is the metric. Which units each metric averages is said by the task, not known here:

- Each per-question row has ``id``, ``score`` (in [0, 1]) and ``types`` (kind -> category),
  and may carry ``"counted": false`` (the official metrics leave this row out) and
  ``"group": "<key>"`` (the unit of a metric over groups).
- run.json's ``metric_units`` maps a metric to its spec: ``{}`` is the mean score of the
  counted rows; ``"where": {kind: [category, "!category", ...]}`` keeps the counted rows whose
  ``types[kind]`` is one of the plain categories listed (if any) and none of the ``!`` ones;
  ``"over": "group"`` averages groups instead of rows, a group being right (1) when every
  counted row of it is right (score above one half) and wrong (0) otherwise.
- A breakdown metric ``per_<kind>.<category>`` needs no spec: it is the mean score of the
  counted rows whose ``types[kind]`` is ``<category>``.
- run.json's ``category_kinds`` lists the kinds whose categories ``compare`` breaks
  differences down by.

A record written before these keys existed gets accuracy over every row, breakdowns by
``types``, and every kind the rows have as a category family; its other metrics are not
rebuilt (``vlbench leaderboard --rescore`` brings such a record up to date).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from vlbench.errors import DataError
from vlbench.results.records import RUN_FILE, Run, read_jsonl

# A question counts as "right" when its score is above one half: for 0/1 scores that is the
# right answer; for soft scores (e.g. several annotators' answers) a majority of the credit;
# for a group of seeds, the majority of seeds.
CORRECT_THRESHOLD = 0.5
# Row key that leaves a row out of every metric when false; rows without it count.
COUNTED_KEY = "counted"
# Row key naming the unit a metric ``{"over": "group"}`` averages.
GROUP_KEY = "group"
# A breakdown metric ``per_<kind>.<category>`` averages the questions whose "types" object
# maps <kind> to <category> (per_answer_type.yes/no, per_structural.query, ...).
BREAKDOWN_PREFIX = "per_"
# How far (percentage points) a mean of per-question scores may sit from the run record's
# value and still be the same metric: both may be rounded to two decimals.
RECORD_TOLERANCE = 0.01 + 1e-9
# Keys a metric spec may have, and the units it may average.
SPEC_KEYS = ("where", "over")
OVER = ("row", "group")
# Marks a category a ``where`` clause excludes.
NOT = "!"


@dataclass(frozen=True)
class UnitSpec:
    """How one metric is a mean over units (one parsed entry of ``metric_units``)."""

    # (kind, categories kept (empty: any), categories excluded), all of which must hold
    where: tuple[tuple[str, frozenset[str], frozenset[str]], ...] = ()
    over: str = "row"  # or "group"


# What a record without ``metric_units`` is taken to say.
FALLBACK_UNITS: dict[str, UnitSpec] = {"accuracy": UnitSpec()}


def parse_metric_units(raw: Any, source: str) -> dict[str, UnitSpec]:
    """A run record's ``metric_units``; a malformed one is a DataError naming ``source``."""
    if not isinstance(raw, dict):
        raise DataError(f"{source}: key 'metric_units' must map metric -> spec")
    out: dict[str, UnitSpec] = {}
    for name, spec in raw.items():
        where = f"{source}: metric_units.{name}"
        if not isinstance(spec, dict):
            raise DataError(f"{where}: a spec must be an object (e.g. {{}})")
        unknown = sorted(set(spec) - set(SPEC_KEYS))
        if unknown:
            raise DataError(f"{where}: unknown key(s) {', '.join(unknown)}; this vlbench reads "
                            f"{' and '.join(SPEC_KEYS)}, upgrade vlbench")
        over = spec.get("over", "row")
        if over not in OVER:
            raise DataError(f"{where}: 'over' is {over!r}; use {' or '.join(OVER)}")
        clauses = spec.get("where", {})
        if not isinstance(clauses, dict) or not all(
            isinstance(v, list) and all(isinstance(c, str) for c in v) for v in clauses.values()
        ):
            raise DataError(f"{where}: 'where' must map a kind to a list of categories")
        out[str(name)] = UnitSpec(
            tuple((str(kind), frozenset(c for c in cats if not c.startswith(NOT)),
                   frozenset(c[len(NOT):] for c in cats if c.startswith(NOT)))
                  for kind, cats in clauses.items()),
            over,
        )
    return out


def parse_category_kinds(raw: Any, source: str) -> tuple[str, ...]:
    """A run record's ``category_kinds``; a malformed one is a DataError naming ``source``."""
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
        raise DataError(f"{source}: key 'category_kinds' must be a list of type kinds")
    return tuple(raw)


@dataclass(frozen=True)
class QuestionTable:
    """Per-question results of one or more runs (seeds) on one split, aligned on question id."""

    task: str
    split: str
    ids: list[str]
    scores: np.ndarray  # [n_runs, n_questions], each in [0, 1]
    predictions: list[list[str]]  # [n_runs][n_questions]
    rows: list[dict[str, Any]]  # one run's rows: question, answer(s), types, counted, group
    metric_units: dict[str, UnitSpec] | None = None  # None: the record does not say
    category_kinds: tuple[str, ...] | None = None  # None: the record does not say

    @property
    def n_runs(self) -> int:
        return int(self.scores.shape[0])

    @property
    def units(self) -> dict[str, UnitSpec]:
        """The metrics that are means over units, as the record says (else accuracy only)."""
        return self.metric_units if self.metric_units is not None else FALLBACK_UNITS

    def types(self, kind: str) -> list[str]:
        """The category of each question under ``kind`` (e.g. ``answer_type``), '' if absent."""
        return [str((row.get("types") or {}).get(kind, "")) for row in self.rows]

    def type_kinds(self) -> list[str]:
        """Category families present in the rows (``answer_type``, ``structural``, ...)."""
        kinds: dict[str, None] = {}
        for row in self.rows:
            for key, value in (row.get("types") or {}).items():
                if isinstance(value, str):
                    kinds[key] = None
        return list(kinds)

    def prediction(self, index: int) -> str:
        """The most common prediction over runs for question ``index`` (ties: first run's)."""
        votes = Counter(p[index] for p in self.predictions)
        top = max(votes.values())
        return next(p[index] for p in self.predictions if votes[p[index]] == top)

    def gold(self, index: int) -> str | list[str]:
        row = self.rows[index]
        return row["answers"] if "answers" in row else str(row.get("answer", ""))


def load_questions(runs: Sequence[Run], split: str) -> QuestionTable:
    """Read and align the per-question files of ``runs`` on ``split``.

    The rows and the metric description come from the first run whose record carries
    ``metric_units`` (else the first run): seeds of one group answer the same questions, and
    a record already brought up to date describes its rows best. Raises :class:`DataError`
    when a file is missing or malformed, when the runs did not answer the same questions,
    or when the record's description is malformed.
    """
    if not runs:
        raise ValueError("load_questions needs at least one run")
    ids: list[str] = []
    scores: list[np.ndarray] = []
    predictions: list[list[str]] = []
    rows_by_run: list[dict[str, dict[str, Any]]] = []
    for n, run in enumerate(runs):
        path = run.per_question_path(split)
        if not path.exists():
            raise DataError(
                f"{path}: no per-question results for split {split!r}; "
                f"re-evaluate the run with `vlbench evaluate {run.path} --split {split}`"
            )
        by_id: dict[str, dict[str, Any]] = {}
        for lineno, row in enumerate(read_jsonl(path), start=1):
            if "id" not in row or "score" not in row:
                raise DataError(f"{path}: line {lineno}: needs keys 'id' and 'score'")
            score = row["score"]
            if not isinstance(score, int | float) or not 0.0 <= score <= 1.0:
                raise DataError(f"{path}: line {lineno}: key 'score' must be a number in [0, 1]")
            qid = str(row["id"])
            if qid in by_id:
                raise DataError(f"{path}: line {lineno}: question id {qid!r} appears twice")
            by_id[qid] = row
        if n == 0:
            ids = list(by_id)
        elif set(by_id) != set(ids):
            extra, missing = len(set(by_id) - set(ids)), len(set(ids) - set(by_id))
            raise DataError(
                f"{path}: answers other questions than {runs[0].per_question_path(split)} "
                f"({extra} extra, {missing} missing); runs must share split and data"
            )
        scores.append(np.array([float(by_id[q]["score"]) for q in ids]))
        predictions.append([str(by_id[q].get("prediction", "")) for q in ids])
        rows_by_run.append(by_id)
    d = next((i for i, r in enumerate(runs) if r.metric_units is not None), 0)
    source = str(runs[d].path / RUN_FILE)
    units, kinds = runs[d].metric_units, runs[d].category_kinds
    return QuestionTable(
        runs[0].task, split, ids, np.vstack(scores), predictions,
        [rows_by_run[d][q] for q in ids],
        None if units is None else parse_metric_units(units, source),
        None if kinds is None else parse_category_kinds(kinds, source),
    )


def counted(table: QuestionTable) -> np.ndarray:
    """Which questions the official metrics count (rows not marked ``"counted": false``)."""
    return np.array([row.get(COUNTED_KEY, True) is not False for row in table.rows], dtype=bool)


def breakdown_name(kind: str, category: str) -> str:
    """The breakdown metric of one category, e.g. ``per_answer_type.yes/no``."""
    return f"{BREAKDOWN_PREFIX}{kind}.{category}"


def category_labels(table: QuestionTable, kind: str) -> list[str]:
    """The categories of ``kind`` among the counted questions, sorted."""
    labels = [t for t, keep in zip(table.types(kind), counted(table), strict=True) if keep]
    return sorted(set(labels) - {""})


def metric_spec(table: QuestionTable, metric: str) -> UnitSpec | None:
    """How ``metric`` is a mean over units: the record's spec, else the breakdown rule."""
    spec = table.units.get(metric)
    if spec is not None:
        return spec
    family, _, category = metric.partition(".")
    if family.startswith(BREAKDOWN_PREFIX) and category:
        kind = family.removeprefix(BREAKDOWN_PREFIX)
        return UnitSpec(((kind, frozenset({category}), frozenset()),))
    return None


def _selected(table: QuestionTable, spec: UnitSpec) -> np.ndarray:
    """The counted questions that ``spec``'s ``where`` clauses keep."""
    mask = counted(table)
    for kind, kept, excluded in spec.where:
        mask &= np.array([(not kept or t in kept) and t not in excluded
                          for t in table.types(kind)], dtype=bool)
    return mask


def unit_values(
    table: QuestionTable, metric: str, scores: np.ndarray | None = None
) -> np.ndarray | None:
    """Per-unit values ``[n_runs, n_units]`` whose mean x 100 is ``metric``, or None.

    The units are those of the metric's spec (see the module docstring), taken from
    ``table``'s rows; ``scores`` (default: the table's own, aligned on its questions) gives
    their values. None when the metric is not a mean over units, when no counted row is
    selected, or when a metric over groups meets a row without a group.
    """
    spec = metric_spec(table, metric)
    if spec is None:
        return None
    scores = table.scores if scores is None else scores
    mask = _selected(table, spec)
    if not mask.any():
        return None
    if spec.over == "row":
        return scores[:, mask]
    keys = [table.rows[i].get(GROUP_KEY) for i in np.flatnonzero(mask)]
    if not all(isinstance(k, str) for k in keys):
        return None  # rows written without their group: the metric cannot be rebuilt
    groups = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    index = np.array([groups[k] for k in keys])
    wrong = (scores[:, mask] <= CORRECT_THRESHOLD).astype(float)
    out = np.zeros((scores.shape[0], len(groups)))
    for r in range(scores.shape[0]):
        np.add.at(out[r], index, wrong[r])
    return (out == 0).astype(float)


def agrees(per_question: float, record: float) -> bool:
    """Whether a metric rebuilt from per-question scores is the run record's value."""
    return abs(per_question - record) <= RECORD_TOLERANCE


def compared_kinds(table: QuestionTable) -> list[str]:
    """Category families worth a per-category comparison: the record's, else all present."""
    present = table.type_kinds()
    if table.category_kinds is None:
        return present
    return [k for k in table.category_kinds if k in present]


def align(a: QuestionTable, b: QuestionTable) -> QuestionTable:
    """``b`` reordered to ``a``'s question order; DataError when they hold other questions."""
    if set(a.ids) != set(b.ids):
        extra, missing = len(set(b.ids) - set(a.ids)), len(set(a.ids) - set(b.ids))
        raise DataError(
            f"the two sides answered different questions on {a.split!r} ({extra} only in the "
            f"second, {missing} only in the first); compare runs on the same split and data"
        )
    if a.ids == b.ids:
        return b
    where = {q: i for i, q in enumerate(b.ids)}
    order = [where[q] for q in a.ids]
    return replace(b, ids=list(a.ids), scores=b.scores[:, order],
                   predictions=[[p[i] for i in order] for p in b.predictions],
                   rows=[b.rows[i] for i in order])


def describing(a: QuestionTable, b: QuestionTable) -> QuestionTable:
    """The side whose record says how metrics are built (``a`` unless only ``b`` says).

    Both sides answered the same questions, so one description serves both: a record of an
    earlier release paired with an up-to-date one is then read the up-to-date way.
    ``b`` must be aligned to ``a``.
    """
    return b if a.metric_units is None and b.metric_units is not None else a


def paired_units(
    a: QuestionTable, b: QuestionTable, metric: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """Seed-averaged per-unit values of ``metric`` for both sides, aligned unit by unit."""
    b = align(a, b)
    d = describing(a, b)
    ua, ub = unit_values(d, metric, a.scores), unit_values(d, metric, b.scores)
    if ua is None or ub is None:
        return None
    return ua.mean(axis=0), ub.mean(axis=0)


def discordant(ua: np.ndarray, ub: np.ndarray) -> tuple[int, int, int, int]:
    """McNemar's table on paired units: (right in both, A only, B only, neither)."""
    ra, rb = ua > CORRECT_THRESHOLD, ub > CORRECT_THRESHOLD
    return (int(np.sum(ra & rb)), int(np.sum(ra & ~rb)), int(np.sum(~ra & rb)),
            int(np.sum(~ra & ~rb)))
