"""The late-fusion backbone: words and regions encoded apart, fused in the pooled state.

LXMERT's language and object-relationship encoders (same modules, same keys) with no
cross-modality layers. The pooled state is the element-wise product of the pooled [CLS]
state and the pooled regions, so the task heads (QA over the pooled state, NLVR2's pair
head) read a fusion of both modalities that no attention layer produced.
"""

from __future__ import annotations

from torch import Tensor, nn

from vlbench.engine.backbone import BackboneOutput

from ..common.init import init_bert_weights
from ..common.layers import Pooler, RegionPooler, additive_attention_mask, compute_dtype
from ..lxmert.modeling import LanguageEmbeddings, LxmertEncoder
from .config import LateFusionConfig


class LateFusionModel(nn.Module):
    """Embeddings, LXMERT's encoder with ``x_layers=0``, and the two poolers."""

    config_class = LateFusionConfig

    def __init__(self, config: LateFusionConfig):
        super().__init__()
        self.config = config
        self.embeddings = LanguageEmbeddings(config)
        self.encoder = LxmertEncoder(config)
        self.pooler = Pooler(config)
        self.visn_pooler = RegionPooler(config)
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        visual_feats: Tensor | None = None,
        visual_pos: Tensor | None = None,
        visual_attention_mask: Tensor | None = None,
    ) -> BackboneOutput:
        """Inputs as :class:`~models.lxmert.modeling.LxmertModel`'s."""
        if visual_feats is None or visual_pos is None:
            raise ValueError("LateFusionModel needs both visual_feats and visual_pos")
        lang = self.embeddings(input_ids, token_type_ids)
        dtype = compute_dtype(lang)
        lang, visn = self.encoder(
            lang, additive_attention_mask(attention_mask, dtype), visual_feats, visual_pos,
            additive_attention_mask(visual_attention_mask, dtype),
        )
        pooled = self.pooler(lang) * self.visn_pooler(visn, visual_attention_mask)
        return BackboneOutput(language=lang, vision=visn, pooled=pooled)
