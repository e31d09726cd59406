"""MMF's data formats: annotation databases (imdb ``.npy``) and region features in LMDB.

MMF keeps questions in an "imdb": a ``.npy`` object array written by ``np.save``, whose
first element is usually a metadata dict and every other element one dict per question
(``image_name``/``image_id``, ``question_id``, ``question_str`` or ``question``,
``question_tokens``, ``all_answers``/``answers``/``valid_answers``, ``feature_path``). A
newer variant is a 0-d array holding ``{"metadata": ..., "data": [...]}``.

Region features live in one LMDB environment: key = image id or feature path (bytes), value
= a pickled dict with ``features`` (N x D float), ``bbox`` or ``boxes`` (N x 4, pixel
``x1, y1, x2, y2``), ``image_width``, ``image_height`` and optionally ``num_boxes``,
``objects`` and ``cls_prob`` (what MMF's ``extract_features_vmb.py`` and
``lmdb_conversion.py`` write). Some databases also hold a ``keys`` entry listing the keys.

Both formats are pickles, and unpickling runs whatever the file names. Nothing here calls
``np.load(allow_pickle=True)`` or ``pickle.loads``: :class:`SafeUnpickler` builds plain
containers and numpy arrays and refuses every other global with a one-line
:class:`~vlbench.errors.DataError`.

:func:`import_mmf` turns an imdb per split plus the LMDB into what vlbench reads: an
LXMERT feature TSV under ``features/`` and LXMERT's preprocessed JSON splits under
``{task}/lxmert/``.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import pickle
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from vlbench.data.tsv import RegionRecord, write_tsv
from vlbench.errors import DataError, VLBenchError
from vlbench.results.records import write_json_atomic

#: tasks whose LXMERT JSON :func:`import_mmf` writes
TASKS = ("vqa", "gqa")

#: LXMERT's GQA files name the validation split "valid" (what ``tasks/gqa`` looks for)
_GQA_FILE_NAMES = {"val": "valid"}

#: the LMDB entry some MMF databases use to list their keys; it is not an image
KEYS_ENTRY = b"keys"

#: placeholder MMF puts in ``valid_answers`` when no annotator answer is in its vocabulary
_UNKNOWN_ANSWER = "<unk>"

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# -- restricted unpickling -----------------------------------------------------------------

def _latin1_bytes(text: Any, encoding: str = "latin1") -> bytes:
    """Stand-in for ``_codecs.encode``, which protocol-2 pickles use to rebuild ``bytes``."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError("_codecs.encode is allowed for latin-1 text only")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """(module, name) -> object for everything a pickle of containers and arrays may name."""
    try:  # numpy >= 2 keeps the internals in numpy._core; older pickles say numpy.core
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("_codecs", "encode"): _latin1_bytes,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    # Python 2 pickles say __builtin__; protocols 0-3 name set/frozenset as globals.
    for module in ("builtins", "__builtin__"):
        for name, obj in (("set", set), ("frozenset", frozenset), ("list", list),
                          ("dict", dict), ("tuple", tuple), ("bytearray", bytearray)):
            allowed[(module, name)] = obj
    return allowed


_ALLOWED = _allowed_globals()


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds containers, strings, numbers and numpy arrays, and nothing else.

    ``where`` names the source (file, and key for LMDB) in the error a refused global raises.
    Allowed globals are looked up in a fixed table, so refusing one never imports a module.
    """

    def __init__(self, file: Any, where: str):
        super().__init__(file)
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        """Return an allowed global; raise :class:`DataError` naming any other."""
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.where}: refused to unpickle global '{module}.{name}'; MMF data may "
                "hold only containers and numpy arrays, so this pickle is corrupt or malicious: "
                "rebuild it from trusted sources"
            ) from None


def safe_load(file: Any, where: str) -> Any:
    """Unpickle one object from a binary file object with :class:`SafeUnpickler`."""
    try:
        return SafeUnpickler(file, where).load()
    except DataError:
        raise
    except Exception as exc:  # untrusted bytes can make the unpickler raise nearly anything
        raise DataError(
            f"{where}: not a readable pickle ({type(exc).__name__}: {_short(exc)}); "
            "the data is truncated or in another format"
        ) from None


def safe_loads(data: bytes, where: str) -> Any:
    """Unpickle ``data`` with :class:`SafeUnpickler` (see :func:`safe_load`)."""
    return safe_load(io.BytesIO(data), where)


def _short(exc: BaseException, limit: int = 120) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- imdb (.npy annotation database) -------------------------------------------------------

@dataclass
class Imdb:
    """An MMF annotation database: its metadata and its question dicts with their positions."""

    path: Path
    metadata: dict[str, Any]
    entries: list[tuple[int, dict[str, Any]]]  # (index in the stored array, question dict)


def read_imdb(path: str | os.PathLike) -> Imdb:
    """Read an MMF imdb ``.npy`` without running any code the file names.

    The ``.npy`` header is parsed with ``numpy.lib.format`` and the object-array payload
    unpickled by :class:`SafeUnpickler`. Element 0 is metadata when it is a dict naming no
    question or image (MMF's ``AnnotationDatabase`` rule); every other element must be a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: imdb not found; pass an MMF annotation .npy (e.g. imdb_train2014.npy)")
    with open(path, "rb") as f:
        try:
            version = npy_format.read_magic(f)
        except ValueError:
            raise DataError(f"{path}: not a .npy file; pass an MMF imdb written by np.save") from None
        try:
            if version == (1, 0):
                shape, _, dtype = npy_format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = npy_format.read_array_header_2_0(f)
            else:
                raise DataError(
                    f"{path}: .npy format version {version[0]}.{version[1]} is not one an "
                    "MMF imdb uses (1.0 or 2.0); re-save it with np.save"
                )
        except ValueError as exc:
            raise DataError(f"{path}: unreadable .npy header ({_short(exc)})") from None
        if not dtype.hasobject:
            raise DataError(
                f"{path}: holds a plain {dtype} array of shape {shape}, not MMF's object array "
                "of question dicts; is this a feature file rather than an imdb?"
            )
        array = safe_load(f, str(path))
    if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
        raise DataError(f"{path}: the pickled payload does not match its .npy header; the file is corrupt")
    return _imdb_from_array(path, array)


def _imdb_from_array(path: Path, array: np.ndarray) -> Imdb:
    metadata: dict[str, Any] = {}
    if array.ndim == 0:  # np.save of {"metadata": ..., "data": [...]}
        item = array.item()
        if not isinstance(item, dict) or not isinstance(item.get("data"), list | tuple | np.ndarray):
            raise DataError(
                f"{path}: a 0-d imdb must hold a dict with a 'data' list of questions; "
                f"found {type(item).__name__}"
            )
        meta = item.get("metadata") or {}
        metadata = dict(meta) if isinstance(meta, dict) else {}
        items = list(item["data"])
        start = 0
    elif array.ndim == 1:
        items = list(array)
        first = items[0] if items else None
        # MMF's rule, widened: a leading dict naming no question and no image is metadata.
        is_meta = isinstance(first, dict) and not (
            {"question_id", "image_id", "image_name", "feature_path"} & set(first)
        )
        if is_meta:
            metadata = dict(first)
        start = 1 if is_meta else 0
    else:
        raise DataError(f"{path}: imdb array has shape {array.shape}; expected a 1-d array of dicts")
    entries = []
    for i in range(start, len(items)):
        if not isinstance(items[i], dict):
            raise DataError(
                f"{path}: element {i} is {type(items[i]).__name__}, expected a question dict; "
                "is this an MMF imdb?"
            )
        entries.append((i, items[i]))
    if not entries:
        raise DataError(f"{path}: the imdb holds no questions")
    return Imdb(path, metadata, entries)


@dataclass
class MMFQuestion:
    """One imdb question, checked: where its image is, what it asks, what annotators said."""

    question_id: int | str
    img_id: str  # the image id written to the JSON and the TSV
    keys: list[str]  # LMDB keys that may hold its image, most likely first
    sent: str
    answers: list[str] | None  # None: the imdb has no answers (a test split)
    extra: dict[str, str] = field(default_factory=dict)  # question_type / answer_type if given
    where: str = ""  # "file: element i", for messages


def imdb_questions(imdb: Imdb, task: str) -> list[MMFQuestion]:
    """Check the fields ``task`` needs in every entry and return the questions.

    The image id follows LXMERT's naming: for VQA the COCO ``image_name``
    (``COCO_train2014_000000458752``), for GQA the ``image_id``. LMDB keys are tried in
    MMF's ``LMDBFeatureReader`` order: the number after the last ``_`` of the feature path,
    the feature path without ``.npy``, then the image id and name.
    """
    if task not in TASKS:
        raise DataError(f"task '{task}': MMF import supports {', '.join(TASKS)}")
    out, seen = [], {}
    for index, entry in imdb.entries:
        where = f"{imdb.path}: element {index}"
        q = _question(entry, task, where)
        if q.question_id in seen:
            raise DataError(
                f"{where}: question_id {q.question_id!r} repeats element {seen[q.question_id]}; "
                "each question may appear once per split"
            )
        seen[q.question_id] = index
        out.append(q)
    return out


def _question(entry: dict[str, Any], task: str, where: str) -> MMFQuestion:
    qid = entry.get("question_id")
    if isinstance(qid, np.integer):
        qid = int(qid)
    elif isinstance(qid, np.str_):
        qid = str(qid)
    if isinstance(qid, bool) or not isinstance(qid, int | str) or qid == "":
        raise DataError(f"{where}: 'question_id' is missing or not an int/str ({qid!r}); is this an MMF imdb?")
    where = f"{where} (question_id {qid})"
    text = entry.get("question_str", entry.get("question"))
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: no question text; expected a non-empty 'question_str' or 'question'")

    image_id = _text_or_int(entry.get("image_id"))
    image_name = _text_or_int(entry.get("image_name"))
    feature_path = _text_or_int(entry.get("feature_path"))
    if not (image_id or image_name or feature_path):
        raise DataError(f"{where}: no 'image_id', 'image_name' or 'feature_path' to find its image by")

    keys: list[str] = []
    if feature_path:
        stem = feature_path.split(".npy")[0]
        tail = stem.rsplit("_", 1)[-1]
        if tail.isascii() and tail.isdigit():
            keys.append(str(int(tail)))
        keys.append(stem)
    keys += [k for k in (image_id, image_name) if k]
    if image_name and "." in image_name:
        keys.append(image_name.rsplit(".", 1)[0])
    keys = list(dict.fromkeys(keys))

    stem_id = Path(feature_path.split(".npy")[0]).name if feature_path else None
    if task == "vqa":  # LXMERT's VQA files name COCO images COCO_<split>_<12-digit id>
        img_id = image_name or stem_id or image_id
    else:  # GQA's image ids are the file names (MMF's GQA image_name is "<id>jpg")
        img_id = image_id or stem_id or image_name
    assert img_id is not None

    answers = _answers(entry, where)
    extra = {k: str(entry[k]) for k in ("question_type", "answer_type") if isinstance(entry.get(k), str)}
    return MMFQuestion(qid, img_id, keys, str(text), answers, extra, where)


def _text_or_int(value: Any) -> str | None:
    """A non-empty string, or an integer as text (numpy scalars included); else None."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | np.integer):
        return str(int(value))
    return str(value) if isinstance(value, str) and value.strip() else None


def _answers(entry: dict[str, Any], where: str) -> list[str] | None:
    # all_answers holds every annotator's answer; valid_answers only those in MMF's vocabulary
    for name in ("all_answers", "answers", "valid_answers"):
        if name not in entry or entry[name] is None:
            continue
        value = entry[name]
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if not isinstance(value, list | tuple):
            raise DataError(f"{where}: '{name}' must be a list of answer strings, found {type(value).__name__}")
        bad = next((a for a in value if not isinstance(a, str)), None)
        if bad is not None:
            raise DataError(f"{where}: '{name}' must be a list of answer strings, found {bad!r}")
        return [a.strip() for a in value if a.strip() and a.strip() != _UNKNOWN_ANSWER]
    return None


def lxmert_label(answers: Sequence[str], task: str,
                 normalise: Callable[[str], str] | None = None) -> dict[str, float]:
    """LXMERT's target for a question's annotator answers.

    VQA: 0.3 / 0.6 / 0.9 / 1.0 for 1 / 2 / 3 / 4+ annotators (``min(1, 0.3 * count)``).
    GQA: its one answer (the most common, should the list disagree) scores 1.0. ``normalise``
    maps each answer first (e.g. VQA's official answer normalisation).
    """
    counts = Counter(normalise(a) if normalise else a for a in answers)
    counts.pop("", None)
    if task == "gqa":
        return {counts.most_common(1)[0][0]: 1.0} if counts else {}
    return {a: min(1.0, round(0.3 * c, 1)) for a, c in sorted(counts.items())}


# -- LMDB region features ------------------------------------------------------------------

class LMDBFeatures:
    """Read-only access to an MMF feature LMDB (a directory, or a single file).

    Opening lists the keys once (checking they are UTF-8); values are unpickled with
    :class:`SafeUnpickler` only when asked for.
    """

    def __init__(self, path: str | os.PathLike):
        try:
            import lmdb
        except ImportError:
            raise DataError(
                "reading MMF features needs the 'lmdb' package; install it with: pip install 'lmdb>=1.4'"
            ) from None
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"{self.path}: LMDB not found; pass the MMF features .lmdb directory or file")
        try:
            self._env = lmdb.open(str(self.path), subdir=self.path.is_dir(), readonly=True,
                                  lock=False, readahead=False, meminit=False, max_readers=1)
        except lmdb.Error as exc:
            raise DataError(f"{self.path}: not a readable LMDB ({_short(exc)}); pass MMF's features .lmdb") from None
        self._keys: dict[str, bytes] = {}
        with self._env.begin(write=False) as txn:
            for raw in txn.cursor().iternext(keys=True, values=False):
                raw = bytes(raw)
                if raw == KEYS_ENTRY:
                    continue
                try:
                    self._keys[raw.decode("utf-8")] = raw
                except UnicodeDecodeError:
                    raise DataError(
                        f"{self.path}: key {raw[:60]!r} is not UTF-8 text; MMF keys are image ids "
                        "or feature paths: rewrite the database with text keys"
                    ) from None

    def __enter__(self) -> LMDBFeatures:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the LMDB environment."""
        self._env.close()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def keys(self) -> list[str]:
        """Every image key, in the database's (byte) order; the ``keys`` listing is left out."""
        return list(self._keys)

    def raw(self, key: str) -> dict[str, Any]:
        """The unpickled value stored under ``key`` (a dict; nothing else is accepted)."""
        where = f"{self.path} key '{key}'"
        if key not in self._keys:
            raise DataError(f"{where}: no such key in the LMDB")
        with self._env.begin(write=False) as txn:
            data = txn.get(self._keys[key])
        value = safe_loads(bytes(data), where)
        if not isinstance(value, dict):
            raise DataError(f"{where}: value is {type(value).__name__}, expected MMF's dict of features and boxes")
        return value

    def record(self, key: str, img_id: str | None = None) -> RegionRecord:
        """The regions stored under ``key`` as a TSV record (``img_id`` defaults to the key)."""
        return region_record(self.raw(key), img_id or key, f"{self.path} key '{key}'")

    def __iter__(self) -> Iterator[RegionRecord]:
        for key in self._keys:
            yield self.record(key)


def region_record(value: dict[str, Any], img_id: str, where: str) -> RegionRecord:
    """Check one MMF feature dict and turn it into an LXMERT TSV record (boxes stay in pixels).

    ``objects`` become the object ids and ``cls_prob`` their confidences (MMF has no
    attributes: ids and confidences are 0, which LXMERT's attribute loss weighs 0).
    """
    features = _matrix(value, ("features",), where, width=None)
    n = features.shape[0]
    boxes = _matrix(value, ("bbox", "boxes"), where, width=4, rows=n)
    img_w = _size(value, ("image_width", "width"), where)
    img_h = _size(value, ("image_height", "height"), where)
    declared = value.get("num_boxes")
    if declared is not None:
        count = _integer(declared)
        # extract_features_vmb.py counts only boxes with a non-zero score, so it may be < n
        if count is None or not 0 <= count <= n:
            raise DataError(f"{where}: num_boxes is {declared!r} but features hold {n} regions; the record is inconsistent")

    objects = value.get("objects")
    cls_prob = value.get("cls_prob")
    probs = None if cls_prob is None else _matrix(value, ("cls_prob",), where, width=None, rows=n)
    if objects is not None:
        objects_id = np.asarray(objects)
        if objects_id.shape != (n,) or objects_id.dtype.kind not in "iu" or (objects_id < 0).any():
            raise DataError(
                f"{where}: field 'objects' must hold {n} non-negative class ids (one per region), "
                f"found {objects_id.dtype} {objects_id.shape}"
            )
        objects_id = objects_id.astype(np.int64)
        if probs is not None and int(objects_id.max(initial=0)) < probs.shape[1]:
            objects_conf = probs[np.arange(n), objects_id]
        elif probs is not None:
            objects_conf = probs.max(axis=1, initial=0.0)
        else:
            objects_conf = np.ones(n, np.float32)  # a detector label with no score given
    elif probs is not None:
        objects_id = probs.argmax(axis=1).astype(np.int64)
        objects_conf = probs.max(axis=1)
    else:
        objects_id, objects_conf = np.zeros(n, np.int64), np.zeros(n, np.float32)
    return RegionRecord(
        img_id=img_id, img_h=img_h, img_w=img_w,
        objects_id=objects_id, objects_conf=np.asarray(objects_conf, np.float32),
        attrs_id=np.zeros(n, np.int64), attrs_conf=np.zeros(n, np.float32),
        boxes=boxes, features=features,
    )


def _matrix(value: dict[str, Any], names: tuple[str, ...], where: str, *, width: int | None,
            rows: int | None = None) -> np.ndarray:
    """A finite 2-D float32 array under the first of ``names`` present, with a checked shape."""
    name = next((k for k in names if value.get(k) is not None), None)
    if name is None:
        keys = ", ".join(sorted(map(str, value))) or "none"
        raise DataError(f"{where}: field {' or '.join(repr(k) for k in names)} is missing (keys: {keys}); is this MMF's feature LMDB?")
    raw = value[name]
    try:
        array = np.asarray(raw)
    except Exception as exc:  # ragged lists and the like
        raise DataError(f"{where}: field '{name}' is not an array ({_short(exc)})") from None
    if array.dtype.kind not in "fiu":
        raise DataError(f"{where}: field '{name}' holds {array.dtype} values, expected numbers")
    if array.ndim != 2:
        raise DataError(f"{where}: field '{name}' has shape {array.shape}, expected 2-D (regions x values)")
    if rows is None and array.shape[0] == 0:
        raise DataError(f"{where}: field '{name}' holds no regions; drop the image or re-extract its features")
    if rows is not None and array.shape[0] != rows:
        raise DataError(
            f"{where}: field '{name}' has {array.shape[0]} rows but features have {rows}; "
            "one row per region is required"
        )
    if width is not None and array.shape[1] != width:
        raise DataError(f"{where}: field '{name}' has shape {array.shape}, expected ({array.shape[0]}, {width})")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, caught below
        out = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(out).all():
        raise DataError(f"{where}: field '{name}' holds NaN or infinite values; re-extract this image's features")
    return out


def _integer(value: Any) -> int | None:
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return int(value)
    if isinstance(value, np.ndarray) and value.size == 1:
        return _integer(value.reshape(()).item())
    return None


def _size(value: dict[str, Any], names: tuple[str, ...], where: str) -> int:
    name = next((k for k in names if k in value), None)
    size = _integer(value[name]) if name else None
    if size is None or size <= 0:
        found = f"is {value[name]!r}" if name else "is missing"
        raise DataError(f"{where}: field '{names[0]}' {found}; boxes are in pixels and need a positive image size")
    return size


# -- import ----------------------------------------------------------------------------------

@dataclass
class ImportSummary:
    """What :func:`import_mmf` wrote (paths relative to ``out``)."""

    out: Path
    task: str
    splits: dict[str, dict[str, Any]]  # split -> {"file", "questions", "labelled"}
    features: str
    images: int
    manifest: str


def lxmert_split_file(task: str, split: str) -> str:
    """Where vlbench's ``task`` looks for LXMERT's JSON of ``split`` (relative to ``--data``)."""
    name = _GQA_FILE_NAMES.get(split, split) if task == "gqa" else split
    return f"{task}/lxmert/{name}.json"


def task_answer_normaliser(task: str) -> Callable[[str], str] | None:
    """The answer normalisation the registered ``task`` declares, if any.

    A task plugin may set ``normalise_answer`` (a ``str -> str`` callable, e.g. VQA's official
    normalisation, which LXMERT's preprocessed labels are keyed by) on its class.
    """
    from vlbench.registry import TASKS

    try:
        fn = getattr(TASKS.get(task), "normalise_answer", None)
    except VLBenchError:  # an unknown task is reported where the task is checked
        return None
    return fn if callable(fn) else None


def import_mmf(task: str, imdbs: dict[str, str | os.PathLike], lmdbs: Sequence[str | os.PathLike],
               out: str | os.PathLike, *, force: bool = False,
               normalise_answer: Callable[[str], str] | None = None,
               say: Callable[[str], Any] = lambda _msg: None) -> ImportSummary:
    """Convert MMF imdbs (one per split) and feature LMDBs into a vlbench data directory.

    Writes ``out/features/mmf.tsv`` (LXMERT feature TSV of every image the questions use),
    ``out/{task}/lxmert/{split}.json`` (LXMERT's preprocessed splits: ``question_id``,
    ``img_id``, ``sent``, ``label``) and ``out/mmf_import.json`` (the sources and counts).
    Every imdb is checked before the first file is written, and each file appears
    atomically; a failure leaves no new directory behind. ``out`` must be empty or absent
    unless ``force`` (files of the same names are then replaced, others kept).
    ``normalise_answer`` keys labels (default: the task's own, see
    :func:`task_answer_normaliser`; answers are otherwise kept as the imdb spells them).
    """
    if task not in TASKS:
        raise DataError(f"--task {task}: MMF import supports {', '.join(TASKS)}")
    if not imdbs:
        raise DataError("no imdb given; pass --imdb SPLIT=FILE.npy once per split")
    if not lmdbs:
        raise DataError("no LMDB given; pass --lmdb with MMF's features .lmdb")
    for split in imdbs:
        if not _SPLIT_NAME.match(split):
            raise DataError(f"split name '{split}': use letters, digits, '_', '-' or '.' (it names a file)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise DataError(f"--out {out}: directory is not empty; choose a new one or pass --force to overwrite")

    normalise = normalise_answer or task_answer_normaliser(task)

    questions: dict[str, list[MMFQuestion]] = {}
    for split, path in imdbs.items():
        say(f"Reading imdb {path} ({split}) ...")
        questions[split] = imdb_questions(read_imdb(path), task)

    created = [d for d in (out, out / "features", out / task, out / task / "lxmert") if not d.exists()]
    try:
        with contextlib.ExitStack() as stack:
            stores = [stack.enter_context(LMDBFeatures(p)) for p in lmdbs]
            images = _locate_images(questions, stores)
            features_rel = "features/mmf.tsv"
            say(f"Writing {len(images)} images' regions to {out / features_rel} ...")
            _write_features(out / features_rel, images, stores)

        splits: dict[str, dict[str, Any]] = {}
        for split, qs in questions.items():
            rel = lxmert_split_file(task, split)
            rows = [_lxmert_row(q, task, normalise) for q in qs]
            write_json_atomic(out / rel, rows)
            splits[split] = {"file": rel, "questions": len(rows),
                             "labelled": sum(1 for r in rows if r.get("label"))}
    except BaseException:
        # A failed import should not leave a half-filled --out that the next try must --force.
        for folder in reversed(created):
            if folder == out:
                shutil.rmtree(folder, ignore_errors=True)  # it did not exist: all inside is ours
            else:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if still empty
        raise
    manifest_rel = "mmf_import.json"
    write_json_atomic(out / manifest_rel, {
        "format": "mmf",
        "task": task,
        "imdb": {s: str(Path(p).resolve()) for s, p in imdbs.items()},
        "lmdb": [str(Path(p).resolve()) for p in lmdbs],
        "features": {"file": features_rel, "images": len(images)},
        "splits": splits,
        "answers": "normalised by the task" if normalise else "as written in the imdb",
    })
    return ImportSummary(out, task, splits, features_rel, len(images), manifest_rel)


def _locate_images(questions: dict[str, list[MMFQuestion]],
                   stores: Sequence[LMDBFeatures]) -> dict[str, tuple[int, str]]:
    """img_id -> (store index, LMDB key) for every image the questions use, in first-use order."""
    found: dict[str, tuple[int, str]] = {}
    missing: list[MMFQuestion] = []
    for qs in questions.values():
        for q in qs:
            hit = next(((i, k) for k in q.keys for i, s in enumerate(stores) if k in s), None)
            if hit is None:
                missing.append(q)
                continue
            if q.img_id in found and found[q.img_id] != hit:
                key = found[q.img_id][1]
                raise DataError(
                    f"{q.where}: image '{q.img_id}' is found under LMDB key '{hit[1]}' here but "
                    f"under '{key}' for an earlier question; the imdbs name images inconsistently"
                )
            found.setdefault(q.img_id, hit)
    if missing:
        q = missing[0]
        raise DataError(
            f"{len(missing)} question(s) use images missing from the LMDB "
            f"({', '.join(str(s.path) for s in stores)}); e.g. {q.where}: tried keys "
            f"{', '.join(repr(k) for k in q.keys)}; pass the LMDB holding these splits' features"
        )
    return found


def _write_features(path: Path, images: dict[str, tuple[int, str]],
                    stores: Sequence[LMDBFeatures]) -> None:
    records = (stores[i].record(key, img_id) for img_id, (i, key) in images.items())
    try:
        write_tsv(path, records)
    except BaseException:
        # write_tsv renames its temporary file only on success: do not leave it behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path.with_name(path.name + ".tmp"))
        raise


def _lxmert_row(q: MMFQuestion, task: str,
                normalise: Callable[[str], str] | None) -> dict[str, Any]:
    row: dict[str, Any] = {"question_id": q.question_id, "img_id": q.img_id, "sent": q.sent}
    if q.answers is not None:
        row["label"] = lxmert_label(q.answers, task, normalise)
    if task == "vqa":
        row.update(q.extra)
    else:
        row["question_id"] = str(q.question_id)  # GQA ids are strings ("20968379")
    return row
