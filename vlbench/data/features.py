"""Region features per image id, from LXMERT TSVs through a memory-mapped cache.

The first :meth:`FeatureStore.open` of a set of TSV files streams them once into a cache
directory: one ``.npy`` file per array (all rows' regions stacked, opened later as
read-only memmaps) and an ``index.json`` holding image ids, row offsets, image sizes, the
fingerprints of the source files and an audit of the data (non-finite values, boxes
outside their image, repeated image ids). Later opens reuse the cache while every source
keeps its path, size and modification time and the cache files still match the sizes and
checksums the index recorded (a truncated or zeroed file is rebuilt, never read), so a
30 GB TSV is read once, and a training process touches only the pages of the images it
batches.

Opening checks the audit: NaN or infinite values, and boxes far outside their image, are
errors naming the file and line; an image id given by two rows is an error unless
``duplicate_ids`` says which row wins (LXMERT's ``load_obj_tsv`` builds a dict: the last).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlbench.data.tsv import FIELDNAMES, RegionRecord, first_non_finite, iter_rows, parse_row
from vlbench.errors import ConfigError, DataError

CACHE_FORMAT = 2
_HEADER_BYTES = 128  # fixed .npy header size, so the header can be written after the data
_ARRAY_DTYPES = {
    "features": "<f4",
    "boxes": "<f4",  # normalised to [0, 1]
    "objects_id": "<i8",
    "objects_conf": "<f4",
    "attrs_id": "<i8",
    "attrs_conf": "<f4",
}
_SMALL_ARRAYS = ("offsets", "sizes")
_SAMPLE_BYTES = 1 << 16  # bytes hashed at the start, middle and end of each cache file

#: which row an image id given by several rows gets: an error, the first or the last row
DUPLICATE_POLICIES = ("error", "first", "last")
#: which regions an image with more than ``max_boxes`` keeps: the first rows of the file, or
#: the most confident (by ``objects_conf``)
BOX_ORDERS = ("file", "confidence")

# A box may overhang its image by rounding in the detector (a pixel or two): clipped with a
# warning. Beyond BOX_SLACK_PX, or when more than BOX_OUTSIDE_SHARE of the boxes overhang
# (and more than BOX_OUTSIDE_FLOOR, so that one box of a ten-box test file is not a share),
# the boxes are not in this image's pixels (swapped or resized sizes): an error, since
# LXMERT's loader asserts 0 <= box <= size.
BOX_SLACK_PX = 4.0
BOX_OUTSIDE_SHARE = 0.01
BOX_OUTSIDE_FLOOR = 10


@dataclass
class Regions:
    """One image's regions as the models consume them (boxes divided by image width/height)."""

    img_id: str
    features: np.ndarray  # (n, D) float32
    boxes: np.ndarray  # (n, 4) float32, x1/w, y1/h, x2/w, y2/h clipped to [0, 1]
    objects_id: np.ndarray  # (n,) int64 detector object label
    objects_conf: np.ndarray  # (n,) float32
    attrs_id: np.ndarray  # (n,) int64 detector attribute label
    attrs_conf: np.ndarray  # (n,) float32
    img_h: int
    img_w: int

    @property
    def num_boxes(self) -> int:
        """Number of regions."""
        return int(self.features.shape[0])


def normalise_boxes(boxes: np.ndarray, img_w: float, img_h: float) -> np.ndarray:
    """Pixel ``x1, y1, x2, y2`` -> fractions of the image width/height, clipped to [0, 1]."""
    out = np.asarray(boxes, dtype=np.float32).copy()
    out[:, (0, 2)] /= np.float32(img_w)
    out[:, (1, 3)] /= np.float32(img_h)
    return np.clip(out, 0.0, 1.0, out=out)


def box_overhang(boxes: np.ndarray, img_w: float, img_h: float) -> np.ndarray:
    """Pixels by which each box lies outside ``[0, w] x [0, h]`` (0 for a box inside), (n,)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not len(boxes):
        return np.zeros(0)
    below = np.maximum(-boxes, 0.0)
    above = np.maximum(boxes - np.array([img_w, img_h, img_w, img_h], np.float64), 0.0)
    return np.maximum(below, above).max(axis=1)


class NoRegions:
    """The feature store of a run whose model reads pixels instead: it holds no image, and no
    feature file is opened, so a data directory needs none for such a run."""

    fingerprint = "none"
    feat_dim = 0
    meta: dict[str, Any] = {}

    def __contains__(self, image_id: object) -> bool:
        return False

    def __len__(self) -> int:
        return 0


class FeatureStore:
    """Read-only region features for a fixed set of images, backed by memory-mapped arrays."""

    def __init__(self, cache_path: Path, *, duplicate_ids: str = "error", box_order: str = "file"):
        _check_choice("duplicate_ids", duplicate_ids, DUPLICATE_POLICIES)
        _check_choice("box_order", box_order, BOX_ORDERS)
        index_path = cache_path / "index.json"
        with open(index_path, encoding="utf-8") as f:
            self._index = json.load(f)
        self.path = cache_path
        self.duplicate_ids = duplicate_ids
        self.box_order = box_order
        rows: list[str] = self._index["ids"]  # one per TSV row: an id may repeat
        self._row: dict[str, int] = {}
        for i, img_id in enumerate(rows):
            if duplicate_ids == "last" or img_id not in self._row:
                self._row[img_id] = i
        self.ids: list[str] = list(dict.fromkeys(rows))
        try:
            self._arrays = {
                name: np.load(cache_path / f"{name}.npy", mmap_mode="r") for name in _ARRAY_DTYPES
            }
            self._offsets = np.load(cache_path / "offsets.npy")
            self._sizes = np.load(cache_path / "sizes.npy")  # (rows, 2) img_h, img_w
        except (OSError, ValueError) as exc:
            raise DataError(f"{cache_path}: feature cache unreadable ({exc}); delete the folder "
                            "and run again to rebuild it") from None
        self.feat_dim: int = int(self._index["feat_dim"])
        self.max_boxes: int = int(self._index["max_boxes"])
        self.sources: list[dict] = self._index["sources"]
        self.audit: dict[str, Any] = self._index.get("audit", {})
        self.duplicates: int = len(rows) - len(self.ids)
        self.num_regions: int = int(self._index["num_regions"])
        self.rebuilt: str | None = None  # why open() rebuilt the cache, if it did
        # TSV path -> its .meta.json (written by `vlbench features extract`): backbone, weights
        self.meta: dict[str, dict[str, Any]] = {}
        fingerprint: str = self._index["fingerprint"]
        if self.duplicates and duplicate_ids == "last":
            # Other rows than vlbench's historical choice (the first): other data.
            fingerprint = "sha256:" + hashlib.sha256(
                f"{fingerprint} duplicate_ids=last".encode()).hexdigest()
        self.fingerprint = fingerprint

    # -- building / reusing the cache -------------------------------------------------------

    @classmethod
    def open(cls, tsv_paths: str | os.PathLike | Sequence[str | os.PathLike],
             cache_dir: str | os.PathLike, *, duplicate_ids: str = "error",
             box_order: str = "file", validate: bool = True) -> FeatureStore:
        """Open the store for ``tsv_paths``, building its cache under ``cache_dir`` if needed.

        The cache is reused when every TSV still has the path, size and mtime it was built
        from and the cache files match their index; otherwise it is rebuilt (streaming, one
        pass per file). ``duplicate_ids`` picks the row of an id given twice ("error": refuse),
        ``box_order`` the regions :meth:`batch` keeps of a crowded image. With ``validate``
        (the default) the audit's errors raise :class:`DataError` (see :meth:`errors`).
        """
        _check_choice("duplicate_ids", duplicate_ids, DUPLICATE_POLICIES)
        _check_choice("box_order", box_order, BOX_ORDERS)
        paths = [tsv_paths] if isinstance(tsv_paths, str | os.PathLike) else list(tsv_paths)
        if not paths:
            raise DataError("FeatureStore.open: no feature TSV given; pass at least one *_obj36.tsv")
        sources = [_source_stamp(Path(p)) for p in paths]
        key = hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest()[:16]
        # The format is in the name: vlbench versions sharing a cache folder never rebuild (and
        # remove) each other's caches.
        cache_path = Path(cache_dir) / f"regions-v{CACHE_FORMAT}-{key}"
        problem = _cache_problem(cache_path, sources)
        if problem is not None:
            _build_cache(paths, sources, cache_path)
        store = cls(cache_path, duplicate_ids=duplicate_ids, box_order=box_order)
        store.rebuilt = problem if problem != "no cache yet" else None
        from vlbench.data.extract import read_meta  # lazy: the extractor module imports torch

        for source, path in zip(sources, paths, strict=True):
            meta = read_meta(path)
            # a meta whose fingerprint is not this TSV's describes other rows
            if meta is not None and (len(paths) > 1 or meta.get("fingerprint") == store.fingerprint):
                store.meta[source["path"]] = meta
        if validate:
            errors = store.errors()
            if errors:
                raise DataError(errors[0])
        return store

    # -- the audit --------------------------------------------------------------------------

    def errors(self) -> list[str]:
        """One-line errors of the data behind the store (empty when it can be used)."""
        audit, out = self.audit, []
        bad = audit.get("non_finite")
        if bad:
            more = f" ({bad['rows']} rows in all)" if bad["rows"] > 1 else ""
            out.append(f"{bad['where']}: image '{bad['img_id']}': {bad['detail']}{more}; "
                       "fix or re-extract these rows")
        box = audit.get("boxes_outside")
        if box and _boxes_fail(box, int(audit.get("num_boxes", 0))):
            out.append(
                f"{box['where']}: image '{box['img_id']}' ({box['img_w']}x{box['img_h']} px) has a "
                f"box {box['max_px']:.1f} px outside the image; {box['count']} of "
                f"{audit['num_boxes']} boxes overhang (tolerated: up to {BOX_SLACK_PX:g} px and "
                f"{BOX_OUTSIDE_SHARE:.0%} of boxes); the boxes are not in pixels of img_w x img_h: "
                "check those columns or re-extract"
            )
        dup = audit.get("duplicates")
        if dup and self.duplicate_ids == "error":
            out.append(
                f"image id '{dup['img_id']}' is given by {dup['first']} and again by "
                f"{dup['again']} ({dup['count']} repeated id(s) in all); remove the extra rows, or "
                "pick one with --set data.duplicate_ids=first|last (LXMERT's loader keeps the last)"
            )
        return out

    def warnings(self) -> list[str]:
        """One-line notes on data the store uses after a repair (clipped boxes, repeated ids)."""
        audit, out = self.audit, []
        box = audit.get("boxes_outside")
        if box and not _boxes_fail(box, int(audit.get("num_boxes", 0))):
            out.append(
                f"{box['count']} of {audit['num_boxes']} boxes overhang their image by up to "
                f"{box['max_px']:.1f} px (e.g. image '{box['img_id']}', {box['where']}); "
                "clipped to the image"
            )
        dup = audit.get("duplicates")
        if dup and self.duplicate_ids != "error":
            out.append(
                f"{dup['count']} image id(s) are given by more than one row (e.g. '{dup['img_id']}' "
                f"at {dup['first']} and {dup['again']}); using the {self.duplicate_ids} row "
                "(data.duplicate_ids)"
            )
        if self.rebuilt:
            out.append(f"the feature cache {self.path} was rebuilt ({self.rebuilt})")
        return out

    def crowded(self, max_boxes: int) -> tuple[int, int]:
        """(images with more than ``max_boxes`` regions, the most regions of one image)."""
        rows = np.fromiter(self._row.values(), dtype=np.int64, count=len(self._row))
        counts = self._offsets[rows + 1] - self._offsets[rows]
        over = counts > max_boxes
        return int(over.sum()), int(counts.max()) if len(counts) else 0

    # -- lookups ---------------------------------------------------------------------------

    def __contains__(self, img_id: object) -> bool:
        return img_id in self._row

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        names = ", ".join(Path(s["path"]).name for s in self.sources)
        return f"FeatureStore({len(self)} images, D={self.feat_dim}, from {names})"

    def _row_of(self, img_id: str) -> int:
        try:
            return self._row[img_id]
        except KeyError:
            names = ", ".join(s["path"] for s in self.sources)
            raise DataError(
                f"image id '{img_id}' is not in the feature store built from {names} "
                f"({len(self)} images); add the TSV that holds it or drop the examples using it"
            ) from None

    def get(self, img_id: str) -> Regions:
        """The regions of one image; raises :class:`DataError` for an unknown id."""
        i = self._row_of(img_id)
        lo, hi = int(self._offsets[i]), int(self._offsets[i + 1])
        a = self._arrays
        return Regions(
            img_id=img_id,
            features=a["features"][lo:hi],
            boxes=a["boxes"][lo:hi],
            objects_id=a["objects_id"][lo:hi],
            objects_conf=a["objects_conf"][lo:hi],
            attrs_id=a["attrs_id"][lo:hi],
            attrs_conf=a["attrs_conf"][lo:hi],
            img_h=int(self._sizes[i, 0]),
            img_w=int(self._sizes[i, 1]),
        )

    def num_boxes(self, img_id: str) -> int:
        """Number of regions of one image."""
        i = self._row_of(img_id)
        return int(self._offsets[i + 1] - self._offsets[i])

    def batch(self, img_ids: Sequence[str], max_boxes: int | None = None, order: str | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stack images into ``feats (B,R,D)``, ``boxes (B,R,4)``, ``mask (B,R)`` (float32).

        ``R`` is ``max_boxes`` (default: the store's largest image). Missing regions are
        zeros with mask 0. An image with more regions keeps ``R`` of them: its first rows
        (``order`` "file", the default: detectors write regions by confidence) or its ``R``
        most confident by ``objects_conf`` ("confidence"), in file order either way.
        ``order`` None uses the store's ``box_order``.
        """
        order = self.box_order if order is None else order
        _check_choice("box_order", order, BOX_ORDERS)
        r = self.max_boxes if max_boxes is None else int(max_boxes)
        b = len(img_ids)
        feats = np.zeros((b, r, self.feat_dim), dtype=np.float32)
        boxes = np.zeros((b, r, 4), dtype=np.float32)
        mask = np.zeros((b, r), dtype=np.float32)
        for j, img_id in enumerate(img_ids):
            i = self._row_of(img_id)
            lo, hi = int(self._offsets[i]), int(self._offsets[i + 1])
            n = min(hi - lo, r)
            if hi - lo > r and order == "confidence":
                conf = np.asarray(self._arrays["objects_conf"][lo:hi])
                keep = np.sort(np.argsort(-conf, kind="stable")[:r]) + lo
                feats[j, :n] = self._arrays["features"][keep]
                boxes[j, :n] = self._arrays["boxes"][keep]
            else:
                feats[j, :n] = self._arrays["features"][lo:lo + n]
                boxes[j, :n] = self._arrays["boxes"][lo:lo + n]
            mask[j, :n] = 1.0
        return feats, boxes, mask


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r}: use one of {', '.join(choices)}")


def _boxes_fail(box: dict[str, Any], num_boxes: int) -> bool:
    """Whether the overhanging boxes are past the tolerance (see BOX_SLACK_PX)."""
    count = int(box["count"])
    return float(box["max_px"]) > BOX_SLACK_PX or (
        count > BOX_OUTSIDE_FLOOR and count > BOX_OUTSIDE_SHARE * num_boxes)


# -- cache construction -----------------------------------------------------------------------


def _source_stamp(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: feature TSV not found; check the --data directory or the path")
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _index_checksum(index: dict[str, Any]) -> str:
    body = {k: v for k, v in index.items() if k != "checksum"}
    return "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _file_sample(path: Path, size: int) -> str:
    """sha256 of the first, middle and last bytes of a file: catches zeroed or swapped files
    without reading gigabytes on every open."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for start in sorted({0, max(0, size // 2 - _SAMPLE_BYTES // 2), max(0, size - _SAMPLE_BYTES)}):
            f.seek(start)
            h.update(f.read(_SAMPLE_BYTES))
    return h.hexdigest()


def _file_stamps(folder: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for name in (*_ARRAY_DTYPES, *_SMALL_ARRAYS):
        path = folder / f"{name}.npy"
        size = path.stat().st_size
        out[name] = {"bytes": size, "sample": _file_sample(path, size)}
    return out


def _cache_problem(cache_path: Path, sources: list[dict]) -> str | None:
    """None when the cache at ``cache_path`` is built from ``sources`` and intact; else why not."""
    index_path = cache_path / "index.json"
    if not index_path.is_file():
        return "no cache yet"
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "its index.json is unreadable"
    if not isinstance(index, dict) or index.get("cache_format") != CACHE_FORMAT:
        return "it was written by another vlbench version"
    if index.get("sources") != sources:
        return "the feature TSVs changed"
    if index.get("checksum") != _index_checksum(index):
        return "its index.json does not match its checksum"
    try:
        stamps = _file_stamps(cache_path)
    except OSError:
        return "a cache file is missing"
    for name, stamp in stamps.items():
        expected = index.get("files", {}).get(name)
        if expected is None or expected["bytes"] != stamp["bytes"]:
            return f"{name}.npy is truncated or has the wrong size"
        if expected["sample"] != stamp["sample"]:
            return f"{name}.npy does not match its checksum"
    return None


def _cache_matches(cache_path: Path, sources: list[dict]) -> bool:
    return _cache_problem(cache_path, sources) is None


class _NpyAppender:
    """Append rows to a ``.npy`` file whose header (with the final shape) is written last."""

    def __init__(self, path: Path, dtype: str, width: int | None):
        self.path, self.dtype, self.width = path, np.dtype(dtype), width
        self.rows = 0
        self._f = open(path, "wb")  # closed in finish()
        self._f.write(b"\0" * _HEADER_BYTES)

    def append(self, array: np.ndarray) -> None:
        self._f.write(np.ascontiguousarray(array, dtype=self.dtype).tobytes())
        self.rows += int(array.shape[0])

    def finish(self, width: int | None = None) -> None:
        width = self.width if width is None else width
        shape = (self.rows,) if width is None else (self.rows, width)
        header = f"{{'descr': '{self.dtype.str}', 'fortran_order': False, 'shape': {shape}, }}"
        # magic (6) + version (2) + header length (2) + padded header ending in newline
        header = header.ljust(_HEADER_BYTES - 10 - 1) + "\n"
        self._f.seek(0)
        self._f.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode())
        self._f.flush()
        os.fsync(self._f.fileno())  # the index's checksums must describe what is on disk
        self._f.close()

    def close(self) -> None:
        """Close without a header (the build failed; the directory is removed)."""
        self._f.close()


def _build_cache(paths: list, sources: list[dict], cache_path: Path) -> None:
    """Stream every TSV into a fresh cache directory, then move it into place atomically."""
    tmp = cache_path.with_name(cache_path.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        _fill_cache(paths, sources, tmp)
        if cache_path.exists():
            shutil.rmtree(cache_path, ignore_errors=True)  # stale or damaged
        try:
            os.replace(tmp, cache_path)
        except OSError:
            # Another process finished the same build first: use its cache.
            if not _cache_matches(cache_path, sources):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _fill_cache(paths: list, sources: list[dict], out: Path) -> None:
    writers = {
        name: _NpyAppender(out / f"{name}.npy", dtype, {"features": None, "boxes": 4}.get(name))
        for name, dtype in _ARRAY_DTYPES.items()
    }
    try:
        _stream_into(paths, sources, out, writers)
    finally:
        for writer in writers.values():
            writer.close()


class _Audit:
    """What the build saw: counts, and the first place of each kind of problem."""

    def __init__(self) -> None:
        self.num_boxes = 0
        self.non_finite: dict[str, Any] | None = None
        self.boxes_outside: dict[str, Any] | None = None
        self.duplicates: dict[str, Any] | None = None
        self._seen: dict[str, str] = {}  # img_id -> "path:line" of its first row

    def add(self, record: RegionRecord, where: str) -> None:
        self.num_boxes += record.num_boxes
        bad = first_non_finite(record)
        if bad is not None:
            if self.non_finite is None:
                self.non_finite = {"where": where, "img_id": record.img_id, "detail": bad, "rows": 0}
            self.non_finite["rows"] += 1
        finite = np.isfinite(record.boxes).all(axis=1)
        overhang = box_overhang(record.boxes[finite], record.img_w, record.img_h)
        outside = int((overhang > 0).sum())
        if outside:
            worst = float(overhang.max())
            box = self.boxes_outside
            if box is None or worst > box["max_px"]:
                count = box["count"] if box else 0
                box = self.boxes_outside = {"where": where, "img_id": record.img_id,
                                            "img_w": record.img_w, "img_h": record.img_h,
                                            "max_px": worst, "count": count}
            box["count"] += outside
        first = self._seen.setdefault(record.img_id, where)
        if first != where:
            if self.duplicates is None:
                self.duplicates = {"img_id": record.img_id, "first": first, "again": where,
                                   "count": 0}
            self.duplicates["count"] += 1

    def to_json(self) -> dict[str, Any]:
        return {"num_boxes": self.num_boxes, "non_finite": self.non_finite,
                "boxes_outside": self.boxes_outside, "duplicates": self.duplicates}


def _stream_into(paths: list, sources: list[dict], out: Path, writers: dict) -> None:
    ids: list[str] = []
    offsets = [0]
    sizes: list[tuple[int, int]] = []
    feat_dim: int | None = None
    max_boxes = 0
    content = hashlib.sha256()
    audit = _Audit()
    for path in paths:
        for record, line_no in _hashed_records(Path(path), content):
            n = record.num_boxes
            if n and feat_dim is None:
                feat_dim = record.feat_dim
            elif n and record.feat_dim != feat_dim:
                raise DataError(
                    f"{path}:{line_no}: image '{record.img_id}' has {record.feat_dim}-d "
                    f"features but earlier rows have {feat_dim}-d; use TSVs from one detector"
                )
            audit.add(record, f"{path}:{line_no}")
            # Every row is kept, repeated ids too: which one counts is chosen when opening.
            ids.append(record.img_id)
            sizes.append((record.img_h, record.img_w))
            offsets.append(offsets[-1] + n)
            max_boxes = max(max_boxes, n)
            if n:
                writers["features"].append(record.features)
            writers["boxes"].append(normalise_boxes(record.boxes, record.img_w, record.img_h))
            for name in ("objects_id", "objects_conf", "attrs_id", "attrs_conf"):
                writers[name].append(getattr(record, name))
    if not ids:
        names = ", ".join(str(p) for p in paths)
        raise DataError(f"{names}: no image rows found; the feature TSV is empty")
    feat_dim = feat_dim or 0
    for name, writer in writers.items():
        writer.finish(feat_dim if name == "features" else None)
    np.save(out / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    np.save(out / "sizes.npy", np.asarray(sizes, dtype=np.int64).reshape(-1, 2))
    index = {
        "cache_format": CACHE_FORMAT,
        "columns": FIELDNAMES,
        "sources": sources,
        "fingerprint": "sha256:" + content.hexdigest(),
        "feat_dim": feat_dim,
        "max_boxes": max_boxes,
        "num_images": len(set(ids)),
        "num_rows": len(ids),
        "num_regions": offsets[-1],
        "duplicates": len(ids) - len(set(ids)),
        "audit": audit.to_json(),
        "files": _file_stamps(out),
        "ids": ids,
    }
    index["checksum"] = _index_checksum(index)
    with open(out / "index.json", "w", encoding="utf-8") as f:
        json.dump(index, f)
        f.flush()
        os.fsync(f.fileno())


def _hashed_records(path: Path, content) -> Iterator[tuple]:
    """Records of one TSV with each raw row also fed to the content hash.

    Non-finite values do not stop the build: the audit records them and opening reports them
    (so ``vlbench data check`` can count them).
    """
    for line_no, row in iter_rows(path):
        content.update("\t".join(row).encode())
        content.update(b"\n")
        yield parse_row(row, path, line_no, finite=False), line_no


def content_fingerprint(tsv_paths: Iterable[str | os.PathLike]) -> str:
    """``sha256:<hex>`` of the TSV rows (same value as :attr:`FeatureStore.fingerprint`)."""
    content = hashlib.sha256()
    for path in tsv_paths:
        for _, row in iter_rows(Path(path)):
            content.update("\t".join(row).encode())
            content.update(b"\n")
    return "sha256:" + content.hexdigest()
