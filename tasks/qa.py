"""What VQA and GQA share: an answer vocabulary, soft targets, LXMERT's QA head, BCE, and
the choice of image input (also NLVR2's).

LXMERT treats QA as multi-label classification over the training answers: BCE on soft
targets (VQA's 0/0.3/0.6/0.9/1.0, GQA's one-hot), summed over answers.

A backbone that reads region features gets them (``visual_feats``, ``visual_pos``,
``visual_attention_mask``); one that reads pixels instead (ViLT) gets the images
(``pixel_values``, ``pixel_mask``; :mod:`vlbench.data.images`), decoded in ``collate``.
"""

from __future__ import annotations

import functools
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from vlbench.data.images import PixelBatcher, task_pixels
from vlbench.engine.backbone import PIXEL_INPUTS, REGION_INPUTS, ModelSpec
from vlbench.engine.task import Task, TaskModel
from vlbench.errors import DataError
from vlbench.models.heads import QAHead
from vlbench.tasks.text_baseline import task_predictions


@dataclass
class QAExample:
    """One question about one image; ``label`` maps answers to soft scores."""

    qid: str
    img_id: str
    question: str
    label: dict[str, float]
    qtype: str = ""  # what the answer prior is conditioned on
    extra: dict[str, Any] = field(default_factory=dict)


class QAModel(TaskModel):
    """Backbone + an answer head (``heads.qa``): LXMERT's on the pooled [CLS] state, unless
    the model family has its own."""

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.heads["qa"](self.encode(batch), batch)


def lxmert_qa_head(config: Any, num_answers: int) -> nn.Module:
    """LXMERT's answer classifier, sized by the backbone config."""
    return QAHead(config.hidden_size, num_answers, config.layer_norm_eps, config.initializer_range)


#: what the QA tasks and NLVR2 feed: regions to a backbone that reads them, else the images
IMAGE_INPUTS = (REGION_INPUTS, PIXEL_INPUTS)


def pixel_inputs(task: Task, spec: ModelSpec, config: Any, name: str,
                 parts: Sequence[str] | None = None) -> PixelBatcher | None:
    """How ``task`` feeds ``spec``'s backbone: None for region features; for a backbone that
    reads pixels, the batcher of the task's images at the model's ``image_size`` (a synthetic
    world without images has them drawn first): those of the world's ``parts``, by default
    the task's own part. Refused when it reads neither."""
    if task.image_input(spec, f"task '{name}'") == REGION_INPUTS:
        return None
    if parts is None and task.synthetic_part is not None:
        parts = [task.synthetic_part.name]
    return task_pixels(task.data, parts, task.image_folders, config.image_size, task.image_ids(),
                       say=lambda msg: print(msg, file=sys.stderr))


def images_record(pixels: PixelBatcher | None) -> dict[str, Any]:
    """What a run records of the images it reads (``{}`` when it reads regions)."""
    return {"images": dict(pixels.record)} if pixels is not None else {}


def encode_inputs(tokenizer: Any, features: Any, questions: list[str], img_ids: list[str],
                  max_boxes: int, pixels: PixelBatcher | None = None) -> dict[str, torch.Tensor]:
    """Token ids and masks for the questions; padded regions and boxes for the images, or
    their pixels when ``pixels`` is given."""
    batch = tokenizer.encode_batch(questions)
    if pixels is not None:
        batch.update(pixels(img_ids))
        return batch
    feats, boxes, mask = features.batch(img_ids, max_boxes)
    batch["visual_feats"] = torch.as_tensor(feats, dtype=torch.float32)
    batch["visual_pos"] = torch.as_tensor(boxes, dtype=torch.float32)
    batch["visual_attention_mask"] = torch.as_tensor(mask, dtype=torch.long)
    return batch


class QATask(Task):
    """Base for question-answering tasks; subclasses read their formats and score officially."""

    # Regions or pixels, whichever the backbone reads (chosen in build_model).
    requires = frozenset()
    image_inputs = IMAGE_INPUTS
    #: the task's name, in refusals
    task_name: ClassVar[str] = "qa"
    #: where a real data directory keeps the images (relative to it, first found wins)
    image_folders: ClassVar[tuple[str, ...]] = ("images",)

    def __init__(self, config: Any, data: Any):
        super().__init__(config, data)
        self._splits: dict[str, list[QAExample]] = {}  # read lazily: scoring needs no setup()
        self.pixels: PixelBatcher | None = None  # set by build_model for a pixel backbone

    def setup(self, tokenizer: Any, features: Any, *, max_boxes: int,
              state: dict[str, Any] | None = None) -> None:
        self.tokenizer, self.features, self.max_boxes = tokenizer, features, max_boxes
        train = self.examples(self.train_split)
        if state and "answers" in state:
            self.answers = list(state["answers"])
        else:
            self.answers = build_answer_vocab(train, self.config.min_answer_count)
        if not self.answers:
            raise DataError(f"{self.train_split}: no answers found to build the answer vocabulary from")
        self.answer_index = {a: i for i, a in enumerate(self.answers)}

    def state(self) -> dict[str, Any]:
        return {"answers": self.answers}

    def examples(self, split: str) -> list[QAExample]:
        if split not in self._splits:
            self._splits[split] = self.read_split(split)
        return self._splits[split]

    def read_split(self, split: str) -> list[QAExample]:
        raise NotImplementedError

    def training_texts(self) -> Iterable[str]:
        return (ex.question for ex in self.read_split(self.train_split))

    def image_ids(self) -> set[str]:
        return {ex.img_id for split in [self.train_split, *self.eval_splits] for ex in self.examples(split)}

    def collate(self, examples: Sequence[QAExample]) -> dict[str, Any]:
        batch = encode_inputs(self.tokenizer, self.features, [e.question for e in examples],
                              [e.img_id for e in examples], self.max_boxes, self.pixels)
        target = torch.zeros(len(examples), len(self.answers))
        for i, ex in enumerate(examples):
            for ans, score in ex.label.items():
                j = self.answer_index.get(ans)
                if j is not None:  # answers outside the vocabulary cannot be predicted anyway
                    target[i, j] = score
        batch["target"] = target
        batch["ids"] = [e.qid for e in examples]
        return batch

    def build_model(self, backbone: nn.Module, spec: ModelSpec) -> nn.Module:
        self.pixels = pixel_inputs(self, spec, backbone.config, self.task_name)
        head = spec.head("qa", backbone.config, lxmert_qa_head, num_answers=len(self.answers))
        return QAModel(backbone, {"qa": head})

    def input_record(self, spec: ModelSpec, model_config: Any) -> dict[str, Any]:
        return images_record(pixel_inputs(self, spec, model_config, self.task_name))

    def data_record(self) -> dict[str, Any]:
        return images_record(self.pixels)

    def init_from(self, model: nn.Module, source: Any, say: Any = print) -> dict[str, Any]:
        """Answer rows from the checkpoint's QA head for the answers both tables share."""
        from vlbench.tasks.answer_transfer import transfer_answers

        return transfer_answers(self, model, source, say)

    def loss(self, logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        # LXMERT: mean BCE times the number of answers, i.e. summed over answers.
        return F.binary_cross_entropy_with_logits(logits.float(), batch["target"]) * logits.size(1)

    def predict(self, logits: torch.Tensor, batch: dict[str, Any]) -> list[tuple[str, str]]:
        best = logits.argmax(dim=-1).tolist()
        return [(qid, self.answers[j]) for qid, j in zip(batch["ids"], best, strict=True)]

    @functools.cached_property
    def prior(self) -> dict[str, str]:
        """Most frequent best training answer per question type (read from the data alone)."""
        return answer_prior(self.examples(self.train_split))

    def prior_predictions(self, split: str) -> dict[str, str]:
        """Answer every question with the most frequent training answer of its type."""
        fallback = self.prior.get("", "")
        return {ex.qid: self.prior.get(ex.qtype, fallback) for ex in self.examples(split)}

    def text_only_predictions(self, split: str) -> dict[str, str]:
        """Answers of the learned question-only baseline (:mod:`vlbench.tasks.text_baseline`)."""
        return task_predictions(self, split, text=lambda ex: ex.question,
                                label=lambda ex: best_answer(ex) if ex.label else "",
                                key=lambda ex: ex.qid)

    def baselines(self, split: str) -> dict[str, dict[str, float]]:
        """``prior`` (most frequent training answer per question type) and ``text_only``
        (TF-IDF + logistic regression on the question), scored officially."""
        out = {}
        for name, predictions in (("prior", self.prior_predictions(split)),
                                  ("text_only", self.text_only_predictions(split))):
            metrics, _ = self.score(split, predictions)
            out[name] = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        return out


def build_answer_vocab(examples: Iterable[QAExample], min_count: int = 1) -> list[str]:
    """Training answers seen at least ``min_count`` times (by best-scored answer), most frequent first."""
    counts: Counter[str] = Counter()
    for ex in examples:
        for ans, score in ex.label.items():
            if score >= 0.9:  # count an answer once a question clearly gives it (VQA: >= 3 annotators)
                counts[ans] += 1
    return [a for a, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]


def best_answer(ex: QAExample) -> str:
    """The answer with the highest score (ties: the alphabetically last, as before)."""
    return max(ex.label.items(), key=lambda kv: (kv[1], kv[0]))[0]


def answer_prior(examples: Iterable[QAExample]) -> dict[str, str]:
    """Most frequent best answer per question type (``""`` = over all questions)."""
    per_type: dict[str, Counter[str]] = defaultdict(Counter)
    for ex in examples:
        if ex.label:
            best = best_answer(ex)
            per_type[ex.qtype][best] += 1
            per_type[""][best] += 1
    return {t: max(c.items(), key=lambda kv: (kv[1], kv[0]))[0] for t, c in per_type.items()}
