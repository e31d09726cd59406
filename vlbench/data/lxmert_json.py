"""LXMERT's preprocessed task JSON (``data/gqa/*.json`` in its repository).

Each split is a JSON list of ``{"img_id", "label": {answer: score}, "question_id",
"sent"}``; test splits may lack ``label``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vlbench.errors import DataError

_REQUIRED = {"img_id": str, "question_id": (str, int), "sent": str}


def read_lxmert_gqa(path: str | os.PathLike) -> list[dict]:
    """Load and check one LXMERT GQA split; ``question_id`` and ``img_id`` come back as str."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: LXMERT GQA split not found; expected e.g. gqa/lxmert/train.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of questions, found {type(data).__name__}")
    out = []
    for i, datum in enumerate(data):
        if not isinstance(datum, dict):
            raise DataError(f"{path}: item {i} is {type(datum).__name__}, expected an object")
        for key, kind in _REQUIRED.items():
            if not isinstance(datum.get(key), kind):
                raise DataError(
                    f"{path}: item {i} key '{key}' is missing or not a "
                    f"{'string' if kind is str else 'string/int'}; is this LXMERT's GQA JSON?"
                )
        label = datum.get("label")
        if label is not None and not (
            isinstance(label, dict)
            and all(isinstance(a, str) and isinstance(s, int | float) for a, s in label.items())
        ):
            raise DataError(f"{path}: item {i} key 'label' must map answer strings to scores")
        entry = {"img_id": datum["img_id"], "question_id": str(datum["question_id"]),
                 "sent": datum["sent"]}
        if label is not None:
            entry["label"] = {a: float(s) for a, s in label.items()}
        out.append(entry)
    return out
