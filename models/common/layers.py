"""BERT-style transformer parts shared by the model families.

Module and parameter names are BERT's (``attention.self.query``, ``attention.output.dense``,
``intermediate.dense``, ``output.LayerNorm``, ...), which LXMERT and VisualBERT checkpoints
(released code and HF transformers) both use, so every family built from these parts loads
foreign weights key for key. The pre-norm (ViT) block at the end carries HF ViT's and ViLT's
names (``layernorm_before``, ``attention.attention.query``, ``layernorm_after``, ...).

The parts read their sizes from a config object (:class:`TransformerConfig`): any family's
config dataclass with these fields will do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .linear import Linear


class TransformerConfig(Protocol):
    """The fields the shared layers read from a family config."""

    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    hidden_dropout_prob: float
    attention_probs_dropout_prob: float
    layer_norm_eps: float


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


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention of ``hidden`` over ``context`` (keys ``query/key/value``)."""

    def __init__(self, config: TransformerConfig, context_dim: int | None = None,
                 bias: bool = True):
        super().__init__()
        context_dim = config.hidden_size if context_dim is None else context_dim
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        # bias=False: ViT-style models without query/key/value biases (HF's qkv_bias)
        self.query = Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.key = Linear(context_dim, config.hidden_size, bias=bias)
        self.value = Linear(context_dim, config.hidden_size, bias=bias)
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

    def __init__(self, config: TransformerConfig, in_features: int):
        super().__init__()
        self.dense = Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class Intermediate(nn.Module):
    """First half of the feed-forward block: ``gelu(dense(x))`` (exact erf GeLU)."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return F.gelu(self.dense(hidden))


class AttentionBlock(nn.Module):
    """Multi-head attention followed by its residual output.

    The attention submodule is called ``self`` in self-attention blocks and ``att`` in
    LXMERT's cross-attention block, as in the released checkpoints.
    """

    def __init__(self, config: TransformerConfig, attention_name: str = "self"):
        super().__init__()
        self.attention_name = attention_name
        self.add_module(attention_name, MultiHeadAttention(config))
        self.output = ResidualOutput(config, config.hidden_size)

    def forward(self, hidden: Tensor, context: Tensor, context_mask: Tensor | None) -> Tensor:
        attended = self._modules[self.attention_name](hidden, context, context_mask)
        return self.output(attended, hidden)


class SingleModalityLayer(nn.Module):
    """A BERT layer: self-attention then feed-forward (keys ``attention/intermediate/output``).

    LXMERT's language and object-relationship layers; every layer of a single-stream model.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.attention = AttentionBlock(config, "self")
        self.intermediate = Intermediate(config)
        self.output = ResidualOutput(config, config.intermediate_size)

    def forward(self, hidden: Tensor, mask: Tensor | None) -> Tensor:
        hidden = self.attention(hidden, hidden, mask)
        return self.output(self.intermediate(hidden), hidden)


def build_stack(layer: Callable[[], nn.Module], depth: int) -> nn.ModuleList:
    """``depth`` independently initialised layers made by ``layer()``."""
    return nn.ModuleList(layer() for _ in range(depth))


class BertEncoder(nn.Module):
    """A stack of ``depth`` BERT layers under BERT's key ``layer.N``."""

    def __init__(self, config: TransformerConfig, depth: int):
        super().__init__()
        self.layer = build_stack(lambda: SingleModalityLayer(config), depth)

    def forward(self, hidden: Tensor, mask: Tensor | None) -> Tensor:
        """(B, L, H) states and a (B, 1, 1, L) additive mask -> (B, L, H) states."""
        for layer in self.layer:
            hidden = layer(hidden, mask)
        return hidden


class Pooler(nn.Module):
    """BERT's pooler: ``tanh(dense(h_0))`` of the first ([CLS]) position."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden: Tensor) -> Tensor:
        return self.activation(self.dense(hidden[:, 0]))


class RegionPooler(nn.Module):
    """``tanh(dense(mean of the real regions))``: a pooled state for models whose regions have
    no [CLS] position (late fusion, the vision-only baseline)."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, regions: Tensor, mask: Tensor | None) -> Tensor:
        """(B, R, H) region states and a (B, R) 1/0 mask (None: all real) -> (B, H)."""
        if mask is None:
            mean = regions.mean(dim=1)
        else:
            weight = mask.to(regions.dtype).unsqueeze(-1)
            mean = (regions * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1.0)
        return self.activation(self.dense(mean))


class TextEmbeddingConfig(TransformerConfig, Protocol):
    """The fields :class:`BertTextEmbeddings` reads besides the transformer's."""

    vocab_size: int
    max_position_embeddings: int
    type_vocab_size: int
    pad_token_id: int


class BertTextEmbeddings(nn.Module):
    """BERT's text embeddings as HF lays them out: word + segment + position, LayerNorm,
    dropout (keys ``word_embeddings``, ``token_type_embeddings``, ``position_embeddings``,
    ``LayerNorm``). Only the word table has a padding row (``pad_token_id``), as in HF."""

    def __init__(self, config: TextEmbeddingConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                            padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def text_sum(self, input_ids: Tensor, token_type_ids: Tensor | None) -> Tensor:
        """(B, T) ids -> (B, T, H) summed embeddings, before LayerNorm (segment 0 when
        ``token_type_ids`` is None)."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        if token_type_ids is None:
            segments = self.token_type_embeddings.weight[0]
        else:
            segments = self.token_type_embeddings(token_type_ids)
        # HF's order of the sums, so fp32 results agree to the last bits
        return self.word_embeddings(input_ids) + segments + self.position_embeddings(positions)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None) -> Tensor:
        """(B, T) ids -> (B, T, H)."""
        return self.dropout(self.LayerNorm(self.text_sum(input_ids, token_type_ids)))


class ProjectionOutput(nn.Module):
    """``dropout(dense(x))``: closes a pre-norm block's attention or feed-forward branch (the
    layer adds the residual, and no LayerNorm follows)."""

    def __init__(self, config: TransformerConfig, in_features: int):
        super().__init__()
        self.dense = Linear(in_features, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.dropout(self.dense(hidden))


class PreNormAttention(nn.Module):
    """Self-attention branch of a pre-norm block: keys ``attention.{query,key,value}`` and
    ``output.dense`` (HF ViT / ViLT)."""

    def __init__(self, config: TransformerConfig, qkv_bias: bool = True):
        super().__init__()
        self.attention = MultiHeadAttention(config, bias=qkv_bias)
        self.output = ProjectionOutput(config, config.hidden_size)

    def forward(self, hidden: Tensor, mask: Tensor | None) -> Tensor:
        return self.output(self.attention(hidden, hidden, mask))


class PreNormLayer(nn.Module):
    """A ViT block: ``h = x + attn(LN(x))``, then ``h + ffn(LN(h))`` (exact erf GeLU).

    Keys ``layernorm_before``, ``attention.attention.*``, ``attention.output.dense``,
    ``layernorm_after``, ``intermediate.dense``, ``output.dense``: HF's ViT and ViLT layers
    (timm's ``norm1``, ``attn.qkv`` / ``attn.proj``, ``norm2``, ``mlp.fc1`` / ``mlp.fc2``).
    """

    def __init__(self, config: TransformerConfig, qkv_bias: bool = True):
        super().__init__()
        # HF's registration order, so state dicts list their keys alike
        self.attention = PreNormAttention(config, qkv_bias)
        self.intermediate = Intermediate(config)
        self.output = ProjectionOutput(config, config.intermediate_size)
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: Tensor, mask: Tensor | None) -> Tensor:
        hidden = self.attention(self.layernorm_before(hidden), mask) + hidden
        return self.output(self.intermediate(self.layernorm_after(hidden))) + hidden


class PreNormEncoder(nn.Module):
    """A stack of ``depth`` pre-norm (ViT) blocks under the key ``layer.N``; the final
    LayerNorm belongs to the model (HF's ``layernorm``, timm's ``norm``)."""

    def __init__(self, config: TransformerConfig, depth: int, qkv_bias: bool = True):
        super().__init__()
        self.layer = build_stack(lambda: PreNormLayer(config, qkv_bias), depth)

    def forward(self, hidden: Tensor, mask: Tensor | None) -> Tensor:
        """(B, L, H) states and a (B, 1, 1, L) additive mask -> (B, L, H) states."""
        for layer in self.layer:
            hidden = layer(hidden, mask)
        return hidden
