"""Region features per image id, from LXMERT TSVs through a memory-mapped cache.

The first :meth:`FeatureStore.open` of a set of TSV files streams them once into a cache
directory: one ``.npy`` file per array (all images' regions stacked, opened later as
read-only memmaps) and an ``index.json`` holding image ids, row offsets, image sizes and
the fingerprints of the source files. Later opens reuse the cache while every source
keeps its path, size and modification time, so a 30 GB TSV is read once, and a training
process touches only the pages of the images it batches.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlbench.data.tsv import FIELDNAMES, iter_rows, parse_row
from vlbench.errors import DataError

CACHE_FORMAT = 1
_HEADER_BYTES = 128  # fixed .npy header size, so the header can be written after the data
_ARRAY_DTYPES = {
    "features": "<f4",
    "boxes": "<f4",  # normalised to [0, 1]
    "objects_id": "<i8",
    "objects_conf": "<f4",
    "attrs_id": "<i8",
    "attrs_conf": "<f4",
}


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


class FeatureStore:
    """Read-only region features for a fixed set of images, backed by memory-mapped arrays."""

    def __init__(self, cache_path: Path):
        index_path = cache_path / "index.json"
        with open(index_path, encoding="utf-8") as f:
            self._index = json.load(f)
        self.path = cache_path
        self.ids: list[str] = self._index["ids"]
        self._row = {img_id: i for i, img_id in enumerate(self.ids)}
        self._arrays = {
            name: np.load(cache_path / f"{name}.npy", mmap_mode="r") for name in _ARRAY_DTYPES
        }
        self._offsets = np.load(cache_path / "offsets.npy")
        self._sizes = np.load(cache_path / "sizes.npy")  # (N, 2) img_h, img_w
        self.feat_dim: int = int(self._index["feat_dim"])
        self.max_boxes: int = int(self._index["max_boxes"])
        self.fingerprint: str = self._index["fingerprint"]
        self.sources: list[dict] = self._index["sources"]
        self.duplicates: int = int(self._index.get("duplicates", 0))

    # -- building / reusing the cache -------------------------------------------------------

    @classmethod
    def open(cls, tsv_paths: str | os.PathLike | Sequence[str | os.PathLike],
             cache_dir: str | os.PathLike) -> FeatureStore:
        """Open the store for ``tsv_paths``, building its cache under ``cache_dir`` if needed.

        The cache is reused when every TSV still has the path, size and mtime it was built
        from; otherwise it is rebuilt (streaming, one pass per file).
        """
        paths = [tsv_paths] if isinstance(tsv_paths, str | os.PathLike) else list(tsv_paths)
        if not paths:
            raise DataError("FeatureStore.open: no feature TSV given; pass at least one *_obj36.tsv")
        sources = [_source_stamp(Path(p)) for p in paths]
        key = hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest()[:16]
        cache_path = Path(cache_dir) / f"regions-{key}"
        if _cache_matches(cache_path, sources):
            return cls(cache_path)
        _build_cache(paths, sources, cache_path)
        return cls(cache_path)

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

    def batch(self, img_ids: Sequence[str], max_boxes: int | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stack images into ``feats (B,R,D)``, ``boxes (B,R,4)``, ``mask (B,R)`` (float32).

        ``R`` is ``max_boxes`` (default: the store's largest image). Missing regions are
        zeros with mask 0; images with more regions keep their first ``R`` (detectors list
        regions by confidence).
        """
        r = self.max_boxes if max_boxes is None else int(max_boxes)
        b = len(img_ids)
        feats = np.zeros((b, r, self.feat_dim), dtype=np.float32)
        boxes = np.zeros((b, r, 4), dtype=np.float32)
        mask = np.zeros((b, r), dtype=np.float32)
        for j, img_id in enumerate(img_ids):
            i = self._row_of(img_id)
            lo = int(self._offsets[i])
            n = min(int(self._offsets[i + 1]) - lo, r)
            feats[j, :n] = self._arrays["features"][lo:lo + n]
            boxes[j, :n] = self._arrays["boxes"][lo:lo + n]
            mask[j, :n] = 1.0
        return feats, boxes, mask


# -- cache construction -----------------------------------------------------------------------


def _source_stamp(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: feature TSV not found; check the --data directory or the path")
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _cache_matches(cache_path: Path, sources: list[dict]) -> bool:
    index_path = cache_path / "index.json"
    if not index_path.is_file():
        return False
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    except (OSError, json.JSONDecodeError):
        return False
    return index.get("cache_format") == CACHE_FORMAT and index.get("sources") == sources


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
            shutil.rmtree(cache_path, ignore_errors=True)  # stale: sources changed
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


def _stream_into(paths: list, sources: list[dict], out: Path, writers: dict) -> None:
    ids: list[str] = []
    seen: set[str] = set()
    offsets = [0]
    sizes: list[tuple[int, int]] = []
    feat_dim: int | None = None
    max_boxes = duplicates = 0
    content = hashlib.sha256()
    for path in paths:
        for record, line_no in _hashed_records(Path(path), content):
            if record.img_id in seen:
                duplicates += 1  # LXMERT's dict-of-rows keeps one; we keep the first
                continue
            n = record.num_boxes
            if n and feat_dim is None:
                feat_dim = record.feat_dim
            elif n and record.feat_dim != feat_dim:
                raise DataError(
                    f"{path}:{line_no}: image '{record.img_id}' has {record.feat_dim}-d "
                    f"features but earlier rows have {feat_dim}-d; use TSVs from one detector"
                )
            seen.add(record.img_id)
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
        "num_images": len(ids),
        "num_regions": offsets[-1],
        "duplicates": duplicates,
        "ids": ids,
    }
    with open(out / "index.json", "w", encoding="utf-8") as f:
        json.dump(index, f)


def _hashed_records(path: Path, content) -> Iterator[tuple]:
    """Records of one TSV with each raw row also fed to the content hash."""
    for line_no, row in iter_rows(path):
        content.update("\t".join(row).encode())
        content.update(b"\n")
        yield parse_row(row, path, line_no), line_no


def content_fingerprint(tsv_paths: Iterable[str | os.PathLike]) -> str:
    """``sha256:<hex>`` of the TSV rows (same value as :attr:`FeatureStore.fingerprint`)."""
    content = hashlib.sha256()
    for path in tsv_paths:
        for _, row in iter_rows(Path(path)):
            content.update("\t".join(row).encode())
            content.update(b"\n")
    return "sha256:" + content.hexdigest()
