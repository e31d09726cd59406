"""LXMERT's preprocessed task JSON (``data/gqa/*.json`` in its repository).

Each split is a JSON list of ``{"img_id", "label": {answer: score}, "question_id",
"sent"}``; test splits may lack ``label``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from vlbench.data.jsonio import read_text
from vlbench.errors import DataError

_REQUIRED = {"img_id": str, "question_id": (str, int), "sent": str}


def read_lxmert_gqa(path: str | os.PathLike) -> list[dict]:
    """Load and check one LXMERT GQA split; ``question_id`` and ``img_id`` come back as str."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: LXMERT GQA split not found; expected e.g. gqa/lxmert/train.json")
    text = read_text(path)  # not UTF-8: one line naming the file
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of questions, found {type(data).__name__}")
    out = []
    for i, datum in enumerate(data):
        if not isinstance(datum, dict):
            raise DataError(f"{path}: item {i} is {type(datum).__name__}, expected an object")
        for key, kind in _REQUIRED.items():
            value = datum.get(key)
            # bool is an int to Python, never a question id
            if not isinstance(value, kind) or isinstance(value, bool):
                raise DataError(
                    f"{path}: item {i} key '{key}' is missing or not a "
                    f"{'string' if kind is str else 'string/int'}; is this LXMERT's GQA JSON?"
                )
        label = datum.get("label")
        if label is not None and not (
            isinstance(label, dict)
            and all(isinstance(a, str) and _score(s) for a, s in label.items())
        ):
            raise DataError(
                f"{path}: item {i} key 'label' must map answer strings to finite numeric scores"
            )
        entry = {"img_id": datum["img_id"], "question_id": str(datum["question_id"]),
                 "sent": datum["sent"]}
        if label is not None:
            entry["label"] = {a: float(s) for a, s in label.items()}
        out.append(entry)
    return out


def _score(value: object) -> bool:
    """A usable soft score: a finite number (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
