"""Check a data directory for a task without training: every reader, every feature check.

:func:`check_data` (``vlbench data check``) reads each split with the task's own readers,
audits the feature TSVs through the feature store (non-finite values, boxes outside their
image, image ids given twice, images with more regions than ``data.max_boxes``), builds the
tokenizer, sets the task up as training would, then cross-checks questions against features
and words against the vocabulary. It collects everything into one :class:`DataReport`
whose :attr:`~DataReport.status` a script can test: 0 clean, 1 problems found, 2 a file
could not be read.

:func:`preflight` is the part training runs before building anything (the readers and the
feature audit), so a broken directory fails in seconds with the first problem.

Tasks are reached through :data:`vlbench.registry.TASKS` and the task protocol only. The
per-question cross-checks read the example attributes the built-in tasks share (``img_id``
or ``img0``/``img1``; ``question``, ``sentence`` or ``sent``); examples with none of them
are counted but not cross-checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlbench.config import DataConfig, RunConfig, set_dotted, validate_section
from vlbench.data.features import FeatureStore
from vlbench.data.source import DataSource, cache_root, resolve_data
from vlbench.errors import DataError
from vlbench.registry import TASKS

if TYPE_CHECKING:
    from vlbench.engine.task import Task

Say = Callable[[str], None]

#: finding levels, from the one that decides the exit status down
UNREADABLE, PROBLEM, WARNING = "unreadable", "problem", "warning"
STATUS = {UNREADABLE: 2, PROBLEM: 1, WARNING: 0}

_IMAGE_FIELDS = ("img_id", "img0", "img1")
_TEXT_FIELDS = ("question", "sentence", "sent")
_WORD = re.compile(r"[^\W_]+")  # letters and digits: the words of BERT's basic tokenizer


@dataclass
class Finding:
    """One thing the check found: its level and a one-line message naming where."""

    level: str
    message: str


@dataclass
class SplitStats:
    """Counts for one split (None where the split could not be read)."""

    name: str
    examples: int | None = None
    labelled: int | None = None
    images: int | None = None
    missing: int | None = None  # examples with an image the features lack
    coverage: float | None = None  # share of question words in the vocabulary


@dataclass
class DataReport:
    """Everything :func:`check_data` found about one task's data."""

    task: str
    source: str
    splits: list[SplitStats] = field(default_factory=list)
    features: dict[str, Any] = field(default_factory=dict)
    vocabulary: str = ""
    findings: list[Finding] = field(default_factory=list)

    @property
    def status(self) -> int:
        """0 clean (warnings allowed), 1 problems found, 2 some file unreadable."""
        return max((STATUS[f.level] for f in self.findings), default=0)

    def add(self, level: str, message: str) -> None:
        self.findings.append(Finding(level, message))


# -- configuration ----------------------------------------------------------------------------


def data_config(task_cls: Any, data: DataSource, overrides: dict[str, str] | None = None
                ) -> tuple[Any, DataConfig]:
    """The task and data sections of a run's config (task defaults < data-source defaults <
    the task's synthetic defaults < ``overrides``), without a model; other sections' keys are
    ignored, since nothing is trained."""
    from vlbench.engine.task import default_layers

    cfg = RunConfig(model=None, task=task_cls.config_class())
    for where, values in [*default_layers(task_cls, data), ("--set", dict(overrides or {}))]:
        for key, value in values.items():
            if key.partition(".")[0] not in ("model", "train"):  # unknown sections: an error
                set_dotted(cfg, key, value, where=where)
        if hasattr(cfg.task, "validate"):
            cfg.task.validate()
        validate_section(cfg.data, "data", where)
    cfg.data.source = data.label
    return cfg.task, cfg.data


def feature_cache(data_cfg: DataConfig) -> Path:
    """Where the feature store of a run with ``data_cfg`` lives."""
    return Path(data_cfg.cache_dir) if data_cfg.cache_dir else cache_root() / "features"


def open_store(data: DataSource, data_cfg: DataConfig, *, validate: bool = True) -> FeatureStore:
    """The feature store a run with ``data_cfg`` reads (its policies for crowded images and
    repeated ids applied); with ``validate`` the audit's errors raise :class:`DataError`."""
    return FeatureStore.open(data.feature_files(data_cfg.features), feature_cache(data_cfg),
                             duplicate_ids=data_cfg.duplicate_ids, box_order=data_cfg.box_order,
                             validate=validate)


def crowded_note(store: FeatureStore, max_boxes: int, box_order: str) -> str | None:
    """The warning for images with more regions than ``max_boxes`` (None when there are none)."""
    n, most = store.crowded(max_boxes)
    if not n:
        return None
    kept = ("the first rows of its TSV line" if box_order == "file"
            else "the most confident (objects_conf)")
    other = "confidence" if box_order == "file" else "file"
    return (f"{n} of {len(store)} images have more than data.max_boxes={max_boxes} regions (up to "
            f"{most}); each keeps {max_boxes}: {kept} (data.box_order={box_order}; "
            f"--set data.box_order={other} to change, or raise data.max_boxes; LXMERT uses all)")


# -- the check training runs first ------------------------------------------------------------


def preflight(task: Task, data: DataSource, cfg: RunConfig, say: Say = print,
              regions: bool = True) -> FeatureStore | None:
    """Read every split and audit the features (a run that reads ``regions``) before a run
    builds anything.

    Raises :class:`DataError` with the first problem; says the warnings once. Cheap when the
    feature cache exists (the audit is stored with it) and the task keeps what it read.
    """
    for split in dict.fromkeys([task.train_split, *task.eval_splits]):
        task.examples(split)
    if not regions:
        return None
    store = open_store(data, cfg.data)
    notes = [*store.warnings(), crowded_note(store, cfg.data.max_boxes, cfg.data.box_order)]
    for note in notes:
        if note:
            say(f"warning: {note}")
    return store


# -- the full report ----------------------------------------------------------------------------


def check_data(task_name: str, data_dir: str | Path | None = None, *,
               overrides: dict[str, str] | None = None, say: Say = print) -> DataReport:
    """Run every reader and every data check of ``task_name`` over ``data_dir`` (None: the
    embedded synthetic benchmark) and report; never trains. Unknown tasks and bad ``overrides``
    raise (a usage error, not a data problem)."""
    task_cls = TASKS.get(task_name)
    data = resolve_data(data_dir, say=say)
    task_cfg, data_cfg = data_config(task_cls, data, overrides)
    task = task_cls(task_cfg, data)
    report = DataReport(task=task_name, source=str(data.root))
    names = list(dict.fromkeys([task.train_split, *task.eval_splits]))
    splits = {name: SplitStats(name) for name in names}
    report.splits = list(splits.values())

    read: dict[str, list[Any]] = {}
    for name in names:
        try:
            read[name] = list(task.examples(name))
        except DataError as exc:
            report.add(UNREADABLE, str(exc))

    store = _check_features(report, data, data_cfg)
    tokenizer = _check_tokenizer(report, read.get(task.train_split), data_cfg)
    if store is not None and tokenizer is not None and len(read) == len(names):
        try:  # as training does: the answer table, the majority label, image ids settled
            task.setup(tokenizer, store, max_boxes=data_cfg.max_boxes)
            read = {name: list(task.examples(name)) for name in names}
        except DataError as exc:
            report.add(PROBLEM, str(exc))
    for name, examples in read.items():
        _split_stats(report, splits[name], examples, store)
    _check_vocabulary(report, splits, read, task.train_split, data_cfg)
    return report


def _check_features(report: DataReport, data: DataSource, data_cfg: DataConfig
                    ) -> FeatureStore | None:
    try:
        files = data.feature_files(data_cfg.features)
        store = open_store(data, data_cfg, validate=False)
    except DataError as exc:
        report.add(UNREADABLE, str(exc))
        return None
    audit = store.audit
    crowded, most = store.crowded(data_cfg.max_boxes)
    report.features = {
        "files": [str(f) for f in files],
        "images": len(store),
        "regions": store.num_regions,
        "feat_dim": store.feat_dim,
        "max_regions": most,
        "crowded": crowded,
        "max_boxes": data_cfg.max_boxes,
        "non_finite": (audit.get("non_finite") or {}).get("rows", 0),
        "boxes_outside": (audit.get("boxes_outside") or {}).get("count", 0),
        "boxes_outside_px": (audit.get("boxes_outside") or {}).get("max_px", 0.0),
        "duplicates": store.duplicates,
    }
    for message in store.errors():
        report.add(PROBLEM, message)
    for message in store.warnings():
        report.add(WARNING, message)
    note = crowded_note(store, data_cfg.max_boxes, data_cfg.box_order)
    if note:
        report.add(WARNING, note)
    return store


def _check_tokenizer(report: DataReport, train: list[Any] | None, data_cfg: DataConfig) -> Any:
    from vlbench.data.tokenizer import build_tokenizer

    if train is None:
        return None
    try:
        return build_tokenizer(data_cfg.vocab, (_text(ex) for ex in train), data_cfg.vocab_size,
                               data_cfg.max_seq_len)
    except DataError as exc:
        report.add(UNREADABLE, f"data.vocab: {exc}")
        return None


def _split_stats(report: DataReport, stats: SplitStats, examples: list[Any],
                 store: FeatureStore | None) -> None:
    stats.examples = len(examples)
    stats.labelled = sum(1 for ex in examples if _labelled(ex))
    images = [_images(ex) for ex in examples]
    stats.images = len({i for imgs in images for i in imgs})
    if not examples:
        report.add(PROBLEM, f"split '{stats.name}' has no examples")
    if store is None or not any(images):
        return
    missing = [(ex, [i for i in imgs if i not in store]) for ex, imgs in zip(examples, images, strict=True)]
    missing = [(ex, ids) for ex, ids in missing if ids]
    stats.missing = len(missing)
    if missing:
        example_ids = sorted({i for _, ids in missing for i in ids})
        files = ", ".join(s["path"] for s in store.sources)
        report.add(PROBLEM, f"split '{stats.name}': {len(missing)} of {len(examples)} examples use "
                   f"images with no features in {files} ({len(example_ids)} image ids, e.g. "
                   f"{', '.join(example_ids[:3])}); add their regions or fix data.features")


def _check_vocabulary(report: DataReport, splits: dict[str, SplitStats],
                      read: dict[str, list[Any]], train_split: str, data_cfg: DataConfig) -> None:
    if data_cfg.vocab != "train":
        path = Path(data_cfg.vocab).expanduser()
        try:
            vocab = {line.strip() for line in path.read_text(encoding="utf-8").splitlines()}
        except (OSError, UnicodeDecodeError):
            return  # the tokenizer check said why
        report.vocabulary = f"tokenizer vocabulary {path} ({len(vocab)} tokens)"
    elif train_split in read:
        vocab = {w for ex in read[train_split] for w in _words(_text(ex))}
        report.vocabulary = f"words of the training split '{train_split}' ({len(vocab)} words)"
    else:
        return
    for name, examples in read.items():
        words = [w for ex in examples for w in _words(_text(ex))]
        if words:
            splits[name].coverage = 100.0 * sum(w in vocab for w in words) / len(words)


def _images(example: Any) -> list[str]:
    return [v for name in _IMAGE_FIELDS if isinstance(v := getattr(example, name, None), str)]


def _text(example: Any) -> str:
    for name in _TEXT_FIELDS:
        value = getattr(example, name, None)
        if isinstance(value, str):
            return value
    return ""


def _labelled(example: Any) -> bool:
    return bool(getattr(example, "label", None))


def _words(text: str) -> Iterable[str]:
    return _WORD.findall(text.lower())
