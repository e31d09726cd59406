"""LXMERT pre-training as a task plugin: image-sentence pairs, switchable objectives.

Examples are the (image, sentence, answer label) triples of LXMERT's pre-training JSON
(``[{"img_id", "sentf": {source: [sentence]}, "labelf": {source: [{answer: score}]}}]``):
captions carry no label, QA sentences one label each. ``collate`` applies the objectives'
corruptions (matching, word masking, region masking) with torch's global RNG while training
-- the trainer saves and restores it, so a resumed run draws the same masks -- and with a
generator seeded by the example ids while validating, so every epoch is scored on the same
masks. The model is the backbone plus its family's pre-training heads; ``loss`` returns one
named, weighted loss per objective (and per visual sub-loss), which the trainer sums and logs.

A backbone that reads pixels (ViLT) gets the images instead of region features (on the
embedded world, the pictures of the GQA and VQA scenes the corpus describes); masked object
prediction, which needs region states, is refused for it with the family's reason.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vlbench.data.images import PixelBatcher
from vlbench.data.jsonio import read_json
from vlbench.engine.backbone import PIXEL_INPUTS, REGION_INPUTS, ModelSpec
from vlbench.engine.task import Task, TaskModel
from vlbench.errors import ConfigError, DataError
from vlbench.registry import OBJECTIVES, register_task
from vlbench.tasks.qa import images_record, pixel_inputs

from .masking import IGNORE
from .objectives import (
    DEFAULT_OBJECTIVES,
    VISUAL_LOSSES,
    MaskContext,
    Objective,
    build_objectives,
    normalize_answer,
    resolve_tasks,
    task_overrides,
)
from .synth import PRETRAIN_PART

#: validation-metric name of each accuracy term
ACCURACY_METRICS = {"mlm": "mlm_accuracy", "matched": "matched_accuracy", "qa": "qa_accuracy",
                    "obj_label": "obj_label_accuracy", "obj_attr": "obj_attr_accuracy"}


@dataclass
class PretrainConfig:
    """LXMERT pre-training: which objectives, their weights, masking rates and the corpus."""

    objectives: list[str] = field(default_factory=lambda: list(DEFAULT_OBJECTIVES))
    visual_losses: list[str] = field(default_factory=lambda: list(VISUAL_LOSSES))
    weight_mask_lm: float = 1.0
    weight_mask_obj: float = 1.0
    weight_matched: float = 1.0
    weight_qa: float = 1.0
    visual_loss_weight: float = 6.67  # each visual sub-loss x 1 / 0.15, as LXMERT
    qa_from_epoch: int = 0  # the paper's P10+QA10: QA loss only from this (0-based) epoch on
    word_mask_prob: float = 0.15
    obj_mask_prob: float = 0.15
    mismatch_prob: float = 0.5
    # Corpus files (relative to the data directory, or absolute), LXMERT's pre-training JSON.
    train_files: list[str] = field(default_factory=lambda: ["pretrain/train.json"])
    eval_files: list[str] = field(default_factory=lambda: ["pretrain/val.json"])
    qa_sources: list[str] = field(default_factory=list)  # sources whose labels QA uses ([] = all)
    min_answer_count: int = 1  # answers rarer than this in the training corpus get no target


@dataclass(frozen=True)
class PretrainExample:
    """One sentence about one image; ``label`` maps normalised answers to scores (QA only)."""

    uid: str
    img_id: str
    sent: str
    source: str
    label: dict[str, float] | None
    split: str


class HeadOutputs(dict):
    """Logits of the pre-training heads by name; ``.float()`` like a tensor (for the evaluator)."""

    def float(self) -> HeadOutputs:
        return HeadOutputs({k: v.float() for k, v in self.items()})


class PretrainModel(TaskModel):
    """Backbone + the family's pre-training heads (keys ``backbone.*``, ``heads.pretraining.*``)."""

    def forward(self, batch: dict[str, Any]) -> HeadOutputs:
        return HeadOutputs(self.heads["pretraining"](self.encode(batch)))


@register_task("pretrain", description="LXMERT pre-training (five tasks) on image-text pairs")
class PretrainTask(Task):
    """LXMERT pre-training; ``primary_metric`` is minus the total validation loss."""

    config_class = PretrainConfig
    primary_metric = "neg_loss"
    synthetic_part = PRETRAIN_PART
    # Regions or pixels, whichever the backbone reads (chosen in build_model).
    requires = frozenset()
    image_inputs = (REGION_INPUTS, PIXEL_INPUTS)
    #: where a real data directory keeps the corpus's images (first found wins)
    image_folders = ("pretrain/images", "images")
    #: the world's parts whose pictured scenes the synthetic corpus describes
    pictured_parts = ("gqa", "vqa")

    def __init__(self, config: PretrainConfig, data: Any):
        super().__init__(config, data)
        for name in ("word_mask_prob", "obj_mask_prob", "mismatch_prob"):
            if not 0.0 <= getattr(config, name) <= 1.0:
                raise ConfigError(f"task.{name}={getattr(config, name)} must lie in [0, 1]")
        if not config.eval_files:
            raise ConfigError("task.eval_files is empty; pre-training needs a validation corpus "
                              "(e.g. --set task.eval_files=pretrain/val.json)")
        self.objectives: list[Objective] = build_objectives(config)
        self._splits: dict[str, list[PretrainExample]] = {}
        self._epoch: int | None = None
        self.answers: list[str] = []
        # Sizes of the object / attribute heads (the model's, once built): labels outside
        # them get no target.
        self.label_space = (1600, 400)
        self.pixels: PixelBatcher | None = None  # set by build_model for a pixel backbone

    @classmethod
    def default_overrides(cls, data: Any) -> dict[str, Any]:
        # LXMERT pre-training: lr 1e-4, 5% warmup, gradient norm clipped at 1.
        return {"train.lr": 1e-4, "train.warmup_ratio": 0.05, "train.max_grad_norm": 1.0,
                "train.epochs": 20}

    @property
    def train_split(self) -> str:
        return "train"

    @property
    def eval_splits(self) -> list[str]:
        return ["val"]

    # -- data ------------------------------------------------------------------------------
    def _files(self, split: str) -> list[Path]:
        names = self.config.train_files if split == self.train_split else self.config.eval_files
        if split not in (self.train_split, *self.eval_splits):
            raise DataError(f"pre-training has splits {self.train_split} and "
                            f"{', '.join(self.eval_splits)}, not '{split}'")
        paths = [Path(n).expanduser() for n in names]
        paths = [p if p.is_absolute() else self.data.root / p for p in paths]
        for p in paths:
            if not p.is_file():
                key = "train_files" if split == self.train_split else "eval_files"
                raise DataError(f"pre-training corpus {p} not found; set task.{key} to LXMERT "
                                "pre-training JSON files (relative to --data or absolute)")
        return paths

    def examples(self, split: str) -> list[PretrainExample]:
        if split not in self._splits:
            self._splits[split] = [ex for p in self._files(split) for ex in read_corpus(p, split)]
        return self._splits[split]

    def training_texts(self) -> Iterable[str]:
        return (ex.sent for ex in self.examples(self.train_split))

    def image_ids(self) -> set[str]:
        return {ex.img_id for s in (self.train_split, *self.eval_splits) for ex in self.examples(s)}

    def setup(self, tokenizer: Any, features: Any, *, max_boxes: int,
              state: dict[str, Any] | None = None) -> None:
        self.tokenizer, self.features, self.max_boxes = tokenizer, features, max_boxes
        if state and "answers" in state:
            self.answers = list(state["answers"])
        else:
            self.answers = answer_table(self.examples(self.train_split), self.config.qa_sources,
                                        self.config.min_answer_count)
        if self.needs_qa and not self.answers:
            raise DataError("objective qa: the training corpus has no labelled QA sentences "
                            "(labelf); drop qa (--drop-task qa) or add a QA source")
        self.answer_index = {a: i for i, a in enumerate(self.answers)}
        special = torch.tensor(sorted(tokenizer.special_ids))
        ids = torch.arange(tokenizer.vocab_size)
        self.candidate_ids = ids[~torch.isin(ids, special)]

    def state(self) -> dict[str, Any]:
        return {"answers": self.answers}

    @property
    def needs_qa(self) -> bool:
        return any(o.needs_qa_head for o in self.objectives)

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer at the start of each (0-based) training epoch."""
        self._epoch = epoch

    # -- batches ---------------------------------------------------------------------------
    def collate(self, examples: Sequence[PretrainExample]) -> dict[str, Any]:
        split = examples[0].split
        generator = None if split == self.train_split else _eval_generator(examples)
        pool = self.examples(split)
        qa_sources = set(self.config.qa_sources)
        ctx = MaskContext(self.tokenizer, self.features, self.max_boxes, pool,
                          _img_ids(pool, self.__dict__.setdefault("_pool_ids", {}), split),
                          self.answer_index, self.config, generator, self.candidate_ids)
        batch: dict[str, Any] = {
            "ids": [e.uid for e in examples], "img_ids": [e.img_id for e in examples],
            "sentences": [e.sent for e in examples],
            "labels": [e.label if not qa_sources or e.source in qa_sources else None for e in examples],
            "is_matched": torch.ones(len(examples), dtype=torch.long),
        }
        for objective in self.objectives:
            objective.prepare_text(batch, ctx)
        batch.update(self.tokenizer.encode_batch(batch["sentences"]))
        if self.pixels is not None:  # matching swaps sentences, so the images stay the ids'
            batch.update(self.pixels(batch["img_ids"]))
        else:
            feats, boxes, mask = self.features.batch(batch["img_ids"], self.max_boxes)
            batch["visual_feats"] = torch.as_tensor(feats, dtype=torch.float32)
            batch["visual_pos"] = torch.as_tensor(boxes, dtype=torch.float32)
            batch["visual_attention_mask"] = torch.as_tensor(mask, dtype=torch.long)
            if "mask_obj" in self.config.objectives:
                batch.update(self._region_labels(batch["img_ids"], feats.shape[1]))
        for objective in self.objectives:
            objective.prepare(batch, ctx)
        return batch

    def _region_labels(self, img_ids: Sequence[str], r: int) -> dict[str, Tensor]:
        """Detector object / attribute labels and confidences, (B, R); padding is IGNORE / 0."""
        rows = [self._image_labels(img_id, r) for img_id in img_ids]
        return {k: torch.from_numpy(np.stack([row[i] for row in rows]))
                for i, k in enumerate(("obj_labels", "obj_confs", "attr_labels", "attr_confs"))}

    def _image_labels(self, img_id: str, r: int) -> tuple[np.ndarray, ...]:
        """One image's padded labels and confidences, read once from the feature store."""
        cache = self.__dict__.setdefault("_label_cache", {})
        if (img_id, r) not in cache:
            regions = self.features.get(img_id)
            n = min(regions.num_boxes, r)
            out: list[np.ndarray] = []
            for ids, conf, size in ((regions.objects_id, regions.objects_conf, self.label_space[0]),
                                    (regions.attrs_id, regions.attrs_conf, self.label_space[1])):
                labels = np.full(r, IGNORE, dtype=np.int64)
                confs = np.zeros(r, dtype=np.float32)
                ok = (ids[:n] >= 0) & (ids[:n] < size)  # labels outside the head are not predicted
                labels[:n] = np.where(ok, ids[:n], IGNORE)
                confs[:n] = np.where(ok, conf[:n], 0.0)
                out += [labels, confs]
            cache[(img_id, r)] = tuple(out)
        return cache[(img_id, r)]

    # -- model -----------------------------------------------------------------------------
    def build_model(self, backbone: nn.Module, spec: ModelSpec) -> nn.Module:
        for objective in self.objectives:
            if set(objective.requires) - spec.provides:
                spec.require(objective.requires, f"pre-training objective '{objective.name}' "
                                                 f"({objective.why})")
        if spec.pretraining_heads is None:
            raise ConfigError(f"model family {spec.family} has no pre-training heads; "
                              "fine-tune it from scratch instead")
        decoders = [d for o in self.objectives for d in o.decoders()]
        if "mask_obj" in (o.name for o in self.objectives):  # label heads exist only then
            self.label_space = (backbone.config.num_object_labels, backbone.config.num_attr_labels)
        heads = spec.pretraining_heads(backbone.config, backbone, decoders,
                                       len(self.answers) if self.needs_qa else 0)
        self.pixels = pixel_inputs(self, spec, backbone.config, "pretrain", self.pictured_parts)
        return PretrainModel(backbone, {"pretraining": heads})

    def input_record(self, spec: ModelSpec, model_config: Any) -> dict[str, Any]:
        return images_record(pixel_inputs(self, spec, model_config, "pretrain",
                                          self.pictured_parts))

    def data_record(self) -> dict[str, Any]:
        return images_record(self.pixels)

    @classmethod
    def applicable_objectives(cls, spec: ModelSpec
                              ) -> tuple[list[str], list[str], list[tuple[str, str]]]:
        """Every pre-training task ``spec``'s family can train: (objectives, visual
        sub-losses, [(objective left out, the family's reason)])."""
        objectives, visual = resolve_tasks(None, ())
        keep: list[str] = []
        left_out: list[tuple[str, str]] = []
        for name in objectives:
            missing = sorted(OBJECTIVES.get(name).requires - spec.provides)
            if missing:
                reason = spec.refusals.get(missing[0], f"it does not provide {missing[0]}")
                left_out.append((name, reason))
            else:
                keep.append(name)
        return keep, (visual if "mask_obj" in keep else []), left_out

    @classmethod
    def resolve_objectives(cls, tasks: Sequence[str] | None = None, drop: Sequence[str] = ()
                           ) -> tuple[list[str], list[str]]:
        """``--tasks`` / ``--drop-task`` -> (objectives, visual sub-losses)."""
        return resolve_tasks(tasks, drop)

    @classmethod
    def objective_overrides(cls, tasks: Sequence[str] | None = None, drop: Sequence[str] = ()
                            ) -> dict[str, str]:
        """``--tasks`` / ``--drop-task`` as config overrides of this task."""
        return task_overrides(tasks, drop)

    def loss(self, logits: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for objective in self.objectives:
            losses = objective.losses(logits, batch)
            if objective.name == "qa" and not self._qa_active():
                losses = {k: v * 0.0 for k, v in losses.items()}  # logged as 0, no gradient
            out.update(losses)
        return out

    def _qa_active(self) -> bool:
        if self.config.qa_from_epoch <= 0:
            return True
        if self._epoch is None:
            raise ConfigError("task.qa_from_epoch needs a trainer that calls Task.set_epoch(); "
                              "set task.qa_from_epoch=0 or update vlbench")
        return self._epoch >= self.config.qa_from_epoch

    def predict(self, logits: dict[str, Tensor], batch: dict[str, Any]) -> list[tuple[str, Any]]:
        """Per example: the loss terms and accuracy counts that ``score`` aggregates."""
        rows: list[dict[str, Any]] = [{"terms": {}, "acc": {}} for _ in batch["ids"]]
        for objective in self.objectives:
            for kind, parts in (("terms", objective.terms(logits, batch)),
                                ("acc", objective.accuracy(logits, batch))):
                for name, (num, den) in parts.items():
                    for row, n, d in zip(rows, num.tolist(), den.tolist(), strict=True):
                        row[kind][name] = [n, d]
        if "qa_target" in batch:
            best = logits["qa"].argmax(-1).tolist()
            for row, j, t in zip(rows, best, batch["qa_target"].tolist(), strict=True):
                if t != IGNORE:
                    row["qa"] = {"prediction": self.answers[j], "answer": self.answers[t]}
        return list(zip(batch["ids"], rows, strict=True))

    # -- scoring ---------------------------------------------------------------------------
    def score(self, split: str, predictions: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Validation losses (weighted as in training), ``neg_loss`` and accuracies (percent)."""
        sums: dict[str, list[float]] = {}
        accs: dict[str, list[float]] = {}
        for row in predictions.values():
            for target, kind in ((sums, "terms"), (accs, "acc")):
                for name, (n, d) in row[kind].items():
                    acc = target.setdefault(name, [0.0, 0.0])
                    acc[0] += n
                    acc[1] += d
        weights = {n: o.weight(n) for o in self.objectives for n in o.loss_names()}
        metrics: dict[str, Any] = {}
        for name, (n, d) in sums.items():
            metrics[f"loss_{name}"] = weights.get(name, 1.0) * n / max(d, 1.0)
        metrics["loss"] = sum(metrics.values())
        metrics["neg_loss"] = -metrics["loss"]
        for name, (n, d) in accs.items():
            if d > 0:
                metrics[ACCURACY_METRICS.get(name, f"{name}_accuracy")] = 100.0 * n / d
        by_id = {ex.uid: ex for ex in self.examples(split)}
        records = [
            {"id": uid, "score": float(row["qa"]["prediction"] == row["qa"]["answer"]),
             "prediction": row["qa"]["prediction"], "answer": row["qa"]["answer"],
             "question": by_id[uid].sent if uid in by_id else "", "types": {}}
            for uid, row in predictions.items() if "qa" in row
        ]
        return metrics, records

    def baselines(self, split: str) -> dict[str, dict[str, float]]:
        """Chance matching accuracy and the most frequent training answer's QA accuracy."""
        out = {"matched_accuracy": 100.0 * max(self.config.mismatch_prob, 1 - self.config.mismatch_prob)}
        counts = Counter(max(ex.label.items(), key=lambda kv: (kv[1], kv[0]))[0]
                         for ex in self.examples(self.train_split) if ex.label)
        labelled = [ex for ex in self.examples(split) if ex.label]
        if counts and labelled:
            top = counts.most_common(1)[0][0]
            out["qa_accuracy"] = 100.0 * sum(ex.label.get(top, 0.0) >= 1.0 for ex in labelled) / len(labelled)
        return {"prior": out}

    def write_predictions(self, predictions: dict[str, Any], path: Path) -> Path:
        path = path.with_suffix(".json")
        path.write_text(json.dumps([{"id": uid, **row} for uid, row in predictions.items()]))
        return path

    def read_predictions(self, path: Path) -> dict[str, Any]:
        rows = read_json(path.with_suffix(".json"))
        try:
            return {str(r["id"]): {k: v for k, v in r.items() if k != "id"} for r in rows}
        except (KeyError, TypeError) as exc:
            raise DataError(f"{path}: expected [{{\"id\", \"terms\", \"acc\"}}] rows") from exc


# -- corpus --------------------------------------------------------------------------------


def read_corpus(path: Path, split: str) -> list[PretrainExample]:
    """LXMERT pre-training JSON -> one example per sentence (answers normalised)."""
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of images (LXMERT's pre-training format)")
    out: list[PretrainExample] = []
    for i, datum in enumerate(data):
        where = f"{path}: item {i}"
        if not isinstance(datum, dict) or not isinstance(datum.get("img_id"), str | int):
            raise DataError(f"{where} lacks 'img_id'; expected {{\"img_id\", \"sentf\", \"labelf\"}}")
        sentf, labelf = datum.get("sentf"), datum.get("labelf", {}) or {}
        if not isinstance(sentf, dict) or not isinstance(labelf, dict):
            raise DataError(f"{where} key 'sentf'/'labelf' must map sources to lists")
        img_id = str(datum["img_id"])
        for source, sents in sentf.items():
            labels = labelf.get(source)
            if not isinstance(sents, list) or (labels is not None and (
                    not isinstance(labels, list) or len(labels) != len(sents))):
                raise DataError(f"{where} source '{source}': 'sentf' must be a list of sentences and "
                                "'labelf' (if any) a list of {answer: score} of the same length")
            for k, sent in enumerate(sents):
                label = None
                if labels is not None:
                    if not isinstance(labels[k], dict):
                        raise DataError(f"{where} labelf['{source}'][{k}] is not an {{answer: score}} object")
                    label = {}
                    for ans, score in labels[k].items():
                        key = normalize_answer(str(ans))
                        label[key] = max(label.get(key, 0.0), float(score))
                out.append(PretrainExample(f"{img_id}/{source}/{k}", img_id, str(sent), source,
                                           label, split))
    return out


def answer_table(examples: Iterable[PretrainExample], sources: Sequence[str] = (),
                 min_count: int = 1) -> list[str]:
    """The joint answer table: normalised answers of the QA sources, most frequent first."""
    counts: Counter[str] = Counter()
    for ex in examples:
        if ex.label and (not sources or ex.source in sources):
            counts.update(ex.label)
    return [a for a, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]


def _img_ids(pool: Sequence[PretrainExample], cache: dict[str, list[str]], split: str) -> list[str]:
    if split not in cache or len(cache[split]) != len(pool):
        cache[split] = [ex.img_id for ex in pool]
    return cache[split]


def _eval_generator(examples: Sequence[PretrainExample]) -> torch.Generator:
    """A generator seeded by the batch's ids: validation masks are the same every epoch."""
    digest = hashlib.sha256("\n".join(e.uid for e in examples).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
