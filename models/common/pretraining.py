"""Pre-training heads shared by the families, named as HF's ``*ForPreTraining`` and LXMERT's
released code.

Keys: ``cls.predictions.{transform,bias}`` and ``cls.seq_relationship`` (BERT's, hence the
same in HF's ``LxmertForPreTraining`` and ``VisualBertForPreTraining``),
``obj_predict_head.{transform,decoder_dict.{obj,attr,feat}}`` and ``answer_head.logit_fc``
(LXMERT's). The masked-LM decoder weight is the backbone's word-embedding table (tied). It is
read from the backbone at call time rather than registered here, so it is saved once, appears
once in ``parameters()`` and is stepped once by an optimizer over backbone + heads.
Losses live with the pre-training objectives, not here.

Sizes come from the family config (:class:`HeadSizes`): any config with those fields works.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlbench.engine.backbone import BackboneOutput

from ..heads import QAHead
from .init import init_bert_weights
from .linear import Linear, linear

VISUAL_LOSSES = ("obj", "attr", "feat")


class HeadSizes(Protocol):
    """The fields the pre-training heads read from a family config."""

    hidden_size: int
    vocab_size: int
    layer_norm_eps: float
    initializer_range: float
    visual_feat_dim: int  # the feature-regression target's size
    num_object_labels: int
    num_attr_labels: int
    num_qa_labels: int


class PredictionHeadTransform(nn.Module):
    """``LayerNorm(gelu(dense(x)))`` before a prediction decoder."""

    def __init__(self, config: HeadSizes):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.LayerNorm(F.gelu(self.dense(hidden)))


class LMPredictionHead(nn.Module):
    """Masked-LM logits: transform, then the tied word-embedding decoder plus an output bias."""

    def __init__(self, config: HeadSizes, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = PredictionHeadTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self._word_embeddings = (word_embeddings,)  # a tuple: not registered as a submodule

    @property
    def decoder_weight(self) -> Tensor:
        return self._word_embeddings[0].weight

    def forward(self, language: Tensor) -> Tensor:
        return linear(self.transform(language), self.decoder_weight, self.bias)


class PreTrainingHeads(nn.Module):
    """Masked-LM (``predictions``) and matching (``seq_relationship``) heads: BERT's ``cls``."""

    def __init__(self, config: HeadSizes, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = LMPredictionHead(config, word_embeddings)
        self.seq_relationship = Linear(config.hidden_size, 2)


class VisualObjHead(nn.Module):
    """Masked-object heads on region states: object label, attribute label, feature regression."""

    def __init__(self, config: HeadSizes, visual_losses: Sequence[str] = VISUAL_LOSSES):
        super().__init__()
        sizes = {
            "obj": config.num_object_labels,
            "attr": config.num_attr_labels,
            "feat": config.visual_feat_dim,
        }
        unknown = [name for name in visual_losses if name not in sizes]
        if unknown:
            raise ValueError(f"unknown visual losses {unknown}; known: {list(sizes)}")
        self.transform = PredictionHeadTransform(config)
        self.decoder_dict = nn.ModuleDict(
            {name: Linear(config.hidden_size, sizes[name]) for name in visual_losses}
        )

    def forward(self, vision: Tensor) -> dict[str, Tensor]:
        hidden = self.transform(vision)
        return {name: decoder(hidden) for name, decoder in self.decoder_dict.items()}


class PretrainingHeads(nn.Module):
    """Every pre-training head over one backbone output.

    A family subclasses it under its own name (the class name is stored in checkpoints).

    Args:
        config: the backbone config (sizes of the vocabulary, labels and features).
        word_embeddings: the backbone's word-embedding table; the masked-LM decoder uses it.
        visual_losses: which masked-object decoders to build (subset of obj, attr, feat).
        qa: whether to build the image-QA ``answer_head`` (``config.num_qa_labels`` answers).
    """

    def __init__(
        self,
        config: HeadSizes,
        word_embeddings: nn.Embedding,
        visual_losses: Sequence[str] = VISUAL_LOSSES,
        qa: bool = True,
    ):
        super().__init__()
        self.config = config
        self.cls = PreTrainingHeads(config, word_embeddings)
        self.obj_predict_head = VisualObjHead(config, visual_losses) if visual_losses else None
        self.answer_head = (
            QAHead(config.hidden_size, config.num_qa_labels, config.layer_norm_eps,
                   config.initializer_range)
            if qa else None
        )
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))
        nn.init.zeros_(self.cls.predictions.bias)

    @classmethod
    def for_backbone(cls, config: Any, backbone: nn.Module, visual_losses: Sequence[str],
                     num_answers: int) -> Self:
        """The heads for pre-training ``backbone`` (built from ``config``, a family config):
        the masked-object decoders of ``visual_losses`` and, when ``num_answers`` > 0, an
        answer head of that many rows."""
        config = dataclasses.replace(config, num_qa_labels=max(num_answers, 1))
        return cls(config, backbone.get_input_embeddings(), visual_losses=tuple(visual_losses),
                   qa=num_answers > 0)

    @classmethod
    def sized_as(cls, state: Mapping[str, Tensor], config: Any, backbone: nn.Module) -> Self:
        """Fresh heads shaped as a stored ``state`` of such heads: its visual decoders, its
        answer head if it has one, and its label counts."""
        losses = tuple(n for n in VISUAL_LOSSES
                       if f"obj_predict_head.decoder_dict.{n}.weight" in state)
        # Label counts as stored, not the backbone config's: pre-training sizes the answer
        # head to its answer list.
        sizes = {name: state[key].shape[0] for name, key in (
            ("num_qa_labels", "answer_head.logit_fc.3.weight"),
            ("num_object_labels", "obj_predict_head.decoder_dict.obj.weight"),
            ("num_attr_labels", "obj_predict_head.decoder_dict.attr.weight")) if key in state}
        qa = any(k.startswith("answer_head.") for k in state)
        return cls(dataclasses.replace(config, **sizes), backbone.get_input_embeddings(), losses,
                   qa)

    def forward(self, output: BackboneOutput) -> dict[str, Tensor]:
        """Logits of every head for a backbone output (``.language``, ``.vision``, ``.pooled``).

        Returns ``lm`` (B, T, vocab), ``matched`` (B, 2), ``obj`` / ``attr`` / ``feat``
        (B, R, n) for the visual decoders that exist, and ``qa`` (B, num_qa_labels).
        """
        logits = {
            "lm": self.cls.predictions(output.language),
            "matched": self.cls.seq_relationship(output.pooled),
        }
        if self.obj_predict_head is not None:
            logits.update(self.obj_predict_head(output.vision))
        if self.answer_head is not None:
            logits["qa"] = self.answer_head(output.pooled)
        return logits
