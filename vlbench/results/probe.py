"""Linear probes: what the frozen states of a backbone know about regions and images.

Each backbone (a run, a checkpoint in any format :func:`vlbench.load_model` reads, or a freshly
initialised registered model) encodes the same images; a logistic regression on standardised
states is then cross-validated against properties nobody trained it on:

- per region (``.vision``, one row per real region): the detector's object and attribute
  labels from the feature TSV and, where a task's data annotates its images' objects
  (``Task.scene_objects``: GQA's scene graphs, which the synthetic worlds write too), the
  true category and attributes (color, material, size);
- per image (``.pooled``): the number of objects and whether each of the most frequent
  categories is present.

Folds are over images (an image's regions never sit on both sides), stratified, shuffled
with a fixed seed and the same for every backbone, so the columns of a table differ only in
the states. Accuracy is reported in percent with a t interval over folds, next to the
majority-class baseline scored on the same folds.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlbench.data.jsonio import read_json
from vlbench.errors import ConfigError, DataError, VLBenchError
from vlbench.results.records import write_text_atomic
from vlbench.results.stats import Interval, t_interval

#: images probed by default: three tiny backbones on the embedded world take about 16 s of one
#: CPU core (most of it the 5-fold fits); fewer images widen the image-level intervals
DEFAULT_IMAGES = 1000
DEFAULT_FOLDS = 5
DEFAULT_TOP_CATEGORIES = 5
#: a region takes the properties of the scene object it overlaps at least this much (IoU)
MIN_IOU = 0.5
#: ids of [CLS] and [SEP] when no tokenizer comes with a backbone: BERT-base-uncased's for
#: its 30522-piece vocabulary, else the order of vlbench's special tokens
BERT_CLS_SEP = (101, 102)
VLBENCH_CLS_SEP = (2, 3)
REGION, IMAGE = "region", "image"
DETECTOR, SCENE = "detector", "scene graph"

Say = Callable[[str], None]


# -- what is probed -------------------------------------------------------------------------------


@dataclass
class Subject:
    """One backbone to probe, with the token ids of its empty sentence."""

    label: str
    kind: str  # "run", "checkpoint" or "random"
    path: str | None
    backbone: nn.Module
    cls_sep: tuple[int, int]
    command: str | None = None  # how a run was made (its run.json provenance)
    record: dict[str, Any] | None = None  # the run's run.json, when there is one

    def describe(self) -> dict[str, Any]:
        """What the JSON report says about this backbone."""
        return {"label": self.label, "kind": self.kind, "path": self.path, "command": self.command,
                "run_id": (self.record or {}).get("run_id"),
                "hidden_size": int(self.backbone.config.hidden_size)}


def run_dir_of(path: Path) -> Path | None:
    """The run a path stands for: the run itself, or the run a checkpoint folder lies in."""
    for candidate in (path, path.parent.parent):
        if (candidate / "run.json").is_file():
            return candidate
    return None


def empty_sentence_ids(where: Path | None, vocab_size: int) -> tuple[int, int]:
    """Ids of ``[CLS]`` and ``[SEP]``: from the run's ``tokenizer.json`` or a ``vocab.txt`` beside
    the weights, else by convention (BERT's for a 30522-piece table, vlbench's otherwise)."""
    from vlbench.data.tokenizer import WordPieceTokenizer

    tokenizer = None
    if where is not None and (where / "tokenizer.json").is_file():
        tokenizer = WordPieceTokenizer.load(where / "tokenizer.json")
    elif where is not None and where.is_dir() and (where / "vocab.txt").is_file():
        tokenizer = WordPieceTokenizer.from_vocab(where / "vocab.txt")
    if tokenizer is not None:
        ids = tokenizer.encode_batch([""])["input_ids"][0].tolist()
        return int(ids[0]), int(ids[1])
    return BERT_CLS_SEP if vocab_size == 30522 else VLBENCH_CLS_SEP


def load_subject(path: str | Path, label: str | None = None, say: Say | None = None) -> Subject:
    """A run or checkpoint as a probe subject (any format :func:`vlbench.load_model` reads)."""
    import vlbench

    path = Path(path).expanduser()
    backbone = vlbench.load_model(str(path), say=say)
    run = run_dir_of(path)
    record = read_json(run / "run.json") if run is not None else None
    cls_sep = empty_sentence_ids(run or path, int(getattr(backbone.config, "vocab_size", 0)))
    command = ((record or {}).get("provenance") or {}).get("command")
    name = label or (record or {}).get("run_id") or path.name
    return Subject(name, "run" if record else "checkpoint", str(path), backbone, cls_sep,
                   command, record)


def random_subject(model: str, like: Subject | None, *, feat_dim: int, synthetic: bool, seed: int,
                   label: str | None = None) -> Subject:
    """A freshly initialised backbone of the registered ``model``: the no-pre-training row.

    Sized like ``like`` (the first probed run) when it is of the same family, so the row
    differs from it only in the weights; otherwise the model's preset (the synthetic recipe's
    on a synthetic world) fitted to the features.
    """
    from vlbench.engine.backbone import DataFacts, model_entry

    entry = model_entry(model)
    spec = entry.spec
    if like is not None and isinstance(like.backbone, spec.backbone_class):
        config = dataclasses.replace(like.backbone.config)
        cls_sep = like.cls_sep
    else:
        preset = entry.overrides(synthetic).get("model.preset") or entry.preset
        config = spec.config(preset)
        spec.fit_to_data(config, DataFacts(config.vocab_size, feat_dim), {})
        cls_sep = BERT_CLS_SEP if config.vocab_size == 30522 else VLBENCH_CLS_SEP
    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream as it was
        torch.manual_seed(seed)
        backbone = spec.build(config)
    backbone.eval()
    return Subject(label or f"random {model}", "random", None, backbone, cls_sep,
                   f"random init of {model} (seed {seed})")


# -- the images and their properties ------------------------------------------------------------


@dataclass
class Target:
    """A property to probe: one label per region or per image (``""``: unknown, not probed)."""

    name: str
    level: str  # REGION or IMAGE
    source: str  # DETECTOR or SCENE
    labels: np.ndarray  # str


@dataclass
class ProbeData:
    """The probed images: backbone inputs, which image each region belongs to, the targets."""

    img_ids: list[str]
    feats: np.ndarray  # (B, R, D)
    boxes: np.ndarray  # (B, R, 4)
    mask: np.ndarray  # (B, R) 1 = real region
    region_image: np.ndarray  # (regions,) index of the region's image: the CV group
    targets: list[Target]
    annotated_by: str  # the task whose scene annotations gave true properties ("" if none)
    matched: float | None = None  # share of regions that matched a scene object

    @property
    def num_regions(self) -> int:
        return int(self.region_image.size)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) intersection over union of ``x1, y1, x2, y2`` boxes."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0.0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0.0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_regions(regions: np.ndarray, objects: np.ndarray, min_iou: float = MIN_IOU) -> np.ndarray:
    """For each region the index of the scene object it stands for (-1: none), one to one.

    Greedy by overlap. On worlds written by vlbench the detector emits one region per scene
    object, in the scene graph's object order, with boxes jittered by a few percent (checked
    on the embedded world: equal counts, every box within 0.05 of the image side), so this
    returns ``0, 1, 2, ...``; on real features the regions are a detector's proposals, not
    the annotated objects, and only the overlap can pair them.
    """
    out = np.full(len(regions), -1, dtype=np.int64)
    if len(regions) == 0 or len(objects) == 0:
        return out
    iou = box_iou(regions, objects)
    taken = np.zeros(len(objects), dtype=bool)
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        r, o = divmod(int(flat), len(objects))
        if iou[r, o] < min_iou:
            break
        if out[r] < 0 and not taken[o]:
            out[r], taken[o] = o, True
    return out


def scene_objects(data: Any, store: Any, n_images: int
                  ) -> tuple[str, dict[str, tuple[np.ndarray, list[dict[str, str]]]]]:
    """Annotated objects of up to ``n_images`` images the store holds, from the first registered
    task whose data has them (``Task.scene_objects``), and that task's name ("" if none)."""
    from vlbench.registry import TASKS

    for entry in TASKS:
        found = entry.obj.scene_objects(data, store, n_images)
        if found:
            return entry.name, found
    return "", {}


def collect(data: Any, store: Any, n_images: int, *, top_categories: int = DEFAULT_TOP_CATEGORIES,
            seed: int = 0) -> ProbeData:
    """Choose the images and read their regions and properties.

    With a task's scene annotations for ``data``, the images are the annotated ones and the
    targets include the true object properties; otherwise ``n_images`` images of the store
    drawn with ``seed``, probed on the detector's labels.
    """
    if n_images < 1:
        raise ConfigError(f"--images {n_images}: probe at least one image")
    annotated_by, graphs = scene_objects(data, store, n_images)
    if graphs:
        img_ids = list(graphs)
    else:
        pick = np.random.default_rng(seed).permutation(len(store))[:n_images]
        img_ids = [store.ids[i] for i in sorted(pick.tolist())]
    counts = [store.num_boxes(i) for i in img_ids]
    feats, boxes, mask = store.batch(img_ids, max_boxes=max(max(counts), 1))
    region_image = np.repeat(np.arange(len(img_ids)), counts)
    det_obj, det_attr, region_props, image_objects, image_cats = [], [], [], [], []
    matched = 0
    for img_id, n in zip(img_ids, counts, strict=True):
        regions = store.get(img_id)
        obj_labels = [str(int(i)) for i in regions.objects_id[:n]]
        det_obj += obj_labels
        det_attr += [str(int(i)) for i in regions.attrs_id[:n]]
        if graphs:
            obj_boxes, objects = graphs[img_id]
            pairs = match_regions(np.asarray(regions.boxes[:n]), obj_boxes)
            matched += int((pairs >= 0).sum())
            region_props += [objects[p] if p >= 0 else {} for p in pairs]
            image_objects.append(len(objects))
            image_cats.append({o.get("category", "") for o in objects})
        else:
            image_objects.append(n)
            image_cats.append({f"label {i}" for i in obj_labels if i != "-1"})
    targets = [Target("object label", REGION, DETECTOR, _labels(det_obj, drop="-1")),
               Target("attribute label", REGION, DETECTOR, _labels(det_attr, drop="-1"))]
    if graphs:
        kinds = dict.fromkeys(k for objects in graphs.values() for o in objects[1] for k in o)
        for kind in kinds:  # category first, then the attributes, as the task lists them
            targets.append(Target(kind, REGION, SCENE,
                                  _labels([p.get(kind, "") for p in region_props])))
    source = SCENE if graphs else DETECTOR
    targets.append(Target("objects in the image", IMAGE, source,
                           _labels([str(c) for c in image_objects])))
    frequency = Counter(c for cats in image_cats for c in cats)
    for cat, _ in sorted(frequency.items(), key=lambda kv: (-kv[1], kv[0]))[:top_categories]:
        targets.append(Target(f"has {cat}", IMAGE, source,
                              _labels(["yes" if cat in cats else "no" for cats in image_cats])))
    return ProbeData(img_ids, feats, boxes, mask, region_image, targets, annotated_by,
                     matched / max(1, region_image.size) if graphs else None)


def _labels(values: Sequence[str], drop: str | None = None) -> np.ndarray:
    return np.array(["" if v == drop else v for v in values], dtype=str)


# -- frozen states --------------------------------------------------------------------------------


def encode(subject: Subject, data: ProbeData, batch_size: int = 64
           ) -> tuple[np.ndarray, np.ndarray]:
    """Region states (one row per real region, image by image) and pooled states per image.

    The text side is the empty sentence ``[CLS] [SEP]`` for every image and every backbone:
    a sentence would let words the probe is not about (and a vocabulary that differs between
    runs) into the cross-modal states, and the choice of sentence would change the numbers;
    with none, each backbone reads exactly the same input, only its regions.
    """
    backbone = subject.backbone
    feat_dim = getattr(backbone.config, "visual_feat_dim", None)
    if feat_dim is not None and int(feat_dim) != data.feats.shape[2]:
        raise DataError(f"{subject.label}: the backbone reads {feat_dim}-d region features, the "
                        f"probed data has {data.feats.shape[2]}-d; pass --data with the features "
                        "it was trained on")
    device = next(backbone.parameters()).device
    regions, pooled = [], []
    cls_id, sep_id = subject.cls_sep
    with torch.no_grad():
        for start in range(0, len(data.img_ids), batch_size):
            mask = torch.from_numpy(data.mask[start:start + batch_size]).to(device)
            b = mask.shape[0]
            ids = torch.tensor([[cls_id, sep_id]], device=device).expand(b, 2)
            try:
                out = backbone(input_ids=ids, attention_mask=torch.ones_like(ids),
                               token_type_ids=torch.zeros_like(ids),
                               visual_feats=torch.from_numpy(data.feats[start:start + b]).to(device),
                               visual_pos=torch.from_numpy(data.boxes[start:start + b]).to(device),
                               visual_attention_mask=mask)
            except (RuntimeError, IndexError) as exc:
                raise DataError(f"{subject.label}: the backbone cannot read the probed images "
                                f"({str(exc).splitlines()[0]}); check --data") from None
            real = mask.bool()
            regions.append(out.vision[real].float().cpu().numpy())
            pooled.append(out.pooled.float().cpu().numpy())
    return np.concatenate(regions), np.concatenate(pooled)


# -- cross-validation -----------------------------------------------------------------------------


def check_folds(k: int) -> None:
    """Refuse fewer than two folds (ConfigError)."""
    if k < 2:
        raise ConfigError(f"--folds {k}: cross-validation needs at least 2 folds (5 is usual)")


def image_folds(labels: np.ndarray, groups: np.ndarray, k: int = DEFAULT_FOLDS, seed: int = 0
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold splits that keep each group (image) on one side; shuffled with ``seed``."""
    from sklearn.model_selection import StratifiedGroupKFold

    check_folds(k)
    if len(np.unique(groups)) < k:
        raise ConfigError(f"{k}-fold cross-validation needs at least {k} images, got "
                          f"{len(np.unique(groups))}; raise --images")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Rare labels (fewer members than folds) are expected with 1600 detector classes.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return list(splitter.split(np.zeros((len(labels), 1)), labels, groups))


def probe_pipeline(seed: int = 0) -> Any:
    """Standardised states into a logistic regression (the probe)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))


def fold_accuracies(estimator: Any, x: np.ndarray, y: np.ndarray,
                    folds: list[tuple[np.ndarray, np.ndarray]]) -> tuple[list[float], int]:
    """Accuracy (%) per fold, and how many fits stopped before converging."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import cross_val_score

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        scores = cross_val_score(estimator, x, y, cv=folds, scoring="accuracy", error_score="raise")
    unconverged = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return [100.0 * float(s) for s in scores], unconverged


@dataclass
class Score:
    """Accuracy over folds and its t interval."""

    folds: list[float]
    interval: Interval

    @classmethod
    def of(cls, folds: list[float], confidence: float) -> Score:
        return cls(folds, t_interval(folds, confidence))


@dataclass
class PropertyResult:
    """One row of the table: a property, its majority baseline and each backbone's probe."""

    name: str
    level: str
    source: str
    classes: int
    rows: int
    majority: Score
    scores: dict[str, Score] = field(default_factory=dict)
    unconverged: dict[str, int] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return f"{self.name} ({self.source})"


@dataclass
class ProbeReport:
    """A probe of several backbones on the same images and folds."""

    subjects: list[dict[str, Any]]
    properties: list[PropertyResult]
    data: dict[str, Any]
    folds: int
    seed: int
    confidence: float
    notes: list[str] = field(default_factory=list)
    command: str | None = None
    wall_seconds: float | None = None

    @property
    def labels(self) -> list[str]:
        return [s["label"] for s in self.subjects]


def probe(subjects: Sequence[Subject], data: ProbeData, *, folds: int = DEFAULT_FOLDS,
          seed: int = 0, confidence: float = 0.95, data_info: dict[str, Any] | None = None,
          say: Say | None = None) -> ProbeReport:
    """Probe every subject on every target of ``data`` with the same folds."""
    from sklearn.dummy import DummyClassifier

    labels = [s.label for s in subjects]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"two probed backbones share a label ({', '.join(labels)}); pass --label")
    states = {}
    for s in subjects:
        if say is not None:
            say(f"Encoding {len(data.img_ids)} images with {s.label}")
        states[s.label] = encode(s, data)
    notes: list[str] = []
    results: list[PropertyResult] = []
    for target in data.targets:
        keep = target.labels != ""
        y = target.labels[keep]
        groups = (data.region_image if target.level == REGION else np.arange(len(data.img_ids)))[keep]
        classes = len(np.unique(y))
        if classes < 2:
            notes.append(f"{target.name} ({target.source}): one value in every "
                         f"{target.level}, not probed")
            continue
        splits = image_folds(y, groups, folds, seed)
        if any(len(np.unique(y[train])) < 2 for train, _ in splits):
            notes.append(f"{target.name} ({target.source}): a training fold holds one value "
                         "only, not probed")
            continue
        dummy = np.zeros((len(y), 1))
        majority, _ = fold_accuracies(DummyClassifier(strategy="most_frequent"), dummy, y, splits)
        row = PropertyResult(target.name, target.level, target.source, classes, int(len(y)),
                             Score.of(majority, confidence))
        for label, (region_states, pooled) in states.items():
            x = (region_states if target.level == REGION else pooled)[keep]
            acc, unconverged = fold_accuracies(probe_pipeline(seed), x, y, splits)
            row.scores[label] = Score.of(acc, confidence)
            row.unconverged[label] = unconverged
            if unconverged:
                notes.append(f"{row.title}, {label}: {unconverged} of {folds} fits stopped at "
                             "the iteration limit")
        results.append(row)
    info = {"images": len(data.img_ids), "regions": data.num_regions,
            "annotations": data.annotated_by, "matched_regions": data.matched, **(data_info or {})}
    return ProbeReport([s.describe() for s in subjects], results, info, folds, seed, confidence,
                       notes)


def run_probe(paths: Sequence[str | Path], *, random_models: Sequence[str] = (),
              data_dir: str | Path | None = None, images: int = DEFAULT_IMAGES,
              folds: int = DEFAULT_FOLDS, seed: int = 0, labels: Sequence[str] = (),
              top_categories: int = DEFAULT_TOP_CATEGORIES, confidence: float = 0.95,
              say: Say | None = None) -> ProbeReport:
    """Load the runs/checkpoints (and random baselines), pick the images, probe them all.

    The data is ``data_dir``, else the first run's (its ``run.json`` data source), else the
    embedded synthetic benchmark.
    """
    from vlbench.data.features import FeatureStore
    from vlbench.data.source import cache_root, resolve_data

    started = time.perf_counter()
    if not paths and not random_models:
        raise ConfigError("nothing to probe; pass run directories or checkpoints, or --random MODEL")
    check_folds(folds)
    if images < 1:
        raise ConfigError(f"--images {images}: probe at least one image")
    if labels and len(labels) != len(paths) + len(random_models):
        raise ConfigError(f"{len(labels)} --label for {len(paths) + len(random_models)} backbones; "
                          "give one per run or checkpoint, then one per --random, in order")
    names = list(labels) or [None] * (len(paths) + len(random_models))
    subjects = [load_subject(p, n, say) for p, n in zip(paths, names, strict=False)]
    record = next((s.record for s in subjects if s.record), None)
    features = ""
    if data_dir is None and record is not None:
        source = (record.get("data") or {}).get("source")
        data_dir = None if source in (None, "synthetic") else source
        # The run's own feature files, unless --data names other data.
        features = ((record.get("config") or {}).get("data") or {}).get("features", "")
    noop: Say = lambda _msg: None  # noqa: E731
    data = resolve_data(data_dir, say=say or noop)
    store = FeatureStore.open(data.feature_files(features), cache_root() / "features")
    like = subjects[0] if subjects else None
    for model, name in zip(random_models, names[len(paths):], strict=True):
        subjects.append(random_subject(model, like, feat_dim=store.feat_dim,
                                       synthetic=data.synthetic, seed=seed, label=name))
    probe_data = collect(data, store, images, top_categories=top_categories, seed=seed)
    if say is not None:
        where = "synthetic world" if data.synthetic else "data"
        say(f"Probing {len(probe_data.img_ids)} images ({probe_data.num_regions} regions) of the "
            f"{where} at {data.root}")
    info = {"source": data.label, "root": str(data.root), "fingerprint": store.fingerprint}
    report = probe(subjects, probe_data, folds=folds, seed=seed, confidence=confidence,
                   data_info=info, say=say)
    report.wall_seconds = round(time.perf_counter() - started, 2)
    return report


# -- rendering --------------------------------------------------------------------------------


def _cell(s: Score | None) -> str:
    if s is None:
        return "-"
    i = s.interval
    if i.ci_low is None or i.ci_high is None:
        return f"{i.mean:.1f}"
    return f"{i.mean:.1f} [{i.ci_low:.1f}, {i.ci_high:.1f}]"


def describe_setup(report: ProbeReport) -> str:
    """The paragraph under a table: what was probed, how, on what."""
    d = report.data
    level = int(round(100 * report.confidence))
    source = d.get("source", "?")
    where = "the embedded synthetic benchmark" if source == "synthetic" else source
    lines = [
        f"Accuracy (%) of a logistic regression on standardised frozen states, mean and {level}% "
        f"t interval over {report.folds} folds (stratified, over images, seed {report.seed}); "
        "region properties from `.vision` (one row per real region), image properties from "
        "`.pooled`; every backbone reads the image's regions with the empty sentence "
        "`[CLS] [SEP]`. Majority: the most frequent training-fold value, on the same folds.",
        f"Data: {d['images']} images, {d['regions']} regions of {where} "
        f"(features {d.get('fingerprint', '?')})"
        + (f"; true properties from the {d['annotations']} task's scene annotations"
           if d.get("annotations") else "") + ".",
    ]
    return "\n".join(lines)


def to_markdown(report: ProbeReport) -> str:
    """The table (rows: properties; columns: majority, then each backbone)."""
    out = ["# Linear probes of frozen states", ""]
    if report.command:
        out += [f"Regenerate: `{report.command}`", ""]
    made = [f"{s['label']}: `{s['command']}`" for s in report.subjects if s.get("command")]
    if made:
        out += ["Backbones: " + "; ".join(made) + ".", ""]
    out += [describe_setup(report), ""]
    header = ["Property", "Level", "Classes", "Majority", *report.labels]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|")
    for p in report.properties:
        cells = [p.title, p.level, str(p.classes), _cell(p.majority),
                 *(_cell(p.scores.get(label)) for label in report.labels)]
        out.append("| " + " | ".join(cells) + " |")
    if report.notes:
        out += ["", *(f"- note: {n}" for n in report.notes)]
    return "\n".join(out) + "\n"


def to_csv(report: ProbeReport) -> str:
    """One row per property: majority and each backbone's mean and interval."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    columns = ["majority", *report.labels]
    writer.writerow(["property", "source", "level", "classes", "rows",
                     *(f"{c}{suffix}" for c in columns for suffix in ("", " ci_low", " ci_high"))])
    for p in report.properties:
        values: list[Any] = []
        for score in (p.majority, *(p.scores.get(label) for label in report.labels)):
            i = score.interval if score else None
            values += [_num(i.mean if i else None), _num(i.ci_low if i else None),
                       _num(i.ci_high if i else None)]
        writer.writerow([p.name, p.source, p.level, p.classes, p.rows, *values])
    return buf.getvalue()


def _num(x: float | None) -> str:
    return "" if x is None or math.isnan(x) else f"{x:.4f}"


def to_json(report: ProbeReport) -> str:
    """Everything: backbones, data, per-fold accuracies, intervals and notes."""
    return json.dumps(dataclasses.asdict(report), indent=2) + "\n"


def plot_probe(report: ProbeReport) -> Any:
    """Grouped bars (a group per property, a bar per backbone) with interval error bars; the
    majority baseline is a black line across each group."""
    from vlbench.results.plots import new_figure

    props = report.properties
    if not props:
        raise DataError("no property could be probed; nothing to plot")
    n = len(report.labels)
    width = 0.8 / max(n, 1)
    fig = new_figure(min(16.0, max(6.0, 0.3 * len(props) * (n + 1) + 2.0)), 4.8)
    ax = fig.subplots()
    xs = np.arange(len(props))
    for k, label in enumerate(report.labels):
        means, lows, highs = [], [], []
        for p in props:
            i = p.scores[label].interval
            means.append(i.mean)
            lows.append(i.mean - i.ci_low if i.ci_low is not None else 0.0)
            highs.append(i.ci_high - i.mean if i.ci_high is not None else 0.0)
        ax.bar(xs - 0.4 + width * (k + 0.5), means, width, yerr=[lows, highs], capsize=2,
               color=f"C{k % 10}", label=label)
    for x, p in zip(xs, props, strict=True):
        ax.hlines(p.majority.interval.mean, x - 0.45, x + 0.45, colors="black", linewidth=1.5,
                  label="majority" if x == 0 else None)
    ax.set_xticks(list(xs), [p.title for p in props], rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0, 105)
    ax.set(ylabel="probe accuracy (%)")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside upper center", fontsize=8, ncols=n + 1, frameon=False)
    return fig


def write_report(report: ProbeReport, stem: str | Path, say: Say | None = None) -> list[Path]:
    """Write ``STEM.md``, ``.csv``, ``.json`` and, with matplotlib installed, ``.png``."""
    from vlbench.results.plots import save_figure

    stem = Path(stem)
    if stem.suffix in (".md", ".csv", ".json", ".png"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, text in ((".md", to_markdown(report)), (".csv", to_csv(report)),
                         (".json", to_json(report))):
        path = stem.with_name(stem.name + suffix)
        write_text_atomic(path, text)
        written.append(path)
    try:
        fig = plot_probe(report)
    except VLBenchError as err:  # matplotlib missing, or nothing to plot: the tables stand
        if say is not None:
            say(f"no plot: {err}")
    else:
        written.append(save_figure(fig, stem.with_name(stem.name + ".png")))
    return written
