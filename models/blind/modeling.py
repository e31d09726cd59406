"""Blind backbones: one modality in, the other never read.

``TextOnlyModel`` encodes the words with LXMERT's language encoder and pools [CLS];
``VisionOnlyModel`` encodes the regions with LXMERT's object-relationship encoder and pools
their mean. Neither reads the inputs of the modality it lacks (only the batch shape, to
return states of the shape every backbone returns): their states for that modality are
zeros, and their pooled state depends on their own modality alone.
"""

from __future__ import annotations

from torch import Tensor, nn

from vlbench.engine.backbone import BackboneOutput

from ..common.init import init_bert_weights
from ..common.layers import (
    Pooler,
    RegionPooler,
    SingleModalityLayer,
    additive_attention_mask,
    build_stack,
    compute_dtype,
)
from ..lxmert.modeling import LanguageEmbeddings, VisualFeatEncoder
from .config import TextOnlyConfig, VisionOnlyConfig


def _regions_shape(visual_feats: Tensor | None, visual_attention_mask: Tensor | None) -> int:
    """How many region positions the batch has (0 when it has none)."""
    for t in (visual_attention_mask, visual_feats):
        if t is not None:
            return t.shape[1]
    return 0


class TextEncoder(nn.Module):
    """LXMERT's language encoder under LXMERT's key (``encoder.layer.N``)."""

    def __init__(self, config: TextOnlyConfig):
        super().__init__()
        self.layer = build_stack(lambda: SingleModalityLayer(config), config.l_layers)


class RegionEncoder(nn.Module):
    """LXMERT's region embedding and object-relationship encoder under LXMERT's keys
    (``encoder.visn_fc``, ``encoder.r_layers.N``)."""

    def __init__(self, config: VisionOnlyConfig):
        super().__init__()
        self.visn_fc = VisualFeatEncoder(config)
        self.r_layers = build_stack(lambda: SingleModalityLayer(config), config.r_layers)


class TextOnlyModel(nn.Module):
    """The question (or sentence) alone: embeddings, language encoder, [CLS] pooler."""

    config_class = TextOnlyConfig

    def __init__(self, config: TextOnlyConfig):
        super().__init__()
        self.config = config
        self.embeddings = LanguageEmbeddings(config)
        self.encoder = TextEncoder(config)
        self.pooler = Pooler(config)
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
        """Region inputs are accepted (every task feeds them) and never read."""
        lang = self.embeddings(input_ids, token_type_ids)
        mask = additive_attention_mask(attention_mask, compute_dtype(lang))
        for layer in self.encoder.layer:
            lang = layer(lang, mask)
        batch, _, hidden = lang.shape
        vision = lang.new_zeros(batch, _regions_shape(visual_feats, visual_attention_mask), hidden)
        return BackboneOutput(language=lang, vision=vision, pooled=self.pooler(lang))


class VisionOnlyModel(nn.Module):
    """The regions alone: region embedding, object-relationship encoder, mean pooler. It has
    no word table (``get_input_embeddings`` returns None)."""

    config_class = VisionOnlyConfig

    def __init__(self, config: VisionOnlyConfig):
        super().__init__()
        self.config = config
        self.encoder = RegionEncoder(config)
        self.visn_pooler = RegionPooler(config)
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def get_input_embeddings(self) -> None:
        return None

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        visual_feats: Tensor | None = None,
        visual_pos: Tensor | None = None,
        visual_attention_mask: Tensor | None = None,
    ) -> BackboneOutput:
        """Text inputs are accepted (every task feeds them) and never read."""
        if visual_feats is None or visual_pos is None:
            raise ValueError("VisionOnlyModel needs both visual_feats and visual_pos")
        visn = self.encoder.visn_fc(visual_feats, visual_pos)
        mask = additive_attention_mask(visual_attention_mask, compute_dtype(visn))
        for layer in self.encoder.r_layers:
            visn = layer(visn, mask)
        batch, length = input_ids.shape
        language = visn.new_zeros(batch, length, visn.shape[-1])
        return BackboneOutput(language=language, vision=visn,
                              pooled=self.visn_pooler(visn, visual_attention_mask))
