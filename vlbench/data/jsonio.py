"""JSON and JSONL reading with errors that name the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlbench.errors import DataError


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}:{exc.colno}: malformed JSON ({exc.msg}); fix or re-export the file") from None


def read_jsonl(path: str | Path) -> list[Any]:
    path = Path(path)
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}:{lineno}: malformed JSON line ({exc.msg}); fix or remove it") from None
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    return out
