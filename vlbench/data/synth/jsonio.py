"""Deterministic JSON / JSONL writing for the synthetic world (same seed -> same bytes)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path


def write_json(path: str | os.PathLike, obj, *, indent: int | None = None) -> str:
    """Write ``obj`` as JSON (compact unless ``indent``), atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # json.dumps (not json.dump) so the C encoder does the work: 10x faster on big files.
    if indent is None:
        text = json.dumps(obj, separators=(",", ":"))
    else:
        text = json.dumps(obj, indent=indent) + "\n"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return str(path)


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> str:
    """Write one compact JSON object per line, atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, separators=(",", ":")) + "\n")
    os.replace(tmp, path)
    return str(path)
