"""Text, JSON and JSONL reading with one-line errors that name the file and line.

Every reader of the official formats goes through here, so a file that is not UTF-8, is
cut short or is not JSON is reported the same way everywhere: ``path:line: what; what to do``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from vlbench.errors import DataError

_BOM = "\ufeff"


def decode_utf8(raw: bytes, path: str | Path, line: int | None = None) -> str:
    """``raw`` as UTF-8 text; a bad byte raises :class:`DataError` naming file, line and column.

    ``line`` is the line ``raw`` starts at (None: ``raw`` is the whole file and the line is
    counted from the error's offset).
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        lineno = (line or 1) + before.count(b"\n")
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        raise DataError(
            f"{path}:{lineno}:{column}: not UTF-8 text (byte 0x{raw[exc.start]:02x}: {exc.reason}); "
            "re-save the file as UTF-8"
        ) from None


def _open_binary(path: Path) -> BinaryIO:
    """``open(path, "rb")`` with the usual failures as one-line errors."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None


def read_text(path: str | Path) -> str:
    """The whole file as UTF-8 text (a leading byte-order mark dropped)."""
    path = Path(path)
    with _open_binary(path) as handle:
        raw = handle.read()
    return decode_utf8(raw, path).removeprefix(_BOM)


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` per line of a UTF-8 file, decoded one line at a time (large files
    never sit in memory whole; a bad byte is reported at its own line)."""
    path = Path(path)
    with _open_binary(path) as handle:
        for lineno, raw in enumerate(handle, 1):
            text = decode_utf8(raw, path, lineno)
            yield lineno, text.removeprefix(_BOM) if lineno == 1 else text


def parse_json(text: str, path: str | Path) -> Any:
    """``json.loads`` with a one-line error naming ``path``, line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}:{exc.lineno}:{exc.colno}: malformed JSON ({exc.msg}); fix or re-export the file"
        ) from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to read; is this the right file?") from None


def read_json(path: str | Path) -> Any:
    """A JSON file; missing, non-UTF-8 or malformed files raise :class:`DataError`."""
    return parse_json(read_text(path), path)


def read_jsonl(path: str | Path) -> list[Any]:
    """A JSON-lines file (blank lines skipped); a bad line raises :class:`DataError` at that line."""
    path = Path(path)
    out = []
    for lineno, line in iter_lines(path):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: malformed JSON line ({exc.msg}); fix or remove it") from None
    return out
