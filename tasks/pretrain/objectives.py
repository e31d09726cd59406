"""LXMERT's pre-training objectives as registered, switchable plugins.

``mask_lm`` (masked cross-modality language modelling), ``mask_obj`` (masked object
prediction with the sub-losses ``obj_feat``, ``obj_label`` and ``obj_attr``), ``matched``
(cross-modality matching) and ``qa`` (image question answering), as in Tan & Bansal
(2019) and its released code.

An objective does three things: it corrupts the batch and adds its targets at collate time
(:meth:`Objective.prepare_text` before tokenisation, :meth:`Objective.prepare` after), it
names which pre-training heads it needs, and it turns head logits into per-example loss
terms ``(numerator, denominator)``. The batch loss of a term is ``sum(num) / max(sum(den), 1)``
times its weight, so a batch without targets for an objective contributes exactly zero
(never NaN, a known failure of HF's pre-training loss), and validation aggregates the same
terms over the whole split.

A third-party objective subclasses :class:`Objective` and registers itself with
``@register_objective("name")``; ``--set task.objectives=...,name`` switches it on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vlbench.engine.backbone import (
    CROSS_ATTENTION,
    CROSS_MODAL_POOLED,
    LANGUAGE_STATES,
    REGION_STATES,
)
from vlbench.errors import ConfigError
from vlbench.registry import OBJECTIVES, register_objective

from .masking import IGNORE, draw_other, mask_regions, mask_tokens, mismatch, sample_answer

#: visual sub-losses of ``mask_obj`` -> decoder name in LXMERT's ``obj_predict_head``
VISUAL_LOSSES: dict[str, str] = {"obj_feat": "feat", "obj_label": "obj", "obj_attr": "attr"}
#: short names accepted wherever sub-losses are listed (the paper's Table 5 wording)
VISUAL_ALIASES: dict[str, tuple[str, ...]] = {
    "feat": ("obj_feat",), "label": ("obj_label", "obj_attr"), "obj": ("obj_label",),
    "attr": ("obj_attr",),
}
DEFAULT_OBJECTIVES: tuple[str, ...] = ("mask_lm", "mask_obj", "matched", "qa")


# -- answer normalisation -----------------------------------------------------------------

_NUMBER_WORDS = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ANSWER_CONVERT = {**_NUMBER_WORDS, "grey": "gray"}


def normalize_answer(answer: str) -> str:
    """LXMERT's answer-table normalisation (``AnswerTable.convert_ans``): lower-case, drop a
    trailing period and a leading article, number words to digits, ``grey`` to ``gray``."""
    ans = answer.strip().lower()
    if ans.endswith("."):
        ans = ans[:-1].strip()
    ans = re.sub(r"^(a|an|the)\s+", "", ans).strip()
    return _ANSWER_CONVERT.get(ans, ans)


# -- what objectives see ------------------------------------------------------------------


@dataclass
class MaskContext:
    """Everything collate-time corruption needs besides the batch itself.

    ``pool`` is the split's examples (sentences about other images for ``matched``, regions
    of other images for ``mask_obj``); ``generator`` is None for the global RNG.
    """

    tokenizer: Any
    features: Any
    max_boxes: int
    pool: Sequence[Any]
    pool_img_ids: Sequence[str]
    answer_index: dict[str, int]
    config: Any
    generator: torch.Generator | None = None
    candidate_ids: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))


Terms = dict[str, tuple[Tensor, Tensor]]


class Objective:
    """One pre-training task: its corruption, its heads, its per-example loss terms."""

    name: ClassVar[str]
    #: named losses this objective can produce (the sub-losses that are switched on are
    #: those returned by :meth:`loss_names`)
    visual_decoders: ClassVar[tuple[str, ...]] = ()
    needs_qa_head: ClassVar[bool] = False
    #: what the backbone must provide for this objective to mean anything
    requires: ClassVar[frozenset[str]] = frozenset()
    #: why, said when a backbone lacks it
    why: ClassVar[str] = ""

    def __init__(self, config: Any):
        self.config = config

    def loss_names(self) -> list[str]:
        return [self.name]

    def decoders(self) -> list[str]:
        """``obj_predict_head`` decoders this objective needs (subset of obj, attr, feat)."""
        return list(self.visual_decoders)

    def weight(self, loss_name: str) -> float:
        return float(getattr(self.config, f"weight_{self.name}", 1.0))

    def prepare_text(self, batch: dict[str, Any], ctx: MaskContext) -> None:
        """Change the sentences before tokenisation (default: nothing)."""

    def prepare(self, batch: dict[str, Any], ctx: MaskContext) -> None:
        """Corrupt tokenised inputs / regions and add targets (default: nothing)."""

    def terms(self, logits: dict[str, Tensor], batch: dict[str, Any]) -> Terms:
        """Per-example ``(numerator, denominator)`` of each named, unweighted loss."""
        raise NotImplementedError

    def accuracy(self, logits: dict[str, Tensor], batch: dict[str, Any]) -> Terms:
        """Per-example ``(correct, count)`` of each named accuracy (default: none)."""
        return {}

    def losses(self, logits: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor]:
        """Named, weighted batch losses: ``weight * sum(num) / max(sum(den), 1)``."""
        return {name: self.weight(name) * num.sum() / den.sum().clamp(min=1.0)
                for name, (num, den) in self.terms(logits, batch).items()}


# -- the four LXMERT objectives -------------------------------------------------------------


@register_objective("mask_lm", description="Masked cross-modality LM: 15% of words (80/10/10)")
class MaskedLM(Objective):
    """Masked cross-modality language modelling: predict masked words from words and regions."""

    name = "mask_lm"
    requires = frozenset({LANGUAGE_STATES})
    why = "it predicts masked words from their output states"

    def prepare(self, batch: dict[str, Any], ctx: MaskContext) -> None:
        ids, tok = batch["input_ids"], ctx.tokenizer
        maskable = batch["attention_mask"].bool() & (ids != tok.cls_id) & (ids != tok.sep_id)
        batch["input_ids"], batch["lm_labels"] = mask_tokens(
            ids, maskable, mask_id=tok.mask_id, candidate_ids=ctx.candidate_ids,
            prob=ctx.config.word_mask_prob, generator=ctx.generator)

    def terms(self, logits: dict[str, Tensor], batch: dict[str, Any]) -> Terms:
        lm, labels = logits["lm"].float(), batch["lm_labels"]
        ce = F.cross_entropy(lm.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
        return {self.name: (ce.sum(1), (labels != IGNORE).sum(1).float())}

    def accuracy(self, logits: dict[str, Tensor], batch: dict[str, Any]) -> Terms:
        labels = batch["lm_labels"]
        target = labels != IGNORE
        correct = (logits["lm"].argmax(-1) == labels) & target
        return {"mlm": (correct.sum(1).float(), target.sum(1).float())}


@register_objective("mask_obj", description="Masked object prediction: 15% of regions; "
                    "feature regression, object and attribute labels")
class MaskedObject(Objective):
    """Masked object prediction on 15% of the regions (80% zeroed, 10% swapped, 10% kept).

    ``obj_feat`` regresses the ORIGINAL feature (smooth-L1, mean over dimensions);
    ``obj_label`` / ``obj_attr`` classify the detector's object / attribute label, each
    weighted by the detector's confidence. Every sub-loss is a sum over the masked regions
    divided by the number of real regions, times ``visual_loss_weight`` (6.67 = 1 / 0.15).
    The paper predicts masked objects only; the released code's classification losses also
    cover unmasked regions, which this implementation does not copy.
    """

    name = "mask_obj"
    requires = frozenset({REGION_STATES})
    why = "it predicts masked regions from their output states"

    def loss_names(self) -> list[str]:
        return list(self.config.visual_losses)

    def decoders(self) -> list[str]:
        return [VISUAL_LOSSES[n] for n in self.config.visual_losses]

    def weight(self, loss_name: str) -> float:
        return float(self.config.weight_mask_obj) * float(self.config.visual_loss_weight)

    def prepare(self, batch: dict[str, Any], ctx: MaskContext) -> None:
        feats, real = batch["visual_feats"], batch["visual_attention_mask"].bool()
        img_ids = batch["img_ids"]

        def other_region(b: int) -> Tensor:
            j = draw_other(len(ctx.pool_img_ids), lambda k: ctx.pool_img_ids[k] == img_ids[b],
                           ctx.generator)
            regions = ctx.features.get(ctx.pool_img_ids[j]).features
            r = int(torch.randint(len(regions), (1,), generator=ctx.generator))
            return torch.tensor(np.asarray(regions[r]), dtype=feats.dtype)

        batch["feat_target"] = feats  # the unmasked features: mask_regions copies before masking
        batch["visual_feats"], batch["obj_mask"] = mask_regions(
            feats, real, other_region=other_region, prob=ctx.config.obj_mask_prob,
            generator=ctx.generator)

    def terms(self, logits: dict[str, Tensor], batch: dict[str, Any]) -> Terms:
        mask = batch["obj_mask"]
        regions = batch["visual_attention_mask"].float().sum(1)
        out: Terms = {}
        for name in self.config.visual_losses:
            pred = logits[VISUAL_LOSSES[name]].float()
            if name == "obj_feat":
                per_region = F.smooth_l1_loss(pred, batch["feat_target"], reduction="none").mean(-1)
                weight = mask
            else:
                key = "obj" if name == "obj_label" else "attr"
                labels = batch[f"{key}_labels"]
                per_region = F.cross_entropy(pred.transpose(1, 2), labels, ignore_index=IGNORE,
                                             reduction="none")
                weight = mask * batch[f"{key}_confs"]
            out[name] = ((per_region * weight).sum(1), regions)
        return out

    def accuracy(self, logits: dict[str, Tensor], batch: dict[str, Any]) -> Terms:
        out: Terms = {}
        for name in self.config.visual_losses:
            if name == "obj_feat":
                continue
            key = "obj" if name == "obj_label" else "attr"
            labels = batch[f"{key}_labels"]
            target = batch["obj_mask"].bool() & (labels != IGNORE)
            correct = (logits[key].argmax(-1) == labels) & target
            out[name] = (correct.sum(1).float(), target.sum(1).float())
        return out


@register_objective("matched", description="Cross-modality matching: 50% mismatched sentences")
class Matched(Objective):
    """Cross-modality matching: is the sentence about this image? Half the sentences are
    replaced by a sentence about another image (then they get no QA target)."""

    name = "matched"
    requires = frozenset({CROSS_MODAL_POOLED, CROSS_ATTENTION})
    why = ("it asks whether sentence and image match, which needs words and regions that "
           "attend to each other")

    def prepare_text(self, batch: dict[str, Any], ctx: MaskContext) -> None:
        swaps = mismatch(batch["img_ids"], ctx.pool_img_ids, prob=ctx.config.mismatch_prob,
                         generator=ctx.generator)
        for i, j in enumerate(swaps):
            if j is not None:
                batch["sentences"][i] = ctx.pool[j].sent
                batch["is_matched"][i] = 0

    def terms(self, logits: dict[str, Tensor], batch: dict[str, Any]) -> Terms:
        ce = F.cross_entropy(logits["matched"].float(), batch["is_matched"], reduction="none")
        return {self.name: (ce, torch.ones_like(ce))}

    def accuracy(self, logits: dict[str, Tensor], batch: dict[str, Any]) -> Terms:
        correct = (logits["matched"].argmax(-1) == batch["is_matched"]).float()
        return {"matched": (correct, torch.ones_like(correct))}


@register_objective("qa", description="Image QA over a joint answer table (no target on "
                    "mismatched pairs)")
class ImageQA(Objective):
    """Image question answering over the joint answer table of every QA source in the
    corpus. Captions, answers outside the table and mismatched pairs have no target."""

    name = "qa"
    requires = frozenset({CROSS_MODAL_POOLED})
    why = "it answers questions about the image from a state that has read both"
    needs_qa_head = True

    def prepare(self, batch: dict[str, Any], ctx: MaskContext) -> None:
        targets = []
        for label, matched in zip(batch["labels"], batch["is_matched"].tolist(), strict=True):
            known = {ctx.answer_index[a]: s for a, s in (label or {}).items() if a in ctx.answer_index}
            targets.append(sample_answer(known, ctx.generator) if known and matched else IGNORE)
        batch["qa_target"] = torch.tensor(targets, dtype=torch.long)

    def terms(self, logits: dict[str, Tensor], batch: dict[str, Any]) -> Terms:
        target = batch["qa_target"]
        ce = F.cross_entropy(logits["qa"].float(), target, ignore_index=IGNORE, reduction="none")
        return {self.name: (ce, (target != IGNORE).float())}

    def accuracy(self, logits: dict[str, Tensor], batch: dict[str, Any]) -> Terms:
        target = batch["qa_target"]
        has = target != IGNORE
        correct = (logits["qa"].argmax(-1) == target) & has
        return {"qa": (correct.float(), has.float())}


# -- choosing objectives ----------------------------------------------------------------------


def expand_names(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split task names into objectives and visual sub-losses.

    ``obj_feat`` / ``obj_label`` / ``obj_attr`` (or the aliases ``feat``, ``label`` = object
    and attribute, ``obj``, ``attr``) switch on ``mask_obj`` with just those sub-losses;
    ``mask_obj`` alone means all three. Unknown names raise :class:`ConfigError`.
    """
    objectives: list[str] = []
    visual: list[str] = []
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        subs = (name,) if name in VISUAL_LOSSES else VISUAL_ALIASES.get(name)
        if subs is not None:
            visual += [s for s in subs if s not in visual]
            name = "mask_obj"
        elif name not in OBJECTIVES:
            OBJECTIVES.get(name)  # raises the registry's "did you mean" error
        if name not in objectives:
            objectives.append(name)
    if "mask_obj" in objectives and not visual:
        visual = list(VISUAL_LOSSES)
    return objectives, [v for v in VISUAL_LOSSES if v in visual]


def resolve_tasks(tasks: Sequence[str] | None = None, drop: Sequence[str] = ()
                  ) -> tuple[list[str], list[str]]:
    """``--tasks`` and ``--drop-task`` -> (objectives, visual sub-losses).

    ``tasks`` defaults to all four LXMERT objectives with all three visual sub-losses.
    Dropping a sub-loss keeps ``mask_obj`` with the others; dropping the last one (or
    ``mask_obj``) removes masked object prediction altogether.
    """
    objectives, visual = expand_names(list(tasks) if tasks else list(DEFAULT_OBJECTIVES))
    for raw in drop:
        name = raw.strip()
        if not name:
            continue
        if name in VISUAL_LOSSES or name in VISUAL_ALIASES:
            _, gone_visual = expand_names([name])
            visual = [v for v in visual if v not in gone_visual]
            if not visual and "mask_obj" in objectives:
                objectives.remove("mask_obj")
            continue
        if name not in objectives:
            raise ConfigError(f"--drop-task {name}: not among the pre-training tasks "
                              f"({', '.join(objectives)})")
        objectives.remove(name)
        if name == "mask_obj":
            visual = []
    if not objectives:
        raise ConfigError("no pre-training task left to train; keep at least one of "
                          f"{', '.join(DEFAULT_OBJECTIVES)}")
    return objectives, visual


def build_objectives(config: Any) -> list[Objective]:
    """Instantiate the configured objectives (checked against the registry)."""
    if not config.objectives:
        raise ConfigError("task.objectives is empty; name at least one of "
                          f"{', '.join(OBJECTIVES.names())}")
    bad = [v for v in config.visual_losses if v not in VISUAL_LOSSES]
    if bad:
        raise ConfigError(f"task.visual_losses: unknown {', '.join(bad)}; choose from "
                          f"{', '.join(VISUAL_LOSSES)}")
    if "mask_obj" in config.objectives and not config.visual_losses:
        raise ConfigError("task.objectives has mask_obj but task.visual_losses is empty; "
                          "name at least one of obj_feat, obj_label, obj_attr or drop mask_obj")
    return [OBJECTIVES.get(name)(config) for name in dict.fromkeys(config.objectives)]


def task_overrides(tasks: Sequence[str] | None = None, drop: Sequence[str] = ()) -> dict[str, str]:
    """``--tasks`` / ``--drop-task`` as config overrides of the ``pretrain`` task."""
    objectives, visual = resolve_tasks(tasks, drop)
    return {"task.objectives": ",".join(objectives), "task.visual_losses": ",".join(visual)}
