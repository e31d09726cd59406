"""The LXMERT backbone (Tan & Bansal 2019) in plain PyTorch.

Module and parameter names are those of the released code and of HF transformers'
``LxmertModel``, so checkpoints from either load key for key. The backbone is assembled from
the BERT parts every family shares (``models/common/layers.py``: an attention block, the two
halves of a feed-forward block, a BERT layer, a stack builder, the pooler) plus LXMERT's own
cross-modality layer and input embeddings, so that encoder variants are configurations of
these parts rather than copies of them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vlbench.engine.backbone import BackboneOutput

from ..common.init import init_bert_weights
from ..common.layers import (
    AttentionBlock,
    Intermediate,
    Pooler,
    ResidualOutput,
    SingleModalityLayer,
    additive_attention_mask,
    build_stack,
    compute_dtype,
)
from ..common.linear import Linear
from .config import LxmertConfig

#: the three outputs of HF's ``LxmertModel``: language (B, T, H), vision (B, R, H) and pooled
#: (B, H), ``tanh(W h_[CLS] + b)`` of the last language state
LxmertOutput = BackboneOutput


class CrossModalityLayer(nn.Module):
    """One cross-modality layer: cross-attention, then a self-attention and a feed-forward
    block per modality.

    LXMERT shares one cross-attention module (``visual_attention``) between both directions;
    with ``cross_attention="per_direction"`` regions attend to words through a second one
    (``lang_attention``), as in ViLBERT's co-attention.
    """

    def __init__(self, config: LxmertConfig):
        super().__init__()
        self.visual_attention = AttentionBlock(config, "att")
        if config.cross_attention == "per_direction":
            self.lang_attention = AttentionBlock(config, "att")
        self.lang_self_att = AttentionBlock(config, "self")
        self.visn_self_att = AttentionBlock(config, "self")
        self.lang_inter = Intermediate(config)
        self.lang_output = ResidualOutput(config, config.intermediate_size)
        self.visn_inter = Intermediate(config)
        self.visn_output = ResidualOutput(config, config.intermediate_size)

    def forward(
        self, lang: Tensor, lang_mask: Tensor | None, visn: Tensor, visn_mask: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        # Both directions read the inputs of this layer (not each other's updated states).
        lang_x = self.visual_attention(lang, visn, visn_mask)
        visn_x = getattr(self, "lang_attention", self.visual_attention)(visn, lang, lang_mask)
        lang_x = self.lang_self_att(lang_x, lang_x, lang_mask)
        visn_x = self.visn_self_att(visn_x, visn_x, visn_mask)
        lang_out = self.lang_output(self.lang_inter(lang_x), lang_x)
        visn_out = self.visn_output(self.visn_inter(visn_x), visn_x)
        return lang_out, visn_out


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


class LanguageEmbeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout."""

    def __init__(self, config: LxmertConfig):
        super().__init__()
        # padding_idx=0 on all three tables as in the released code: index 0 of each gets no
        # gradient, so fine-tuning matches the original and HF step for step.
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(
            config.max_position_embeddings, config.hidden_size, padding_idx=0
        )
        self.token_type_embeddings = nn.Embedding(
            config.type_vocab_size, config.hidden_size, padding_idx=0
        )
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        embedded = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        if token_type_ids is None:
            embedded = embedded + self.token_type_embeddings.weight[0]
        else:
            embedded = embedded + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(embedded))


class VisualFeatEncoder(nn.Module):
    """Region embedding ``(LN(W_f f) + LN(W_b b)) / 2`` followed by dropout."""

    def __init__(self, config: LxmertConfig):
        super().__init__()
        self.visn_fc = Linear(config.visual_feat_dim, config.hidden_size)
        self.visn_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.box_fc = Linear(config.visual_pos_dim, config.hidden_size)
        self.box_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, visual_feats: Tensor, visual_pos: Tensor) -> Tensor:
        feats = self.visn_layer_norm(self.visn_fc(visual_feats))
        boxes = self.box_layer_norm(self.box_fc(visual_pos))
        return self.dropout((feats + boxes) / 2)


# --------------------------------------------------------------------------------------------
# Encoder and model
# --------------------------------------------------------------------------------------------


class LxmertEncoder(nn.Module):
    """Language (``layer``), object-relationship (``r_layers``) and cross-modality
    (``x_layers``) encoders over embedded words and regions."""

    def __init__(self, config: LxmertConfig):
        super().__init__()
        self.visn_fc = VisualFeatEncoder(config)
        # "layer" rather than "l_layers" so BERT language weights load unchanged.
        self.layer = build_stack(lambda: SingleModalityLayer(config), config.l_layers)
        self.x_layers = build_stack(lambda: CrossModalityLayer(config), config.x_layers)
        self.r_layers = build_stack(lambda: SingleModalityLayer(config), config.r_layers)

    def forward(
        self,
        lang: Tensor,
        lang_mask: Tensor | None,
        visual_feats: Tensor,
        visual_pos: Tensor,
        visn_mask: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        visn = self.visn_fc(visual_feats, visual_pos)
        for layer in self.layer:
            lang = layer(lang, lang_mask)
        for layer in self.r_layers:
            visn = layer(visn, visn_mask)
        for layer in self.x_layers:
            lang, visn = layer(lang, lang_mask, visn, visn_mask)
        return lang, visn


class LxmertModel(nn.Module):
    """The LXMERT backbone: embeddings, the three encoders and the pooler.

    ``state_dict()`` keys are identical to those of ``transformers.LxmertModel``.
    """

    config_class = LxmertConfig

    def __init__(self, config: LxmertConfig):
        super().__init__()
        self.config = config
        self.embeddings = LanguageEmbeddings(config)
        self.encoder = LxmertEncoder(config)
        self.pooler = Pooler(config)
        self.init_weights()

    def init_weights(self) -> None:
        """(Re-)initialise every parameter as BERT does."""
        self.apply(lambda m: init_bert_weights(m, self.config.initializer_range))

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
    ) -> LxmertOutput:
        """Encode a batch.

        Args:
            input_ids: (B, T) WordPiece ids.
            attention_mask: (B, T), 1 for real tokens, 0 for padding.
            token_type_ids: (B, T) segment ids (all 0 when omitted).
            visual_feats: (B, R, visual_feat_dim) region features.
            visual_pos: (B, R, visual_pos_dim) boxes (x1, y1, x2, y2) scaled to [0, 1].
            visual_attention_mask: (B, R), 1 for real regions, 0 for padding.
        """
        if visual_feats is None or visual_pos is None:
            raise ValueError("LxmertModel needs both visual_feats and visual_pos")
        lang = self.embeddings(input_ids, token_type_ids)
        dtype = compute_dtype(lang)
        lang, visn = self.encoder(
            lang,
            additive_attention_mask(attention_mask, dtype),
            visual_feats,
            visual_pos,
            additive_attention_mask(visual_attention_mask, dtype),
        )
        return LxmertOutput(language=lang, vision=visn, pooled=self.pooler(lang))
