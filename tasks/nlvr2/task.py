"""NLVR2 (Suhr et al. 2019): is a sentence true of a pair of images? Scored like ``metrics.py``.

Reads the official JSONL (``nlvr2/{train,dev,test1}.json``: ``identifier``, ``sentence``,
``label`` "True"/"False") or LXMERT's preprocessed JSON (``nlvr2/lxmert/{train,valid,test}.json``:
``identifier``, ``img0``, ``img1``, ``label`` 0/1, ``sent``, ``uid``), and writes the official
predictions CSV (``identifier,prediction`` lines, no header).

LXMERT's model: the sentence is encoded with each image separately (one backbone call on
2B pairs), the two pooled vectors are concatenated and classified (2h -> 2h -> GeLU -> LN
-> 2), trained with cross-entropy. Images are named as in LXMERT's feature TSVs: identifier
"dev-850-0-1" uses "dev-850-0-img0" and "dev-850-0-img1". A backbone that reads pixels (ViLT)
gets the two images as adjacent rows of ``pixel_values``, the layout ViLT's NLVR2 head
(HF's ``ViltForImagesAndTextClassification``) concatenates; the image files are found by
those names under NLVR2's ``images/{train/N,dev,test1}/`` folders.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from vlbench.data.jsonio import iter_lines, read_json
from vlbench.data.source import DataSource
from vlbench.engine.backbone import ModelSpec
from vlbench.engine.task import Task, TaskModel
from vlbench.errors import ConfigError, DataError
from vlbench.models.heads import NLVR2Head
from vlbench.registry import register_task
from vlbench.tasks.nlvr2.scoring import read_nlvr2_predictions, score_nlvr2, sentence_group
from vlbench.tasks.nlvr2.synth import NLVR2_PART
from vlbench.tasks.qa import IMAGE_INPUTS, encode_inputs, images_record, pixel_inputs
from vlbench.tasks.text_baseline import task_predictions

#: LXMERT's preprocessed files name dev "valid" and test1 "test"
LXMERT_SPLIT_NAMES = {"dev": "valid", "test1": "test"}

#: class index -> official label (LXMERT: 1 = True)
LABELS = ("False", "True")


@dataclass
class NLVR2Config:
    train_split: str = "train"
    eval_splits: list[str] = field(default_factory=lambda: ["dev", "test1"])
    format: str = "auto"  # "official" JSONL, "lxmert" preprocessed JSON, or "auto"
    # Feature-store id of an image of the official JSONL; fields: pair (identifier without its
    # sentence field, "dev-850-0"), side (0 = left, 1 = right), identifier, split.
    image_id_format: str = "{pair}-img{side}"
    # Keep the image pairs of one sentence in one training batch: the batch then holds the
    # same sentence both true and false, so the text alone explains nothing of the loss
    # (LXMERT shuffles pairs independently: False).
    sentence_batches: bool = False


@dataclass
class NLVR2Example:
    """One sentence about one image pair; ``label`` is "True"/"False" ("" when unlabelled)."""

    identifier: str
    sentence: str
    img0: str
    img1: str
    label: str


class NLVR2Model(TaskModel):
    """Backbone + LXMERT's NLVR2 classifier (``heads.nlvr2``) on the concatenated pooled states
    of the two images (head keys ``logit_fc.0/2/3``, as LXMERT's ``NLVR2Model``)."""

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """A batch of 2B (sentence, image) rows, the two images of an example adjacent -> (B, 2)."""
        return self.heads["nlvr2"](self.encode(batch), batch)


def lxmert_nlvr2_head(config: Any) -> nn.Module:
    """LXMERT's pair classifier, sized by the backbone config."""
    return NLVR2Head(config.hidden_size, config.layer_norm_eps, config.initializer_range)


@register_task(
    "nlvr2",
    description="NLVR2: is a sentence true of a pair of images (official accuracy, consistency)",
)
class NLVR2Task(Task):
    """NLVR2 binary classification over image pairs; metrics from the official ``metrics.py``."""

    config_class = NLVR2Config
    prediction_suffix = ".csv"
    synthetic_part = NLVR2_PART
    # Regions or pixels, whichever the backbone reads (chosen in build_model).
    requires = frozenset()
    image_inputs = IMAGE_INPUTS
    images_per_example = 2  # left and right
    #: where a real data directory keeps the images (relative to it, first found wins)
    image_folders: ClassVar[tuple[str, ...]] = ("nlvr2/images", "images")
    # Official consistency: the share of sentences whose image pairs are all answered right
    # (rows carry their sentence as "group").
    metric_units = {"accuracy": {}, "consistency": {"over": "group"}}
    category_kinds = ()

    def __init__(self, config: NLVR2Config, data: DataSource):
        super().__init__(config, data)
        self._splits: dict[str, list[NLVR2Example]] = {}
        self.pixels = None  # set by build_model for a backbone that reads pixels

    @classmethod
    def default_overrides(cls, data: DataSource) -> dict[str, Any]:
        return {"train.lr": 5e-5}  # LXMERT's NLVR2 fine-tuning (batch 32, 4 epochs: the defaults)

    @classmethod
    def synthetic_overrides(cls) -> dict[str, Any]:
        # From scratch, the image-dependent part of the pooled states starts at a few percent
        # of the sentence-dependent part. Shuffled pairs bury its gradient under the
        # sentence's, and the model stays at chance (as LXMERT without pre-training does on
        # NLVR2); a sentence's true and false pairs in one batch cancel the sentence's part.
        # The binary loss also needs a gentler rate than the recipe's 7e-4 to take off.
        return {"task.sentence_batches": True, "train.lr": 3e-4}

    @property
    def train_split(self) -> str:
        return self.config.train_split

    @property
    def eval_splits(self) -> list[str]:
        return list(self.config.eval_splits)

    # -- files -------------------------------------------------------------------------------
    def _find(self, *names: str) -> Path | None:
        for name in names:
            for folder in ("nlvr2/", ""):
                if (self.data.root / folder / name).is_file():
                    return self.data.root / folder / name
        return None

    def _official_path(self, split: str) -> Path | None:
        return self._find(f"{split}.json", f"{split}.jsonl")

    def _lxmert_path(self, split: str) -> Path | None:
        return self._find(f"lxmert/{LXMERT_SPLIT_NAMES.get(split, split)}.json")

    def _source(self, split: str) -> tuple[str, Path]:
        """(format, file) of ``split``; a ``{split}.json`` holding a JSON list is LXMERT's."""
        fmt = self.config.format
        if fmt not in ("auto", "official", "lxmert"):
            raise ConfigError(f"task.format={fmt!r}: use auto, official or lxmert")
        official, lxmert = self._official_path(split), self._lxmert_path(split)
        if fmt in ("auto", "official") and official is not None:
            return ("lxmert" if _starts_with_list(official) else "official"), official
        if fmt in ("auto", "lxmert") and lxmert is not None:
            return "lxmert", lxmert
        raise DataError(
            f"NLVR2 split '{split}': found neither the official {split}.json (JSONL) nor LXMERT's "
            f"lxmert/{LXMERT_SPLIT_NAMES.get(split, split)}.json under {self.data.root} (or its "
            "nlvr2/ folder); check --data and task.eval_splits"
        )

    # -- data --------------------------------------------------------------------------------
    def read_split(self, split: str) -> list[NLVR2Example]:
        """Examples of ``split`` from whichever format is there."""
        fmt, path = self._source(split)
        if fmt == "lxmert":
            return read_lxmert_split(path)
        return read_official_split(path, split, self.config.image_id_format)

    def examples(self, split: str) -> list[NLVR2Example]:
        if split not in self._splits:
            self._splits[split] = self.read_split(split)
        return self._splits[split]

    def training_texts(self) -> Iterable[str]:
        return (ex.sentence for ex in self.read_split(self.train_split))

    def setup(
        self, tokenizer: Any, features: Any, *, max_boxes: int, state: dict[str, Any] | None = None
    ) -> None:
        self.tokenizer, self.features, self.max_boxes = tokenizer, features, max_boxes
        self.majority  # noqa: B018  (fails now, not mid-run, when nothing is labelled)

    @functools.cached_property
    def majority(self) -> str:
        """The most frequent training label (read from the data alone)."""
        labels = Counter(ex.label for ex in self.examples(self.train_split) if ex.label)
        if not labels:
            raise DataError(f"NLVR2 split '{self.train_split}': no labelled examples to train on")
        # a tie goes to "True" (the larger string), so the choice never depends on file order
        return max(labels.items(), key=lambda kv: (kv[1], kv[0]))[0]

    def batch_groups(self, examples: Sequence[NLVR2Example]) -> list[str] | None:
        if not self.config.sentence_batches:
            return None
        return [sentence_group(ex.identifier) for ex in examples]

    def image_ids(self) -> set[str]:
        return {
            img
            for split in [self.train_split, *self.eval_splits]
            for ex in self.examples(split)
            for img in (ex.img0, ex.img1)
        }

    def collate(self, examples: Sequence[NLVR2Example]) -> dict[str, Any]:
        """2B rows: (sentence, img0), (sentence, img1) per example, in that order."""
        sentences = [ex.sentence for ex in examples for _ in range(2)]
        images = [img for ex in examples for img in (ex.img0, ex.img1)]
        batch = encode_inputs(self.tokenizer, self.features, sentences, images, self.max_boxes,
                              self.pixels)
        # -1 (ignored by the loss) for unlabelled examples such as a hidden test split
        batch["target"] = torch.tensor(
            [LABELS.index(ex.label) if ex.label else -1 for ex in examples], dtype=torch.long
        )
        batch["ids"] = [ex.identifier for ex in examples]
        return batch

    # -- model -------------------------------------------------------------------------------
    def build_model(self, backbone: nn.Module, spec: ModelSpec) -> nn.Module:
        self.pixels = pixel_inputs(self, spec, backbone.config, "nlvr2")
        return NLVR2Model(backbone, {"nlvr2": spec.head("nlvr2", backbone.config, lxmert_nlvr2_head)})

    def input_record(self, spec: ModelSpec, model_config: Any) -> dict[str, Any]:
        return images_record(pixel_inputs(self, spec, model_config, "nlvr2"))

    def data_record(self) -> dict[str, Any]:
        return images_record(self.pixels)

    def loss(self, logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        return F.cross_entropy(logits.float(), batch["target"], ignore_index=-1)

    def predict(self, logits: torch.Tensor, batch: dict[str, Any]) -> list[tuple[str, str]]:
        best = logits.argmax(dim=-1).tolist()
        return [(ident, LABELS[j]) for ident, j in zip(batch["ids"], best, strict=True)]

    # -- scoring -----------------------------------------------------------------------------
    score_inputs = {"annotations": (True, "the NLVR2 labels JSONL")}

    @classmethod
    def score_files(cls, predictions: Path, **inputs: Path | None) -> dict[str, Any]:
        from vlbench.tasks.nlvr2.scoring import score_nlvr2_files

        return score_nlvr2_files(inputs["annotations"], predictions)

    def score(
        self, split: str, predictions: dict[str, str]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        by_id = {ex.identifier: ex for ex in self.examples(split)}
        unknown = [i for i in predictions if i not in by_id]
        if unknown:
            raise DataError(
                f"NLVR2 split '{split}': {len(unknown)} predicted identifier(s) are not "
                f"in the split (e.g. {unknown[:3]}); score predictions against their own split"
            )
        scored = [by_id[i] for i in predictions]
        unlabelled = [ex.identifier for ex in scored if not ex.label]
        if unlabelled:
            raise DataError(
                f"NLVR2 split '{split}': {len(unlabelled)} example(s) have no label "
                f"(e.g. {unlabelled[:3]}); only labelled splits can be scored"
            )
        metrics = score_nlvr2(
            [{"identifier": ex.identifier, "label": ex.label} for ex in scored], predictions
        )
        records = [
            {
                "id": ex.identifier,
                "score": float(predictions[ex.identifier].lower() == ex.label.lower()),
                "prediction": predictions[ex.identifier],
                "answer": ex.label,
                "question": ex.sentence,
                "types": {},
                "group": sentence_group(ex.identifier),
            }
            for ex in scored
        ]
        return metrics, records

    def write_predictions(self, predictions: dict[str, str], path: Path) -> Path:
        path = path.with_suffix(".csv")
        # the official metrics.py reads "identifier,prediction" lines with no header
        path.write_text("".join(f"{ident},{pred}\n" for ident, pred in predictions.items()))
        return path

    def read_predictions(self, path: Path) -> dict[str, str]:
        return read_nlvr2_predictions(path.with_suffix(".csv"))

    def baselines(self, split: str) -> dict[str, dict[str, float]]:
        """``prior`` (every example gets the majority training label) and ``text_only``
        (TF-IDF + logistic regression on the sentence alone), scored officially."""
        prior, _ = self.score(split, {ex.identifier: self.majority for ex in self.examples(split)})
        text, _ = self.score(split, self.text_only_predictions(split))
        return {"prior": prior, "text_only": text}

    def text_only_predictions(self, split: str) -> dict[str, str]:
        """Labels of the learned sentence-only baseline (:mod:`vlbench.tasks.text_baseline`)."""
        return task_predictions(self, split, text=lambda ex: ex.sentence, label=lambda ex: ex.label,
                                key=lambda ex: ex.identifier)


def pair_id(identifier: str, where: str) -> str:
    """'dev-850-0-1' -> 'dev-850-0': the image pair an identifier's sentence is paired with."""
    parts = identifier.split("-")
    if len(parts) != 4:
        raise DataError(
            f"{where}: identifier {identifier!r} is not split-set-pair-sentence (e.g. dev-850-0-1)"
        )
    return "-".join(parts[:3])


def _starts_with_list(path: Path) -> bool:
    # Bytes, not text: a file that is not UTF-8 is reported by the reader, at its line.
    with open(path, "rb") as f:
        head = f.read(256).removeprefix(b"\xef\xbb\xbf").lstrip()
    return head.startswith(b"[")


def _jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    for lineno, line in iter_lines(path):
        if line.strip():
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}:{lineno}: malformed JSON line ({exc.msg}); the official "
                    "NLVR2 files hold one JSON object per line"
                ) from None


def _label(value: Any, where: str) -> str:
    """Official "True"/"False" (any case) or LXMERT's 1/0 -> "True"/"False"."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return "True" if value.lower() == "true" else "False"
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return LABELS[value]
    raise DataError(
        f'{where}: key \'label\' is {value!r}; expected "True"/"False" (official) or 1/0 (LXMERT)'
    )


def read_official_split(
    path: Path, split: str, image_id_format: str = "{pair}-img{side}"
) -> list[NLVR2Example]:
    """The official NLVR2 JSONL; image ids built from each identifier with ``image_id_format``."""
    out = []
    for lineno, d in _jsonl(path):
        where = f"{path}:{lineno}"
        if not isinstance(d, dict):
            raise DataError(f"{where}: expected a JSON object per line (official NLVR2 format)")
        for key in ("identifier", "sentence"):
            if not isinstance(d.get(key), str):
                raise DataError(
                    f"{where}: missing or non-string key '{key}'; expected official NLVR2 fields"
                )
        ident = d["identifier"]
        pair = pair_id(ident, where)
        try:
            img0, img1 = (
                image_id_format.format(pair=pair, side=side, identifier=ident, split=split)
                for side in (0, 1)
            )
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"task.image_id_format={image_id_format!r} ({exc}); use the fields "
                "pair, side, identifier, split"
            ) from None
        label = _label(d["label"], where) if "label" in d else ""
        out.append(NLVR2Example(ident, d["sentence"], img0, img1, label))
    return out


def read_lxmert_split(path: Path) -> list[NLVR2Example]:
    """LXMERT's NLVR2 JSON: ``[{"identifier", "img0", "img1", "label", "sent", "uid"}]``."""
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list (LXMERT's preprocessed NLVR2 format)")
    out = []
    for i, d in enumerate(data):
        where = f"{path}: entry {i}"
        if not isinstance(d, dict):
            raise DataError(f"{where} is not an object")
        for key in ("identifier", "img0", "img1", "sent"):
            if not isinstance(d.get(key), str):
                raise DataError(
                    f"{where}: missing or non-string key '{key}'; expected identifier, "
                    "img0, img1, sent, label"
                )
        label = _label(d["label"], where) if "label" in d else ""
        out.append(NLVR2Example(d["identifier"], d["sent"], d["img0"], d["img1"], label))
    return out
