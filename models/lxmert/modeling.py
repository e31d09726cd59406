"""The LXMERT backbone (Tan & Bansal 2019) in plain PyTorch.

Module and parameter names are those of the released code and of HF transformers'
``LxmertModel``, so checkpoints from either load key for key. The backbone is assembled from
a few shared parts -- an attention block, the two halves of a feed-forward block, a
single-modality layer, a cross-modality layer and a stack builder -- so that encoder variants
are configurations of these parts rather than copies of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlbench.registry import register_model

from .config import LxmertConfig
from .init import init_bert_weights
from .linear import Linear


@dataclass
class LxmertOutput:
    """Final hidden states of the backbone (the three outputs of HF's ``LxmertModel``)."""

    language: Tensor  # (batch, tokens, hidden)
    vision: Tensor  # (batch, regions, hidden)
    pooled: Tensor  # (batch, hidden): tanh(W h_[CLS] + b) of the last language state


def additive_attention_mask(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Turn a (batch, length) 1/0 padding mask into a (batch, 1, 1, length) additive mask.

    0 where attending, the most negative ``dtype`` value at padding (HF's form). It is built
    once per forward in the dtype attention runs in, so no layer converts it again. A row with
    no real position at all attends to every position (as in HF and the released code) rather
    than producing NaN.
    """
    if mask is None:
        return None
    keep = mask.bool()
    keep = keep | ~keep.any(dim=-1, keepdim=True)
    additive = torch.zeros(keep.shape, dtype=dtype, device=keep.device)
    return additive.masked_fill_(~keep, torch.finfo(dtype).min)[:, None, None, :]


def compute_dtype(reference: Tensor) -> torch.dtype:
    """The dtype attention runs in: the autocast dtype when autocast is on, else the tensor's."""
    device = reference.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return reference.dtype


# --------------------------------------------------------------------------------------------
# Shared parts
# --------------------------------------------------------------------------------------------


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention of ``hidden`` over ``context`` (keys ``query/key/value``)."""

    def __init__(self, config: LxmertConfig, context_dim: int | None = None):
        super().__init__()
        context_dim = config.hidden_size if context_dim is None else context_dim
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.query = Linear(config.hidden_size, config.hidden_size)
        self.key = Linear(context_dim, config.hidden_size)
        self.value = Linear(context_dim, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def _heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, hidden: Tensor, context: Tensor, mask: Tensor | None) -> Tensor:
        q = self._heads(self.query(hidden))
        k = self._heads(self.key(context))
        v = self._heads(self.value(context))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0
        )
        batch, _, length, _ = out.shape
        return out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)


class ResidualOutput(nn.Module):
    """``LayerNorm(dropout(dense(x)) + residual)``: closes an attention or feed-forward block."""

    def __init__(self, config: LxmertConfig, in_features: int):
        super().__init__()
        self.dense = Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class Intermediate(nn.Module):
    """First half of the feed-forward block: ``gelu(dense(x))`` (exact erf GeLU)."""

    def __init__(self, config: LxmertConfig):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return F.gelu(self.dense(hidden))


class AttentionBlock(nn.Module):
    """Multi-head attention followed by its residual output.

    The attention submodule is called ``self`` in self-attention blocks and ``att`` in the
    cross-attention block, as in the released checkpoints.
    """

    def __init__(self, config: LxmertConfig, attention_name: str = "self"):
        super().__init__()
        self.attention_name = attention_name
        self.add_module(attention_name, MultiHeadAttention(config))
        self.output = ResidualOutput(config, config.hidden_size)

    def forward(self, hidden: Tensor, context: Tensor, context_mask: Tensor | None) -> Tensor:
        attended = self._modules[self.attention_name](hidden, context, context_mask)
        return self.output(attended, hidden)


class SingleModalityLayer(nn.Module):
    """A BERT layer: self-attention then feed-forward (keys ``attention/intermediate/output``)."""

    def __init__(self, config: LxmertConfig):
        super().__init__()
        self.attention = AttentionBlock(config, "self")
        self.intermediate = Intermediate(config)
        self.output = ResidualOutput(config, config.intermediate_size)

    def forward(self, hidden: Tensor, mask: Tensor | None) -> Tensor:
        hidden = self.attention(hidden, hidden, mask)
        return self.output(self.intermediate(hidden), hidden)


class CrossModalityLayer(nn.Module):
    """One cross-modality layer: a cross-attention module shared by both directions, then a
    self-attention and a feed-forward block per modality."""

    def __init__(self, config: LxmertConfig):
        super().__init__()
        self.visual_attention = AttentionBlock(config, "att")
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
        visn_x = self.visual_attention(visn, lang, lang_mask)
        lang_x = self.lang_self_att(lang_x, lang_x, lang_mask)
        visn_x = self.visn_self_att(visn_x, visn_x, visn_mask)
        lang_out = self.lang_output(self.lang_inter(lang_x), lang_x)
        visn_out = self.visn_output(self.visn_inter(visn_x), visn_x)
        return lang_out, visn_out


def build_stack(layer: Callable[[], nn.Module], depth: int) -> nn.ModuleList:
    """``depth`` independently initialised layers made by ``layer()``."""
    return nn.ModuleList(layer() for _ in range(depth))


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


class LxmertPooler(nn.Module):
    """``tanh(dense(h_[CLS]))`` of the final language states."""

    def __init__(self, config: LxmertConfig):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, language: Tensor) -> Tensor:
        return self.activation(self.dense(language[:, 0]))


@register_model(
    "lxmert",
    description="LXMERT (Tan & Bansal 2019): 9/5/5 language/object-relationship/cross-modality encoders",
)
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
        self.pooler = LxmertPooler(config)
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
