"""LXMERT region-feature TSV: read it one row at a time, write it back.

The format is the one written by LXMERT's Faster R-CNN extraction scripts and read by
``load_obj_tsv`` in its ``src/utils.py``: one image per line, tab-separated, no header,
columns in the order of :data:`FIELDNAMES`. The array columns are base64 of raw
little-endian buffers: ``objects_id``/``attrs_id`` int64 (num_boxes,), ``objects_conf``/
``attrs_conf`` float32 (num_boxes,), ``boxes`` float32 (num_boxes, 4) as pixel
``x1, y1, x2, y2``, and ``features`` float32 (num_boxes, D).

Unlike ``load_obj_tsv`` the reader streams (the real files are tens of GB) and turns a
bad row into a :class:`~vlbench.errors.DataError` naming the file and line.
"""

from __future__ import annotations

import base64
import binascii
import csv
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlbench.errors import DataError

# Rows hold whole feature matrices (36 x 2048 floats ~ 400 kB of base64 per line).
csv.field_size_limit(sys.maxsize)

FIELDNAMES: list[str] = [
    "img_id", "img_h", "img_w", "objects_id", "objects_conf",
    "attrs_id", "attrs_conf", "num_boxes", "boxes", "features",
]

# Column -> (dtype, values per box or None when the width is the feature dim D).
_ARRAYS: dict[str, tuple[np.dtype, int | None]] = {
    "objects_id": (np.dtype("<i8"), 1),
    "objects_conf": (np.dtype("<f4"), 1),
    "attrs_id": (np.dtype("<i8"), 1),
    "attrs_conf": (np.dtype("<f4"), 1),
    "boxes": (np.dtype("<f4"), 4),
    "features": (np.dtype("<f4"), None),
}


@dataclass
class RegionRecord:
    """One TSV row: the detector's regions for one image (boxes in pixels)."""

    img_id: str
    img_h: int
    img_w: int
    objects_id: np.ndarray  # (n,) int64, Visual Genome object class ids (0..1599)
    objects_conf: np.ndarray  # (n,) float32
    attrs_id: np.ndarray  # (n,) int64, attribute class ids (0..399)
    attrs_conf: np.ndarray  # (n,) float32
    boxes: np.ndarray  # (n, 4) float32, x1, y1, x2, y2 in pixels
    features: np.ndarray  # (n, D) float32

    @property
    def num_boxes(self) -> int:
        """Number of regions in this image."""
        return int(self.boxes.shape[0])

    @property
    def feat_dim(self) -> int:
        """Width D of one region feature."""
        return int(self.features.shape[1]) if self.features.ndim == 2 else 0


def iter_tsv(path: str | os.PathLike, ids: set[str] | None = None) -> Iterator[RegionRecord]:
    """Yield the rows of an LXMERT feature TSV one by one (the file is never held in RAM).

    ``ids`` keeps only those image ids; other rows are skipped before any base64 is decoded.
    A malformed row, or one holding NaN or infinite features, boxes or confidences, raises
    :class:`DataError` naming the file, the line and the column.
    """
    for line_no, row in iter_rows(Path(path)):
        if ids is not None and row[0] not in ids:
            continue
        yield parse_row(row, path, line_no)


def iter_rows(path: str | os.PathLike) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, raw column strings) per non-empty line, checking the column count.

    Each line is split on its own: a quote in a column (csv quoting, as Python's csv writer
    produces for an id holding one) is honoured within the line but can never swallow the
    lines after it, so a stray quote is reported at the line that holds it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: feature TSV not found; pass the path of an LXMERT *_obj36.tsv file")
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            line = _decode(raw, path, line_no).rstrip("\r\n")
            if not line.strip():
                continue  # a trailing blank line is harmless
            row = _split(line, path, line_no)
            if len(row) != len(FIELDNAMES):
                raise DataError(
                    f"{path}:{line_no}: expected {len(FIELDNAMES)} tab-separated "
                    f"columns ({', '.join(FIELDNAMES)}), found {len(row)}; the line is "
                    "truncated or the file is not an LXMERT feature TSV"
                )
            yield line_no, row


def _decode(raw: bytes, path: Path, line_no: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}:{line_no}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
            "the file is corrupt or not an LXMERT feature TSV"
        ) from None


def _split(line: str, path: Path, line_no: int) -> list[str]:
    """The tab-separated columns of one line; quoted columns unquoted the way csv writes them."""
    if '"' not in line:
        return line.split("\t")  # the common case: base64 and plain ids never hold a quote
    try:
        rows = list(csv.reader([line], delimiter="\t", strict=True))
    except csv.Error as e:
        column = FIELDNAMES[min(line.count("\t", 0, line.find('"')), len(FIELDNAMES) - 1)]
        reason = str(e).replace("\t", "tab")
        raise DataError(
            f"{path}:{line_no}: column {column} holds a double quote that does not close on this "
            f"line ({reason}); write such an id csv-quoted, as Python's csv writer does, or drop "
            "the quote"
        ) from None
    return rows[0] if rows else []


def parse_row(row: list[str], path: str | os.PathLike, line_no: int, *,
              finite: bool = True) -> RegionRecord:
    """Decode one TSV row (a list of :data:`FIELDNAMES`-ordered strings) into a record.

    With ``finite`` (the default) NaN or infinite confidences, boxes or features raise a
    :class:`DataError` naming the column; the feature store passes False and reports them
    itself, with counts.
    """
    where = f"{path}:{line_no}"
    img_id = row[0]
    img_h = _int_field(row[1], "img_h", where)
    img_w = _int_field(row[2], "img_w", where)
    n = _int_field(row[7], "num_boxes", where)
    if n < 0 or img_h <= 0 or img_w <= 0:
        raise DataError(
            f"{where}: image '{img_id}' has img_h={img_h}, img_w={img_w}, num_boxes={n}; "
            "sizes must be positive and num_boxes >= 0"
        )
    arrays: dict[str, np.ndarray] = {}
    for name, (dtype, width) in _ARRAYS.items():
        raw = _b64(row[FIELDNAMES.index(name)], name, where)
        arrays[name] = _shape(raw, dtype, width, n, name, where)
    record = RegionRecord(img_id=img_id, img_h=img_h, img_w=img_w, **arrays)
    if finite:
        bad = first_non_finite(record)
        if bad is not None:
            raise DataError(f"{where}: image '{img_id}': {bad}; fix or re-extract this row")
    return record


#: float columns that must hold finite numbers
FLOAT_COLUMNS = ("objects_conf", "attrs_conf", "boxes", "features")


def first_non_finite(record: RegionRecord) -> str | None:
    """``"column X holds K NaN/inf value(s), first at region R"`` for the first bad column, or None."""
    for name in FLOAT_COLUMNS:
        array = getattr(record, name)
        ok = np.isfinite(array)
        if not ok.all():
            bad = np.argwhere(~ok)
            return (f"column {name} holds {int(bad.shape[0])} NaN/inf value(s), first at "
                    f"region {int(bad[0][0])}")
    return None


def _int_field(text: str, name: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)  # some extractors write "480.0"
    except ValueError:
        value = float("nan")
    if not value.is_integer():
        raise DataError(f"{where}: column {name} is '{text[:40]}', expected an integer")
    return int(value)


def _b64(text: str, name: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise DataError(f"{where}: column {name} is not valid base64 ({e})") from None


def _shape(raw: bytes, dtype: np.dtype, width: int | None, n: int, name: str, where: str):
    item = dtype.itemsize
    if width is None:  # features: (n, D) with D read off the buffer length
        if n == 0:
            if raw:
                raise DataError(f"{where}: column {name} holds {len(raw)} bytes but num_boxes is 0")
            return np.zeros((0, 0), dtype=dtype)
        if len(raw) == 0 or len(raw) % (n * item):
            raise DataError(
                f"{where}: column {name} holds {len(raw)} bytes, not a multiple of "
                f"num_boxes ({n}) x {item} bytes ({dtype.name}); the row is corrupt"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(n, -1)
    expected = n * width * item
    if len(raw) != expected:
        shape = f"({n},)" if width == 1 else f"({n}, {width})"
        raise DataError(
            f"{where}: column {name} holds {len(raw)} bytes, expected {expected} for "
            f"{dtype.name} {shape} from num_boxes={n}; the row is corrupt or uses other dtypes"
        )
    array = np.frombuffer(raw, dtype=dtype)
    return array if width == 1 else array.reshape(n, width)


def format_row(record: RegionRecord) -> list[str]:
    """Encode a record as the ten TSV column strings."""
    if any(c in record.img_id for c in "\t\r\n") or not record.img_id:
        raise DataError(
            f"image id {record.img_id!r}: an id must be non-empty and hold no tab or line break "
            "(the TSV keeps one image per line)"
        )
    n = record.num_boxes
    columns = [record.img_id, str(int(record.img_h)), str(int(record.img_w))]
    encoded = {}
    for name, (dtype, width) in _ARRAYS.items():
        array = np.ascontiguousarray(getattr(record, name), dtype=dtype)
        if array.shape[0] != n or (width not in (None, 1) and array.shape[1:] != (width,)):
            raise DataError(
                f"image '{record.img_id}': {name} has shape {array.shape}, "
                f"inconsistent with {n} boxes; fix the record before writing"
            )
        encoded[name] = base64.b64encode(array.tobytes()).decode("ascii")
    columns += [encoded["objects_id"], encoded["objects_conf"], encoded["attrs_id"],
                encoded["attrs_conf"], str(n), encoded["boxes"], encoded["features"]]
    return columns


def write_tsv(path: str | os.PathLike, records: Iterable[RegionRecord]) -> int:
    """Write records (any iterable, consumed once) as an LXMERT feature TSV; returns the row count.

    The file appears atomically: it is written beside the target and renamed at the end.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        for record in records:
            writer.writerow(format_row(record))
            count += 1
    os.replace(tmp, path)
    return count
