"""Task heads on a backbone's pooled output, shared by every backbone.

Parameter names follow the released LXMERT fine-tuning code (``logit_fc.0/2/3``), which HF's
``LxmertVisualAnswerHead`` also uses, so fine-tuned checkpoints load key for key.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .common.init import init_bert_weights
from .common.linear import Linear


def _logit_fc(in_features: int, hidden: int, out_features: int, eps: float) -> nn.Sequential:
    """Linear -> GeLU -> LayerNorm -> Linear, as in the LXMERT QA and NLVR2 classifiers."""
    return nn.Sequential(
        Linear(in_features, hidden),
        nn.GELU(),  # exact (erf) GeLU, as the original
        nn.LayerNorm(hidden, eps=eps),
        Linear(hidden, out_features),
    )


class QAHead(nn.Module):
    """Answer classifier on the pooled [CLS] state: h -> 2h -> GeLU -> LN -> num_answers."""

    def __init__(
        self,
        hidden_size: int,
        num_answers: int,
        layer_norm_eps: float = 1e-12,
        initializer_range: float = 0.02,
    ):
        super().__init__()
        self.num_answers = num_answers
        self.logit_fc = _logit_fc(hidden_size, 2 * hidden_size, num_answers, layer_norm_eps)
        self.apply(lambda m: init_bert_weights(m, initializer_range))

    def forward(self, pooled: Any, batch: Any = None) -> Tensor:
        """(B, H) pooled states (or a backbone output: its ``.pooled``) -> (B, num_answers)."""
        return self.logit_fc(getattr(pooled, "pooled", pooled))


class NLVR2Head(nn.Module):
    """NLVR2 classifier: the pooled states of (sentence, image0) and (sentence, image1) are
    concatenated and mapped 2h -> 2h -> GeLU -> LN -> 2 (false/true)."""

    def __init__(
        self, hidden_size: int, layer_norm_eps: float = 1e-12, initializer_range: float = 0.02
    ):
        super().__init__()
        self.hidden_size = hidden_size
        self.logit_fc = _logit_fc(2 * hidden_size, 2 * hidden_size, 2, layer_norm_eps)
        self.apply(lambda m: init_bert_weights(m, initializer_range))

    def forward(self, pooled: Any, batch: Any = None) -> Tensor:
        """Pooled states of the two images of each example (or a backbone output: its
        ``.pooled``) -> (B, 2) logits.

        Accepts (B, 2, H), (B, 2H), or (2B, H) with the two images of an example adjacent
        (the released code's layout).
        """
        pooled = getattr(pooled, "pooled", pooled)
        return self.logit_fc(pooled.reshape(-1, 2 * self.hidden_size))
