"""GQA metrics, computed exactly as the official ``eval.py`` from gqadataset.org.

Only balanced questions (``isBalanced``) are scored; answers are compared as raw strings.

- ``accuracy``: share of correct answers. ``binary`` / ``open``: the same split by
  ``types.structural`` ("query" is open, every other structural type is binary).
- ``validity`` / ``plausibility``: share of predictions in the question's ``valid`` /
  ``plausible`` list of the choices file; for a question whose ``types.detailed`` contains
  "Common" the list is replaced by ["color", "material", "shape"].
- ``consistency``: for each correctly answered balanced question with entailed questions
  (other than itself), the accuracy over its entailed questions (balanced or not, so it needs
  predictions for all questions); the mean over those questions.
- ``distribution``: chi-square between gold and predicted answer counts per global group,
  ``sum((o - e)^2 / e)`` over the gold answers of a group, averaged over groups weighted by
  group size, divided by 100 (lower is better).
- ``per_structural``, ``per_semantic``, ``per_steps`` (reasoning steps: program operations
  other than "exist", "query: name", "choose name"), ``per_length`` (words in the question).

Scores are percentages, unrounded (the official script prints them with two decimals).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlbench.errors import DataError
from vlbench.tasks.vqa.scoring import load_json

# Operations whose presence (as a substring of "operation: argument") makes a program step
# not count as reasoning, as in the official getStepsNum.
_NON_STEPS = ("exist", "query: name", "choose name")
# The official belongs(): questions whose detailed type contains "Common" ask for a property
# name, so the valid/plausible answers are the property names.
_COMMON_GROUP = ("color", "material", "shape")


def _avg(values: list[float]) -> float:
    """Official avg(): 0 for an empty list."""
    if len(values) == 0:
        return 0
    return float(sum(values)) / len(values)


def words_num(question: Mapping[str, Any]) -> int:
    """Official getWordsNum: whitespace-separated words of the question text."""
    return len(question["question"].split())


def steps_num(question: Mapping[str, Any]) -> int:
    """Official getStepsNum: semantic-program steps, not counting exist/query name/choose name."""
    return len([
        c for c in question["semantic"]
        if not any(o in "{}: {}".format(c["operation"], c["argument"]) for o in _NON_STEPS)
    ])


def belongs(element: str, group: Any, question: Mapping[str, Any]) -> bool:
    """Official belongs(): membership, with the "Common" detailed-type rule."""
    if "Common" in question["types"]["detailed"]:
        group = _COMMON_GROUP
    return element in group


def chi_square(gold: Mapping[Any, Mapping[str, int]], predicted: Mapping[Any, Mapping[str, int]]
               ) -> float:
    """Official chiSquare: per-group chi-square over gold answers, weighted by group size."""
    sum_score, sum_overall = 0, 0
    for group in gold:
        score, overall = 0, 0
        pred = predicted.get(group, {})
        for ans in gold[group]:
            e = gold[group][ans]
            o = pred.get(ans, 0)
            score += (float(o - e) ** 2) / e
            overall += gold[group][ans]
        sum_score += score * overall
        sum_overall += overall
    return float(sum_score) / sum_overall


def _index_predictions(predictions: Any) -> dict[str, str]:
    if isinstance(predictions, Mapping):
        # vlbench's dict form {questionId: prediction}: the official comparison is between
        # strings, so a number here would score 0 without a word.
        for qid, p in predictions.items():
            if not isinstance(p, str):
                raise DataError(f"GQA predictions: question {qid!r}: prediction is "
                                f"{_kind(p)} ({p!r}); predictions must be answer strings")
        return dict(predictions)
    if not isinstance(predictions, list):
        raise DataError(
            "GQA predictions: expected a JSON array of {\"questionId\", \"prediction\"} objects"
        )
    out: dict[str, str] = {}
    for i, p in enumerate(predictions):
        if not isinstance(p, Mapping) or "questionId" not in p or "prediction" not in p:
            raise DataError(
                f"GQA predictions[{i}]: expected an object with 'questionId' and 'prediction'"
            )
        if not isinstance(p["prediction"], str):
            raise DataError(f"GQA predictions[{i}] (questionId {p['questionId']!r}): "
                            "'prediction' must be a string")
        out[p["questionId"]] = p["prediction"]  # duplicates: the last one counts, as official
    return out


def _kind(value: Any) -> str:
    """How a JSON value reads in an error message ("null", "a number", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, Mapping) else type(value).__name__


# Fields of an official question and the JSON kinds they may hold when present. Missing
# fields are left to whoever needs them (test files have no answers or programs).
_FIELD_KINDS: dict[str, tuple[tuple[type, ...], str]] = {
    "question": ((str,), "a string"),
    "answer": ((str,), "a string"),
    "imageId": ((str, int), "a string"),
    "isBalanced": ((bool,), "true or false"),
    "types": ((Mapping,), 'an object ({"structural", "semantic", "detailed"})'),
    "groups": ((Mapping,), 'an object ({"global", "local"})'),
    "entailed": ((list,), "a list of question ids"),
    "equivalent": ((list,), "a list of question ids"),
    "semantic": ((list,), 'the program, a list of {"operation", "argument"} steps'),
}


def question_problem(question: Mapping[str, Any]) -> str | None:
    """What is wrong with the fields of one official question (``"key 'groups' is null; ..."``),
    or None. Only fields that are present are checked, each against the official layout."""
    for key, (kinds, want) in _FIELD_KINDS.items():
        if key not in question:
            continue
        value = question[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            return f"key '{key}' is {_kind(value)}; expected {want}"
    for key in ("structural", "semantic", "detailed"):
        value = question.get("types", {}).get(key)
        if key in question.get("types", {}) and not isinstance(value, str):
            return f"key 'types.{key}' is {_kind(value)}; expected a string"
    for key in ("global", "local"):
        value = question.get("groups", {}).get(key)
        if value is not None and not isinstance(value, str):
            return f"key 'groups.{key}' is {_kind(value)}; expected a string or null"
    for key in ("entailed", "equivalent"):
        for i, value in enumerate(question.get(key, ())):
            if not isinstance(value, str):
                return f"key '{key}[{i}]' is {_kind(value)}; expected a question id string"
    for i, step in enumerate(question.get("semantic", ())):
        if not isinstance(step, Mapping):
            return f"key 'semantic[{i}]' is {_kind(step)}; expected {{\"operation\", \"argument\"}}"
        for key in ("operation", "argument"):
            if not isinstance(step.get(key), str):
                return (f"key 'semantic[{i}].{key}' is {_kind(step.get(key))}"
                        f"{'' if key in step else ' (missing)'}; expected a string")
    return None


def check_questions(questions: Any, where: str = "GQA questions") -> None:
    """Raise a one-line :class:`DataError` for the first malformed question of an official file.

    ``where`` names the file (``path``) or the input in messages.
    """
    if not isinstance(questions, Mapping):
        raise DataError(f"{where}: expected the official questions JSON (id -> question)")
    for qid, q in questions.items():
        if not isinstance(q, Mapping):
            raise DataError(f"{where}: question {qid!r} is {_kind(q)}; expected an object")
        problem = question_problem(q)
        if problem is not None:
            raise DataError(f"{where}: question {qid!r}: {problem}")


def _get(question: Mapping[str, Any], qid: str, *keys: str) -> Any:
    value: Any = question
    for k in keys:
        if not isinstance(value, Mapping) or k not in value:
            raise DataError(f"GQA question {qid}: missing key '{'.'.join(keys)}'")
        value = value[k]
    return value


def _sorted_breakdown(scores: dict[Any, list[float]]) -> dict[str, float]:
    return {str(k): float(_avg(scores[k]) * 100) for k in sorted(scores)}


def score_gqa(
    questions: Mapping[str, Mapping[str, Any]],
    predictions: Any,
    choices: Mapping[str, Mapping[str, Any]] | None = None,
    consistency: bool | None = None,
) -> dict[str, Any]:
    """Score GQA predictions with the official algorithm.

    Args:
        questions: the loaded questions JSON, question id -> question.
        predictions: ``[{"questionId": str, "prediction": str}, ...]`` (or a dict id ->
            prediction). Ids not in ``questions`` are ignored, as official.
        choices: the loaded choices JSON (id -> {"valid": [...], "plausible": [...]}), or
            None: validity and plausibility are then None (the official script reports 0.00).
        consistency: True is the official ``--consistency``: every question needs a
            prediction. False skips it (None in the output). None (default) computes it when
            some balanced question entails others, all of them are in ``questions`` and every
            question has a prediction; otherwise it is None (not measurable).

    Returns:
        ``accuracy``, ``binary``, ``open``, ``validity``, ``plausibility``, ``consistency``,
        ``distribution`` and the breakdowns ``per_structural``, ``per_semantic``,
        ``per_steps``, ``per_length`` (name -> percent).
    """
    if not isinstance(questions, Mapping):
        raise DataError("GQA questions: expected the official questions JSON (id -> question)")
    for qid, q in questions.items():
        if not isinstance(q, Mapping):
            raise DataError(f"GQA question {qid}: expected an object")
        problem = question_problem(q)
        if problem is not None:  # the official script would crash, or miscount
            raise DataError(f"GQA question {qid}: {problem}")
    preds = _index_predictions(predictions)

    missing_all = [qid for qid in questions if qid not in preds]
    for qid in missing_all:
        if consistency or _get(questions[qid], qid, "isBalanced"):
            hint = "" if all(isinstance(k, str) for k in preds) else \
                " (questionId values must be strings, as in the questions file)"
            raise DataError(
                f"GQA predictions: no prediction for question {qid} ({len(missing_all)} "
                f"missing){hint}; add a prediction for every "
                f"{'' if consistency else 'balanced '}question"
            )
    if consistency is None:
        entailed = [
            eid for qid, q in questions.items() if q.get("isBalanced")
            for eid in (q.get("entailed") or ()) if eid != qid
        ]
        consistency = bool(entailed) and not missing_all and all(e in questions for e in entailed)

    if choices is not None and not isinstance(choices, Mapping):
        raise DataError("GQA choices: expected the official choices JSON (id -> choices)")

    accuracy: list[float] = []
    binary: list[float] = []
    open_: list[float] = []
    validity: list[float] = []
    plausibility: list[float] = []
    consistency_scores: list[float] = []
    per_length: dict[int, list[float]] = {}
    per_steps: dict[int, list[float]] = {}
    per_structural: dict[str, list[float]] = {}
    per_semantic: dict[str, list[float]] = {}
    gold_dist: dict[Any, dict[str, int]] = {}
    pred_dist: dict[Any, dict[str, int]] = {}

    for qid, question in questions.items():
        if not _get(question, qid, "isBalanced"):
            continue
        gold = _get(question, qid, "answer")
        predicted = preds[qid]
        correct = predicted == gold
        score = float(1 if correct else 0)

        structural = _get(question, qid, "types", "structural")
        semantic = _get(question, qid, "types", "semantic")
        _get(question, qid, "question")
        _get(question, qid, "semantic")
        accuracy.append(score)
        per_length.setdefault(words_num(question), []).append(score)
        per_steps.setdefault(steps_num(question), []).append(score)
        per_structural.setdefault(structural, []).append(score)
        per_semantic.setdefault(semantic, []).append(score)
        (open_ if structural == "query" else binary).append(score)

        # The official script tests ``if choices``: an empty choices file counts as absent.
        if choices:
            if qid not in choices:
                raise DataError(f"GQA choices: no entry for question {qid}; use the choices "
                                "file of the same split as the questions")
            _get(question, qid, "types", "detailed")
            c = choices[qid]
            if not isinstance(c, Mapping) or "valid" not in c or "plausible" not in c:
                raise DataError(f"GQA choices: question {qid} needs 'valid' and 'plausible' lists")
            validity.append(float(belongs(predicted, c["valid"], question)))
            plausibility.append(float(belongs(predicted, c["plausible"], question)))

        global_group = _get(question, qid, "groups").get("global")
        if global_group is not None:
            g = gold_dist.setdefault(global_group, {})
            g[gold] = g.get(gold, 0) + 1
            p = pred_dist.setdefault(global_group, {})
            p[predicted] = p.get(predicted, 0) + 1

        if consistency:
            inferred = [eid for eid in _get(question, qid, "entailed") if eid != qid]
            if correct and len(inferred) > 0:
                entailed_scores = []
                for eid in inferred:
                    if eid not in questions:
                        raise DataError(
                            f"GQA question {qid}: entailed question {eid} is not in the questions "
                            "file; consistency needs the all-questions file of the split"
                        )
                    entailed_scores.append(float(preds[eid] == questions[eid]["answer"]))
                consistency_scores.append(_avg(entailed_scores))

    if not accuracy:
        raise DataError("GQA questions: no balanced questions to score")
    has_choices = bool(choices)
    return {
        "accuracy": float(_avg(accuracy) * 100),
        "binary": float(_avg(binary) * 100),
        "open": float(_avg(open_) * 100),
        "validity": float(_avg(validity) * 100) if has_choices else None,
        "plausibility": float(_avg(plausibility) * 100) if has_choices else None,
        "consistency": float(_avg(consistency_scores) * 100) if consistency else None,
        # The official script divides by zero when no question has a global group.
        "distribution": chi_square(gold_dist, pred_dist) / 100 if gold_dist else None,
        "per_structural": _sorted_breakdown(per_structural),
        "per_semantic": _sorted_breakdown(per_semantic),
        "per_steps": _sorted_breakdown(per_steps),
        "per_length": _sorted_breakdown(per_length),
    }


def score_gqa_files(
    questions_path: str | Path,
    predictions_path: str | Path,
    choices_path: str | Path | None = None,
) -> dict[str, Any]:
    """:func:`score_gqa` on the official files (questions, predictions and choices JSON)."""
    questions = load_json(questions_path, "GQA questions")
    predictions = load_json(predictions_path, "GQA predictions")
    choices = None if choices_path is None else load_json(choices_path, "GQA choices")
    check_questions(questions, str(questions_path))  # errors name the questions file itself
    try:
        _index_predictions(predictions)
    except DataError as e:
        raise DataError(f"{predictions_path}: {e}") from None
    try:
        return score_gqa(questions, predictions, choices)
    except DataError as e:
        raise DataError(f"{e} (files: {predictions_path}, {questions_path})") from None
