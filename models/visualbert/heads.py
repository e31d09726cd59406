"""VisualBERT's task and pre-training heads.

- QA: :class:`VisualBertForQuestionAnswering`, HF's VQA head: the state of the last text token
  (index ``attention_mask.sum(1) - 2``, the word before ``[SEP]``, as in the original code),
  dropout, ``cls`` Linear(hidden, answers). Keys ``cls.weight`` / ``cls.bias`` as in HF.
- NLVR2: none of its own. HF's ``VisualBertForVisualReasoning`` classifies one
  (sentence, both images) sequence, while vlbench's NLVR2 task encodes (sentence, image0) and
  (sentence, image1) separately; VisualBERT uses the shared ``NLVR2Head`` on the concatenated
  pooled pair, like every family.
- Pre-training: :class:`VisualBertPretrainingHeads`, the shared heads with HF
  ``VisualBertForPreTraining``'s ``cls.*`` keys (masked LM tied to the word embeddings,
  sentence-image matching on the pooled state) plus vlbench's ``obj_predict_head`` on the
  region states and ``answer_head``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from vlbench.engine.backbone import BackboneOutput

from ..common.init import init_bert_weights
from ..common.linear import Linear
from ..common.pretraining import PretrainingHeads
from .config import VisualBertConfig


class VisualBertForQuestionAnswering(nn.Module):
    """HF's VisualBERT VQA classifier on the last text token's final state."""

    def __init__(self, config: VisualBertConfig, num_answers: int):
        super().__init__()
        self.num_answers = num_answers
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.cls = Linear(config.hidden_size, num_answers)
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def forward(self, output: BackboneOutput, batch: Mapping[str, Any] | None = None) -> Tensor:
        """Backbone output and the batch (its text ``attention_mask``) -> (B, answers) logits."""
        language = output.language
        mask = (batch or {}).get("attention_mask")
        if mask is None:
            last = torch.full((language.shape[0],), language.shape[1] - 2, device=language.device)
        else:
            last = mask.sum(1) - 2  # [CLS] w1 .. wn [SEP] + padding: wn sits at sum - 2
        state = language[torch.arange(language.shape[0], device=language.device), last.long()]
        return self.cls(self.dropout(state))


def build_qa_head(config: VisualBertConfig, num_answers: int) -> VisualBertForQuestionAnswering:
    """The QA head the task models put on a VisualBERT backbone."""
    return VisualBertForQuestionAnswering(config, num_answers)


class VisualBertPretrainingHeads(PretrainingHeads):
    """VisualBERT's pre-training heads over one backbone output: ``cls.predictions`` (masked
    LM, tied to the word embeddings), ``cls.seq_relationship`` (sentence-image matching on the
    pooled [CLS]), ``obj_predict_head`` (masked-object decoders on the region states) and
    ``answer_head`` (image QA)."""
