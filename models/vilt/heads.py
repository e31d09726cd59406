"""ViLT's task and pre-training heads, with HF transformers' (and the released ViLT code's)
parameter names.

- QA: :class:`ViltForQuestionAnswering`, HF's VQA classifier on the pooled state: Linear(h, 2h)
  -> LayerNorm -> GeLU -> Linear(2h, answers), keys ``classifier.0/1/3``.
- NLVR2: :class:`ViltForImagesAndTextClassification`, HF's classifier on the pooled states of
  an example's two images concatenated: Linear(2h, 2h) -> LayerNorm -> GeLU -> Linear(2h, 2).
  vlbench's NLVR2 batches hold the two images of an example in adjacent rows, the layout
  HF's model concatenates.
- Pre-training: :class:`ViltPretrainingHeads`: ``mlm_score`` (masked LM, HF
  ``ViltForMaskedLM``'s keys, its decoder tied to the word embeddings), ``itm_score.fc``
  (image-text matching on the pooled state, the released code's name; HF has no ITM model) and
  ``vqa_classifier`` (image QA, the released code's name). A masked-region head does not
  apply to patches.

Both classifiers' LayerNorms use PyTorch's default eps (1e-5), as HF's do, not
``layer_norm_eps``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Self

import torch
from torch import Tensor, nn

from vlbench.engine.backbone import BackboneOutput

from ..common.init import init_bert_weights
from ..common.linear import Linear, linear
from ..common.pretraining import PredictionHeadTransform
from .config import ViltConfig

#: NLVR2's labels: two images per example, two classes ("False", "True")
NLVR2_IMAGES = 2
NLVR2_LABELS = 2
#: the key of a classifier whose rows are its classes (answers)
QA_ROWS = "3.weight"


def classifier(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    """Linear -> LayerNorm -> GeLU -> Linear, as ViLT's VQA and NLVR2 classifiers."""
    return nn.Sequential(
        Linear(in_features, hidden),
        nn.LayerNorm(hidden),  # PyTorch's default eps, as HF's
        nn.GELU(),  # exact (erf) GeLU
        Linear(hidden, out_features),
    )


class ViltForQuestionAnswering(nn.Module):
    """HF's ViLT VQA classifier on the pooled [CLS] state: h -> 2h -> LN -> GeLU -> answers."""

    def __init__(self, config: ViltConfig, num_answers: int):
        super().__init__()
        self.num_answers = num_answers
        self.classifier = classifier(config.hidden_size, 2 * config.hidden_size, num_answers)
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def forward(self, output: BackboneOutput, batch: Mapping[str, Any] | None = None) -> Tensor:
        """Backbone output -> (B, answers) logits (the batch is not read)."""
        return self.classifier(output.pooled)


class ViltForImagesAndTextClassification(nn.Module):
    """HF's ViLT NLVR2 classifier on the concatenated pooled states of an example's images."""

    def __init__(self, config: ViltConfig, num_images: int = NLVR2_IMAGES,
                 num_labels: int = NLVR2_LABELS):
        super().__init__()
        self.num_images = num_images
        width = num_images * config.hidden_size
        self.classifier = classifier(width, width, num_labels)
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def forward(self, output: BackboneOutput, batch: Mapping[str, Any] | None = None) -> Tensor:
        """Backbone output of (sentence, image) rows, an example's images in adjacent rows
        ((num_images * B, H) pooled states) -> (B, num_labels) logits."""
        pooled = output.pooled
        return self.classifier(pooled.reshape(-1, self.num_images * pooled.shape[-1]))


def build_qa_head(config: ViltConfig, num_answers: int) -> ViltForQuestionAnswering:
    """The QA head the task models put on a ViLT backbone."""
    return ViltForQuestionAnswering(config, num_answers)


def build_nlvr2_head(config: ViltConfig) -> ViltForImagesAndTextClassification:
    """The NLVR2 head the task models put on a ViLT backbone (image pairs)."""
    if config.num_images not in (-1, 1, NLVR2_IMAGES):
        raise ValueError(f"NLVR2 pairs two images, but this ViLT reads num_images "
                         f"{config.num_images} per example")
    return ViltForImagesAndTextClassification(config)


class TiedDecoder(nn.Module):
    """Logits over the vocabulary: the word-embedding table (tied, read from the backbone at
    call time, so it is saved and stepped once) and an own output ``bias``."""

    def __init__(self, vocab_size: int, word_embeddings: nn.Embedding):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self._word_embeddings = (word_embeddings,)  # a tuple: not registered as a submodule

    @property
    def weight(self) -> Tensor:
        return self._word_embeddings[0].weight

    def forward(self, hidden: Tensor) -> Tensor:
        return linear(hidden, self.weight, self.bias)


class ViltMLMHead(nn.Module):
    """HF's ``ViltMLMHead``: ``transform`` (dense -> GeLU -> LayerNorm), then the tied
    ``decoder``."""

    def __init__(self, config: ViltConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = PredictionHeadTransform(config)
        self.decoder = TiedDecoder(config.vocab_size, word_embeddings)

    def forward(self, language: Tensor) -> Tensor:
        return self.decoder(self.transform(language))


class ViltITMHead(nn.Module):
    """Image-text matching on the pooled state (the released code's ``ITMHead``: ``fc``)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.fc = Linear(hidden_size, 2)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.fc(pooled)


class ViltPretrainingHeads(nn.Module):
    """ViLT's pre-training heads over one backbone output.

    Args:
        config: the backbone config (vocabulary, widths, ``num_qa_labels``).
        word_embeddings: the backbone's word-embedding table; the masked-LM decoder uses it.
        itm: whether to build the matching head ``itm_score``.
        qa: whether to build the image-QA head ``vqa_classifier``.
    """

    def __init__(self, config: ViltConfig, word_embeddings: nn.Embedding, itm: bool = True,
                 qa: bool = True):
        super().__init__()
        self.mlm_score = ViltMLMHead(config, word_embeddings)
        self.itm_score = ViltITMHead(config.hidden_size) if itm else None
        self.vqa_classifier = (classifier(config.hidden_size, 2 * config.hidden_size,
                                          config.num_qa_labels) if qa else None)
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))
        nn.init.zeros_(self.mlm_score.decoder.bias)

    @classmethod
    def for_backbone(cls, config: ViltConfig, backbone: nn.Module, visual_losses: Sequence[str],
                     num_answers: int) -> Self:
        """The heads for pre-training ``backbone``: masked LM, matching and, when
        ``num_answers`` > 0, an answer head of that many rows. ViLT has no masked-region
        decoders: ``visual_losses`` must be empty."""
        if visual_losses:
            raise ValueError(f"ViLT has no masked-region heads ({', '.join(visual_losses)}): "
                             "a masked-region objective does not apply to patches")
        config = dataclasses.replace(config, num_qa_labels=max(num_answers, 1))
        return cls(config, backbone.get_input_embeddings(), qa=num_answers > 0)

    @classmethod
    def sized_as(cls, state: Mapping[str, Tensor], config: ViltConfig, backbone: nn.Module
                 ) -> Self:
        """Fresh heads shaped as a stored ``state`` of such heads: the matching and answer
        heads when it has them, the answer head with its stored rows."""
        rows = state.get(f"vqa_classifier.{QA_ROWS}")
        config = dataclasses.replace(
            config, num_qa_labels=rows.shape[0] if rows is not None else config.num_qa_labels)
        return cls(config, backbone.get_input_embeddings(),
                   itm="itm_score.fc.weight" in state, qa=rows is not None)

    def forward(self, output: BackboneOutput) -> dict[str, Tensor]:
        """Logits of every head: ``lm`` (B, T, vocab), ``matched`` (B, 2), ``qa`` (B, answers)
        for the heads that exist."""
        logits = {"lm": self.mlm_score(output.language)}
        if self.itm_score is not None:
            logits["matched"] = self.itm_score(output.pooled)
        if self.vqa_classifier is not None:
            logits["qa"] = self.vqa_classifier(output.pooled)
        return logits
