"""NLVR2 accuracy and consistency, computed exactly as the official ``nlvr2/eval/metrics.py``.

- A prediction is correct when ``prediction.lower() == label.lower()`` ("TRUE" matches "True").
- Consistency groups examples by their identifier with the third dash-separated field
  (the image-pair id) blanked: "dev-850-0-1" and "dev-850-3-1" share the group "dev-850--1"
  (same image set, same sentence). A group is consistent when all its examples are correct;
  consistency is the share of consistent groups.
- Predictions CSV: one ``identifier,prediction`` per line, no header; each line is stripped
  and split on ",", the first two fields are used, a later line for the same identifier wins.

The official script prints fractions; both metrics are returned in percent here, like every
other vlbench metric.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from vlbench.data.jsonio import iter_lines
from vlbench.errors import DataError

#: Header line accepted (and skipped) at the top of a predictions CSV.
_HEADER = ("identifier", "prediction")
#: What a prediction may say, in any case.
_LABELS = ("true", "false")


def sentence_group(identifier: str) -> str:
    """Official consistency key: the identifier with its third "-" field emptied."""
    parts = identifier.split("-")
    if len(parts) < 3:
        raise DataError(
            f"NLVR2 identifier {identifier!r} is not of the form split-set_id-pair_id-sentence_id"
        )
    parts[2] = ""
    return "-".join(parts)


def score_nlvr2(labels: Iterable[Mapping[str, Any]], predictions: Mapping[str, str]
                ) -> dict[str, float]:
    """Score NLVR2 predictions with the official algorithm.

    Args:
        labels: the examples of the labels JSONL (each with "identifier" and "label").
        predictions: identifier -> predicted label ("True"/"False", any case). Extra
            identifiers are ignored; a missing one is an error, as in the official script.

    Returns:
        ``{"accuracy": percent, "consistency": percent}``.
    """
    examples = list(labels)
    if not examples:
        raise DataError("NLVR2 labels: no examples to score")
    missing = []
    for i, ex in enumerate(examples):
        if not isinstance(ex, Mapping) or not isinstance(ex.get("identifier"), str) \
                or "label" not in ex:
            raise DataError(f"NLVR2 labels example {i + 1}: needs a string 'identifier' and a "
                            "'label'")
        if not isinstance(ex["label"], str):
            raise DataError(
                f"NLVR2 labels example {i + 1} ({ex['identifier']}): 'label' must be a string "
                "such as \"True\""
            )
        if ex["identifier"] not in predictions:
            missing.append(ex["identifier"])
        else:
            problem = prediction_problem(predictions[ex["identifier"]])
            if problem is not None:
                raise DataError(f"NLVR2 predictions ({ex['identifier']}): {problem}")
    if missing:
        raise DataError(
            f"NLVR2 predictions: {len(missing)} of {len(examples)} examples have no prediction "
            f"(e.g. {missing[:3]}); predict every example"
        )

    num_correct = 0.0
    consistent: dict[str, bool] = {}
    for ex in examples:
        group = sentence_group(ex["identifier"])
        if group not in consistent:
            consistent[group] = True
        if predictions[ex["identifier"]].lower() == ex["label"].lower():
            num_correct += 1.0
        else:
            consistent[group] = False
    num_consistent = float(sum(1 for ok in consistent.values() if ok))
    return {
        "accuracy": num_correct / len(examples) * 100,
        "consistency": num_consistent / len(consistent) * 100,
    }


def read_nlvr2_labels(path: str | Path) -> list[dict[str, Any]]:
    """Read a labels JSONL file (one example object per line; blank lines skipped)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"NLVR2 labels file not found: {p}; check the path")
    examples = []
    for lineno, line in iter_lines(p):  # a byte that is not UTF-8: reported at its line
        if not line.strip():
            continue
        try:
            examples.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DataError(f"NLVR2 labels file {p}, line {lineno}: invalid JSON "
                            f"({e.msg}); expected one example object per line") from None
    return examples


def read_nlvr2_predictions(path: str | Path) -> dict[str, str]:
    """Read a predictions CSV (``identifier,prediction`` per line) the official way.

    Blank lines and a leading ``identifier,prediction`` header are skipped (the official
    script would crash on the former and treat the latter as a prediction). A prediction
    that is no spelling of True/False (LXMERT's 1/0, say) is an error: the official
    comparison would count it wrong without a word.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"NLVR2 predictions file not found: {p}; check the path")
    predictions: dict[str, str] = {}
    for lineno, line in iter_lines(p):
        if not line.strip():
            continue
        splits = line.strip().split(",")
        if len(splits) < 2:
            raise DataError(f"NLVR2 predictions file {p}, line {lineno}: expected "
                            "'identifier,prediction'")
        if lineno == 1 and tuple(s.strip().lower() for s in splits[:2]) == _HEADER:
            continue
        problem = prediction_problem(splits[1])
        if problem is not None:
            raise DataError(f"NLVR2 predictions file {p}, line {lineno} ({splits[0]}): {problem}")
        predictions[splits[0]] = splits[1]
    return predictions


def prediction_problem(value: Any) -> str | None:
    """Why ``value`` cannot be an NLVR2 prediction, or None.

    The official comparison is ``prediction.lower() == label.lower()``: any case of
    True/False works (and " False", padded, is kept and counts wrong, as officially).
    """
    if not isinstance(value, str):
        return f"prediction {value!r} is not a string; write True or False"
    if value.strip().lower() not in _LABELS:
        hint = f" (LXMERT's {value.strip()} is {'True' if value.strip() == '1' else 'False'})" \
            if value.strip() in ("0", "1") else ""
        return f"prediction {value!r} is not True or False{hint}; write the official labels"
    return None


def score_nlvr2_files(labels_path: str | Path, predictions_path: str | Path) -> dict[str, float]:
    """:func:`score_nlvr2` on the official files (labels JSONL, predictions CSV)."""
    labels = read_nlvr2_labels(labels_path)
    predictions = read_nlvr2_predictions(predictions_path)
    try:
        return score_nlvr2(labels, predictions)
    except DataError as e:
        raise DataError(f"{e} (files: {predictions_path}, {labels_path})") from None
