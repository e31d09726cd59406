"""Pre-training heads of the vision-only baseline: the masked-object decoders alone.

The other objectives need words (masked LM, and matching and QA, which need a state that has
read both modalities), so the only heads a model without text can train are LXMERT's
``obj_predict_head`` decoders, under LXMERT's keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Self

from torch import Tensor, nn

from vlbench.engine.backbone import BackboneOutput

from ..common.init import init_bert_weights
from ..common.pretraining import VISUAL_LOSSES, VisualObjHead


class RegionPretrainingHeads(nn.Module):
    """``obj_predict_head``: the masked-object decoders of ``visual_losses``."""

    def __init__(self, config: Any, visual_losses: Sequence[str]):
        super().__init__()
        self.obj_predict_head = VisualObjHead(config, visual_losses)
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))

    @classmethod
    def for_backbone(cls, config: Any, backbone: nn.Module, visual_losses: Sequence[str],
                     num_answers: int) -> Self:
        """As ``ModelSpec.pretraining_heads`` is called; ``num_answers`` must be 0 (the QA
        objective is refused before this is reached)."""
        return cls(config, visual_losses)

    @classmethod
    def sized_as(cls, state: Mapping[str, Tensor], config: Any, backbone: nn.Module) -> Self:
        """Fresh heads with the decoders a stored ``state`` has."""
        losses = [n for n in VISUAL_LOSSES if f"obj_predict_head.decoder_dict.{n}.weight" in state]
        return cls(config, losses)

    def forward(self, output: BackboneOutput) -> dict[str, Tensor]:
        """``obj`` / ``attr`` / ``feat`` logits (B, R, n) of the decoders that exist."""
        return self.obj_predict_head(output.vision)
