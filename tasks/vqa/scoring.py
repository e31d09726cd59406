"""VQA v2 accuracy, computed exactly as the official ``vqaEval.py`` (GT-Vision-Lab/VQA master).

Per question (``VQAEval.evaluate``):

1. Every annotator answer and the prediction: ``\\n`` and ``\\t`` become spaces, then strip.
2. Only if the (cleaned) annotator answers are not all identical, the answers and the
   prediction are normalised (:func:`~vlbench.tasks.vqa.normalize.normalize_answer`). When all
   ten agree nothing is normalised, so "Black." never matches a unanimous "black".
3. For each annotator answer ``a_i``: ``acc_i = min(1, #{other answers equal to the
   prediction} / 3)`` where "other" means the answer *dicts* different from ``a_i`` (the
   official code compares whole dicts, so identical dicts drop out together).
4. Question accuracy = mean of the ``acc_i`` (2 of 10 matching gives 0.6, 3 give 0.9).

Overall and per-type accuracies are ``round(100 * sum / n, 2)`` over the questions in
annotation order (the order the official script sums in).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

from vlbench.data.jsonio import read_text
from vlbench.errors import DataError
from vlbench.tasks.vqa.normalize import clean_whitespace, normalize_answer, preprocess_answer

#: vqaEval.py's default precision ``n=2`` for every ``round``.
PRECISION = 2

# get_score of bottom-up-attention-vqa's compute_softscore.py, which LXMERT's labels follow:
# literal values, not count * 0.3 (3 * 0.3 would be 0.8999999999999999).
_SOFT_SCORE = {1: 0.3, 2: 0.6, 3: 0.9}

#: answers per question in VQA v2: the leave-one-out accuracy is defined over ten humans
OFFICIAL_ANSWERS = 10

_ANSWER = itemgetter("answer")
_ANSWER_ID = itemgetter("answer_id")


def vqa_soft_targets(answers: Iterable[str], normalize: bool = True) -> dict[str, float]:
    """LXMERT-style soft training targets: answer -> score by how many annotators gave it.

    1 annotator -> 0.3, 2 -> 0.6, 3 -> 0.9, 4 or more -> 1.0. Answers are keyed by
    :func:`~vlbench.tasks.vqa.normalize.preprocess_answer` unless ``normalize`` is False.

    It agrees with the official per-question accuracy (``vqa_question_accuracy``) whenever
    there are 10 answers, they are already normalised and not unanimous-but-unnormalised,
    because the leave-one-out mean of ``min(1, m/3)`` over 10 answers is exactly 0/0.3/0.6/0.9/1
    for 0/1/2/3/4+ matches. It differs because it counts rather than leaves one out: with a
    number of answers other than 10, with the unanimous-answers quirk ("Black." x10 scores
    "black" 0 officially, 1.0 here), and with the extra comma deletion.
    """
    counts: dict[str, int] = {}
    for answer in answers:
        key = preprocess_answer(answer) if normalize else answer
        counts[key] = counts.get(key, 0) + 1
    return {a: _SOFT_SCORE.get(c, 1.0) for a, c in counts.items()}


def _prepare(answers: Sequence[str], prediction: str) -> tuple[list[str], str]:
    """Steps 1-2: whitespace clean-up, then normalisation unless the answers are unanimous."""
    gts = [clean_whitespace(a) for a in answers]
    res = clean_whitespace(prediction)
    if len(set(gts)) > 1:
        gts = [normalize_answer(a) for a in gts]
        res = normalize_answer(res)
    return gts, res


def _loo_accuracy(gts: list[str], res: str, multiplicity: Sequence[int] | None = None) -> float:
    """Step 3-4 from match counts; same float, summed in the same order, as the official loop.

    ``multiplicity[i]`` is how many answer dicts equal dict ``i`` (itself included); the
    official ``item != gtAnsDatum`` drops all of them. None means all dicts are distinct.
    """
    matches = gts.count(res)
    if matches == 0:
        return 0.0
    n = len(gts)
    miss = min(1, float(matches) / 3)  # acc_i when answer i does not match: nothing removed
    if multiplicity is None:
        if matches >= 4:
            return 1.0
        hit = min(1, float(matches - 1) / 3)
        return float(sum([hit if g == res else miss for g in gts])) / n
    accs = [
        min(1, float(matches - multiplicity[i]) / 3) if g == res else miss
        for i, g in enumerate(gts)
    ]
    return float(sum(accs)) / n


def vqa_question_accuracy(answers: Sequence[str], prediction: str) -> float:
    """Official accuracy of one prediction against its annotator answers, in [0, 1], unrounded.

    Assumes the answer dicts are distinct (they are in VQA v2: each has its own answer_id).
    """
    if not answers:
        raise DataError("VQA question has no annotator answers; each needs 10 'answers'")
    gts, res = _prepare(answers, prediction)
    return _loo_accuracy(gts, res)


def _annotation_list(annotations: Any) -> list[dict]:
    anns = annotations.get("annotations") if isinstance(annotations, Mapping) else annotations
    if not isinstance(anns, list):
        raise DataError(
            "VQA annotations: expected the official annotations JSON (an object with an "
            "'annotations' list) or a list of annotations"
        )
    return anns


def _question_list(questions: Any) -> tuple[str | None, list[dict]]:
    if questions is None:
        return None, []
    qs = questions.get("questions") if isinstance(questions, Mapping) else questions
    if not isinstance(qs, list):
        raise DataError(
            "VQA questions: expected the official questions JSON (an object with a "
            "'questions' list) or a list of questions"
        )
    task_type = questions.get("task_type") if isinstance(questions, Mapping) else None
    return task_type, qs


def _index_results(results: Any) -> dict[Any, str]:
    if not isinstance(results, list):
        raise DataError(
            "VQA results: expected a JSON array of {\"question_id\", \"answer\"} objects"
        )
    try:
        # Duplicates: the official index keeps the last one, as a dict comprehension does.
        by_qid = {r["question_id"]: r["answer"] for r in results}
        if all(type(a) is str for a in by_qid.values()):
            return by_qid
    except (KeyError, TypeError):
        pass
    for i, r in enumerate(results):  # slow path: find and name the bad entry
        if not isinstance(r, Mapping) or "question_id" not in r or "answer" not in r:
            raise DataError(
                f"VQA results[{i}]: expected an object with 'question_id' and 'answer'"
            )
        if not isinstance(r["answer"], str):
            raise DataError(f"VQA results[{i}] (question_id {r['question_id']!r}): 'answer' "
                            "must be a string")
    raise DataError("VQA results: question_id values must be numbers or strings")


def _check_coverage(qids: list[Any], by_qid: Mapping[Any, str]) -> None:
    ann_ids = set(qids)
    missing = [q for q in qids if q not in by_qid]
    extra = [q for q in by_qid if q not in ann_ids]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} annotated question(s) have no result "
                         f"(e.g. {missing[:3]})")
        if extra:
            parts.append(f"{len(extra)} result question_id(s) are not in the annotations "
                         f"(e.g. {extra[:3]})")
        raise DataError(
            "VQA results do not correspond to the annotations: " + "; ".join(parts)
            + "; predict every annotated question exactly as the official evaluation requires"
        )


def _distinct_dicts(answers: list[dict]) -> bool:
    """True when no two answer dicts can be equal (distinct answer_id values)."""
    try:
        return len(set(map(_ANSWER_ID, answers))) == len(answers)
    except (KeyError, TypeError):
        return False


def _multiplicities(answers: list[dict], gts: list[str]) -> list[int]:
    # Compare dicts as the official code does, after its in-place answer rewrite.
    rewritten = [{**a, "answer": g} for a, g in zip(answers, gts, strict=True)]
    return [rewritten.count(d) for d in rewritten]


def _mean_percent(values: list[float], n: int) -> float:
    return round(100 * float(sum(values)) / len(values), n)


def score_vqa(
    annotations: Any,
    questions: Any,
    results: Any,
    precision: int = PRECISION,
) -> dict[str, Any]:
    """Score VQA v2 results with the official algorithm.

    Args:
        annotations: the loaded annotations JSON (``{"annotations": [...]}``) or its list.
        questions: the loaded questions JSON or None; only used for the official
            "Multiple Choice" check (a prediction must be one of ``multiple_choices``).
        results: the loaded results JSON, ``[{"question_id": int, "answer": str}, ...]``;
            must cover exactly the annotated questions (duplicates: the last one counts).
        precision: digits kept by ``round`` (official default 2).

    Returns:
        ``{"accuracy": float, "per_answer_type": {type: float}, "per_question_type":
        {type: float}, "per_question": {question_id: float}}``, all in percent rounded to
        ``precision`` digits like the official ``accuracy`` and ``evalQA``.
    """
    anns = _annotation_list(annotations)
    task_type, qs = _question_list(questions)
    by_qid = _index_results(results)

    try:
        qids = [a["question_id"] for a in anns]
    except (KeyError, TypeError):
        _diagnose_annotations(anns)
        raise
    if len(set(qids)) != len(qids):
        _diagnose_annotations(anns)
    _check_coverage(qids, by_qid)

    if task_type == "Multiple Choice":
        choices = {q.get("question_id"): q.get("multiple_choices", ()) for q in qs}
        for qid in qids:
            if by_qid[qid] not in choices.get(qid, ()):
                raise DataError(
                    f"VQA results: question_id {qid!r}: predicted answer {by_qid[qid]!r} is not "
                    "one of the multiple choices"
                )

    # Per distinct raw string: the whitespace clean-up, and clean-up + normalisation.
    cleaned = _Memo(clean_whitespace)
    normalised = _Memo(lambda s: normalize_answer(cleaned[s]))
    clean, norm = cleaned.__getitem__, normalised.__getitem__

    acc_qa: list[float] = []
    acc_ques_type: dict[Any, list[float]] = {}
    acc_ans_type: dict[Any, list[float]] = {}
    per_question: dict[Any, float] = {}
    try:
        for ann, qid in zip(anns, qids, strict=True):
            answers = ann["answers"]
            raw = list(map(_ANSWER, answers))
            pred = by_qid[qid]
            gts = list(map(clean, raw))
            res = clean(pred)
            if len(set(gts)) > 1:
                gts = list(map(norm, raw))
                res = norm(pred)
            elif not gts:
                raise KeyError("answers")
            if _distinct_dicts(answers):
                acc = _loo_accuracy(gts, res)
            else:
                acc = _loo_accuracy(gts, res, _multiplicities(answers, gts))
            acc_qa.append(acc)
            acc_ques_type.setdefault(ann["question_type"], []).append(acc)
            acc_ans_type.setdefault(ann["answer_type"], []).append(acc)
            per_question[qid] = round(100 * acc, precision)
    except (KeyError, TypeError, AttributeError):
        _diagnose_annotations(anns)
        raise

    if not acc_qa:
        raise DataError("VQA annotations: no questions to score")
    return {
        "accuracy": _mean_percent(acc_qa, precision),
        "per_answer_type": {t: _mean_percent(v, precision) for t, v in acc_ans_type.items()},
        "per_question_type": {t: _mean_percent(v, precision) for t, v in acc_ques_type.items()},
        "per_question": per_question,
    }


class _Memo(dict):
    """``memo[s]`` computes ``fn(s)`` once per distinct ``s`` (lookups stay in C)."""

    def __init__(self, fn: Callable[[str], str]):
        super().__init__()
        self.fn = fn

    def __missing__(self, key: str) -> str:
        value = self[key] = self.fn(key)
        return value


def _diagnose_annotations(anns: list) -> None:
    """Raise a DataError naming the first malformed annotation (slow path, errors only)."""
    seen: set[Any] = set()
    for i, ann in enumerate(anns):
        if not isinstance(ann, Mapping):
            raise DataError(f"VQA annotations[{i}]: expected an object")
        for key in ("question_id", "answers", "question_type", "answer_type"):
            if key not in ann:
                raise DataError(f"VQA annotations[{i}]: missing key '{key}'")
        qid = ann["question_id"]
        try:
            if qid in seen:
                raise DataError(f"VQA annotations[{i}]: question_id {qid!r} appears twice")
            seen.add(qid)
        except TypeError:
            raise DataError(f"VQA annotations[{i}]: question_id must be a number") from None
        answers = ann["answers"]
        if not isinstance(answers, list) or not answers:
            raise DataError(f"VQA annotations[{i}] (question_id {qid!r}): 'answers' must be a "
                            "non-empty list")
        for a in answers:
            if not isinstance(a, Mapping) or not isinstance(a.get("answer"), str):
                raise DataError(f"VQA annotations[{i}] (question_id {qid!r}): every answer must "
                                "be an object with a string 'answer'")
        try:
            hash(ann["question_type"]), hash(ann["answer_type"])
        except TypeError:
            raise DataError(f"VQA annotations[{i}] (question_id {qid!r}): question_type and "
                            "answer_type must be strings") from None


def annotation_problem(ann: Mapping[str, Any]) -> str | None:
    """What makes one annotation unfit for the official metric, or None.

    :func:`score_vqa` computes the official formula for any number of answers, as
    ``vqaEval.py`` does; but VQA v2 has ten per question and the score of a prediction only
    means accuracy with ten (1 of 3 answers matching scores 0.3 x 2/3 + ...), so files are
    held to it.
    """
    answers = ann.get("answers")
    if isinstance(answers, list) and len(answers) != OFFICIAL_ANSWERS:
        return (f"'answers' holds {len(answers)} answers; VQA v2 annotations have "
                f"{OFFICIAL_ANSWERS} and the official accuracy is defined over them")
    for key in ("question_type", "answer_type", "multiple_choice_answer"):
        if key in ann and not isinstance(ann[key], str):
            return f"key '{key}' is {ann[key]!r}; expected a string"
    return None


def check_annotations(annotations: Any, path: str | Path) -> None:
    """One-line :class:`DataError` naming ``path`` for the first annotation unfit for scoring."""
    anns = annotations.get("annotations") if isinstance(annotations, Mapping) else annotations
    if not isinstance(anns, list):
        return  # score_vqa names the layout problem
    for i, ann in enumerate(anns):
        if isinstance(ann, Mapping):
            problem = annotation_problem(ann)
            if problem is not None:
                raise DataError(f"{path}: annotations[{i}] (question_id "
                                f"{ann.get('question_id')!r}): {problem}")


def load_json(path: str | Path, what: str) -> Any:
    """Read a JSON file, turning every failure into a one-line :class:`DataError`."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{what} file not found: {p}; check the path")
    text = read_text(p)  # a byte that is not UTF-8: reported with its line and column
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            f"{what} file {p}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        ) from None


def score_vqa_files(
    annotations_path: str | Path,
    questions_path: str | Path | None,
    results_path: str | Path,
) -> dict[str, Any]:
    """:func:`score_vqa` on the official files (annotations, questions, results JSON)."""
    annotations = load_json(annotations_path, "VQA annotations")
    questions = None if questions_path is None else load_json(questions_path, "VQA questions")
    results = load_json(results_path, "VQA results")
    check_annotations(annotations, annotations_path)
    try:
        return score_vqa(annotations, questions, results)
    except DataError as e:
        raise DataError(f"{e} (files: {results_path}, {annotations_path})") from None
