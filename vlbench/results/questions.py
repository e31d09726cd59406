"""Per-question results (``RUN/per_question/{split}.jsonl``) aligned across runs.

The per-question scores let statistics resample questions: a metric that is a mean over
questions (accuracy, GQA binary/open, a per-type breakdown) or over sentences (NLVR2
consistency) is rebuilt here from "units" whose mean, times 100, is the metric. The units
are exactly those the official metric counts: GQA scores balanced questions only (a row
with ``"balanced": false`` is left out), VQA every question with its soft score, NLVR2
consistency every sentence.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlbench.errors import DataError
from vlbench.results.records import Run, read_jsonl

# A question counts as "right" when its score is above one half: for 0/1 tasks that is the
# right answer; for VQA's soft accuracy at least two of ten annotators gave the answer; for a
# group of seeds, the majority of seeds.
CORRECT_THRESHOLD = 0.5
# Key of a per-question row that says whether the official metrics count it (GQA's
# isBalanced); rows without it count.
BALANCED_KEY = "balanced"
# A breakdown metric ``per_<kind>.<category>`` averages the questions whose "types" object
# maps <kind> to <category> (per_answer_type.yes/no, per_structural.query, ...).
BREAKDOWN_PREFIX = "per_"
# How far (percentage points) a mean of per-question scores may sit from the run record's
# value and still be the same metric: both may be rounded to two decimals (VQA's are).
RECORD_TOLERANCE = 0.01 + 1e-9
# Category families shown by ``compare``, per task (others: every key found in "types").
CATEGORY_KINDS = {"vqa": ("answer_type",), "gqa": ("structural", "semantic"), "nlvr2": ()}


@dataclass(frozen=True)
class QuestionTable:
    """Per-question results of one or more runs (seeds) on one split, aligned on question id."""

    task: str
    split: str
    ids: list[str]
    scores: np.ndarray  # [n_runs, n_questions], each in [0, 1]
    predictions: list[list[str]]  # [n_runs][n_questions]
    rows: list[dict[str, Any]]  # the first run's rows: question, answer(s), types

    @property
    def n_runs(self) -> int:
        return int(self.scores.shape[0])

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

    Raises :class:`DataError` when a file is missing or malformed, or when the runs did not
    answer the same questions.
    """
    if not runs:
        raise ValueError("load_questions needs at least one run")
    ids: list[str] = []
    scores: list[np.ndarray] = []
    predictions: list[list[str]] = []
    rows: list[dict[str, Any]] = []
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
            rows = [by_id[q] for q in ids]
        elif set(by_id) != set(ids):
            extra, missing = len(set(by_id) - set(ids)), len(set(ids) - set(by_id))
            raise DataError(
                f"{path}: answers other questions than {runs[0].per_question_path(split)} "
                f"({extra} extra, {missing} missing); runs must share split and data"
            )
        scores.append(np.array([float(by_id[q]["score"]) for q in ids]))
        predictions.append([str(by_id[q].get("prediction", "")) for q in ids])
    return QuestionTable(runs[0].task, split, ids, np.vstack(scores), predictions, rows)


def nlvr2_sentence_keys(ids: Sequence[str]) -> list[str]:
    """Sentence of each NLVR2 example, as the official script groups them for consistency.

    Identifiers read ``split-set-pair-sentence``; blanking the pair field leaves one key per
    sentence, shared by the image pairs it was written for.
    """
    keys = []
    for identifier in ids:
        parts = identifier.split("-")
        if len(parts) > 2:
            parts[2] = ""
        keys.append("-".join(parts))
    return keys


def counted(table: QuestionTable) -> np.ndarray:
    """Which questions the task's official metrics count (GQA: the balanced ones)."""
    if table.task.lower() != "gqa":
        return np.ones(len(table.ids), dtype=bool)
    return np.array([row.get(BALANCED_KEY, True) is not False for row in table.rows], dtype=bool)


def unmarked_balance(table: QuestionTable) -> bool:
    """Whether GQA rows lack the balanced mark, so unbalanced questions cannot be left out."""
    return table.task.lower() == "gqa" and any(BALANCED_KEY not in r for r in table.rows)


def breakdown_name(kind: str, category: str) -> str:
    """The breakdown metric of one category, e.g. ``per_answer_type.yes/no``."""
    return f"{BREAKDOWN_PREFIX}{kind}.{category}"


def category_labels(table: QuestionTable, kind: str) -> list[str]:
    """The categories of ``kind`` among the counted questions, sorted."""
    labels = [t for t, keep in zip(table.types(kind), counted(table), strict=True) if keep]
    return sorted(set(labels) - {""})


def _masked(table: QuestionTable, mask: np.ndarray) -> np.ndarray | None:
    """Scores of the counted questions selected by ``mask``; None when there are none."""
    mask = mask & counted(table)
    return table.scores[:, mask] if mask.any() else None


def unit_values(table: QuestionTable, metric: str) -> np.ndarray | None:
    """Per-unit values ``[n_runs, n_units]`` whose mean x 100 is ``metric``, or None.

    Units are the questions the official metric counts (accuracy, GQA binary/open,
    breakdowns named like ``per_answer_type.yes/no``) or sentences (NLVR2 consistency).
    Metrics that are not a mean over such units (GQA validity, distribution, ...) return
    None.
    """
    task = table.task.lower()
    everything = np.ones(len(table.ids), dtype=bool)
    if metric == "accuracy":
        return _masked(table, everything)
    if task == "gqa" and metric in ("binary", "open"):
        is_open = np.array([t == "query" for t in table.types("structural")], dtype=bool)
        return _masked(table, is_open if metric == "open" else ~is_open)
    if task == "nlvr2" and metric == "consistency":
        keys = nlvr2_sentence_keys(table.ids)
        groups = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        index = np.array([groups[k] for k in keys])
        wrong = (table.scores <= CORRECT_THRESHOLD).astype(float)
        out = np.zeros((table.n_runs, len(groups)))
        for r in range(table.n_runs):
            np.add.at(out[r], index, wrong[r])
        return (out == 0).astype(float)
    family, _, category = metric.partition(".")
    if family.startswith(BREAKDOWN_PREFIX) and category:
        kind = family.removeprefix(BREAKDOWN_PREFIX)
        return _masked(table, np.array([t == category for t in table.types(kind)], dtype=bool))
    return None


def agrees(per_question: float, record: float) -> bool:
    """Whether a metric rebuilt from per-question scores is the run record's value."""
    return abs(per_question - record) <= RECORD_TOLERANCE


def category_kinds(table: QuestionTable) -> list[str]:
    """Category families worth a per-category comparison for this task."""
    known = CATEGORY_KINDS.get(table.task.lower())
    present = table.type_kinds()
    return [k for k in known if k in present] if known is not None else present


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
    return QuestionTable(
        b.task, b.split, list(a.ids), b.scores[:, order],
        [[p[i] for i in order] for p in b.predictions], [b.rows[i] for i in order],
    )


def paired_units(
    a: QuestionTable, b: QuestionTable, metric: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """Seed-averaged per-unit values of ``metric`` for both sides, aligned unit by unit."""
    b = align(a, b)
    ua, ub = unit_values(a, metric), unit_values(b, metric)
    if ua is None or ub is None:
        return None
    return ua.mean(axis=0), ub.mean(axis=0)


def discordant(ua: np.ndarray, ub: np.ndarray) -> tuple[int, int, int, int]:
    """McNemar's table on paired units: (right in both, A only, B only, neither)."""
    ra, rb = ua > CORRECT_THRESHOLD, ub > CORRECT_THRESHOLD
    return (int(np.sum(ra & rb)), int(np.sum(ra & ~rb)), int(np.sum(~ra & rb)),
            int(np.sum(~ra & ~rb)))
