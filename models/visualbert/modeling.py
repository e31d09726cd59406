"""The VisualBERT backbone (Li et al. 2019) in plain PyTorch.

One BERT encoder reads a single sequence: ``[CLS] words [SEP]`` followed by the region
features, each projected to the hidden size and given VisualBERT's own token-type and position
embeddings. Module and parameter names are those of HF transformers' ``VisualBertModel``
(``embeddings.visual_projection``, ``encoder.layer.N.attention.self.query``, ``pooler.dense``,
...), so its checkpoints load key for key. The text embeddings, the encoder layers and the pooler
are shared BERT parts (``models/common/layers.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vlbench.engine.backbone import BackboneOutput

from ..common.init import init_bert_weights
from ..common.layers import (
    BertEncoder,
    BertTextEmbeddings,
    Pooler,
    additive_attention_mask,
    compute_dtype,
)
from ..common.linear import Linear
from .config import VisualBertConfig

#: the segment id HF (and the original code) gives every region when none is passed
VISUAL_TOKEN_TYPE = 1
#: the position id HF gives every region when no ``image_text_alignment`` is passed
VISUAL_POSITION = 0


class VisualBertEmbeddings(BertTextEmbeddings):
    """Text embeddings (word + position + token type) followed by region embeddings
    (projected feature + visual position + visual token type), one LayerNorm and dropout over
    the joint sequence."""

    def __init__(self, config: VisualBertConfig):
        # Unlike LXMERT, only the word table has a padding row (HF's layout).
        super().__init__(config)
        self.visual_token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.visual_position_embeddings = nn.Embedding(config.max_position_embeddings,
                                                       config.hidden_size)
        self.visual_projection = Linear(config.visual_embedding_dim, config.hidden_size)
        self.visual_box_projection = (
            Linear(config.visual_pos_dim, config.hidden_size) if config.use_boxes else None
        )

    def forward(  # type: ignore[override]  # the text part plus the regions
        self, input_ids: Tensor, token_type_ids: Tensor | None, visual_feats: Tensor,
                visual_pos: Tensor | None) -> Tensor:
        """(B, T) ids and (B, R, D) regions -> (B, T + R, H) embedded sequence."""
        text = self.text_sum(input_ids, token_type_ids)
        # Every region gets visual segment 1 and visual position 0: HF's values for
        # visual_token_type_ids=None and image_text_alignment=None.
        regions = (self.visual_projection(visual_feats)
                   + self.visual_position_embeddings.weight[VISUAL_POSITION]
                   + self.visual_token_type_embeddings.weight[VISUAL_TOKEN_TYPE])
        if self.visual_box_projection is not None:
            if visual_pos is None:
                raise ValueError("this VisualBERT reads boxes (use_boxes=true): pass visual_pos")
            regions = regions + self.visual_box_projection(visual_pos)
        return self.dropout(self.LayerNorm(torch.cat((text, regions), dim=1)))


class VisualBertEncoder(BertEncoder):
    """``num_hidden_layers`` BERT layers over words and regions together (keys ``layer.N``)."""

    def __init__(self, config: VisualBertConfig):
        super().__init__(config, config.num_hidden_layers)


class VisualBertModel(nn.Module):
    """The VisualBERT backbone: joint embeddings, the BERT encoder and the [CLS] pooler.

    ``state_dict()`` keys are identical to those of ``transformers.VisualBertModel`` (with
    ``visual_box_projection.*`` added when ``use_boxes`` is on). The final sequence is split as
    the backbone protocol asks: ``language`` = the T text positions, ``vision`` = the R region
    positions, ``pooled`` = ``tanh(W h_[CLS] + b)``.
    """

    config_class = VisualBertConfig

    def __init__(self, config: VisualBertConfig):
        super().__init__()
        config.validate()  # fields may have been set since construction (fit_to_data)
        self.config = config
        self.embeddings = VisualBertEmbeddings(config)
        self.encoder = VisualBertEncoder(config)
        self.pooler = Pooler(config)
        self.init_weights()

    def init_weights(self) -> None:
        """(Re-)initialise every parameter as BERT does; with ``special_visual_initialize``
        the visual token-type and position tables start as copies of the text ones."""
        self.apply(lambda m: init_bert_weights(m, self.config.initializer_range))
        if self.config.special_visual_initialize:
            embeddings = self.embeddings
            with torch.no_grad():
                embeddings.visual_token_type_embeddings.weight.copy_(
                    embeddings.token_type_embeddings.weight)
                embeddings.visual_position_embeddings.weight.copy_(
                    embeddings.position_embeddings.weight)

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
        """Encode a batch.

        Args:
            input_ids: (B, T) WordPiece ids (``[CLS] words [SEP]``).
            attention_mask: (B, T), 1 for real tokens, 0 for padding.
            token_type_ids: (B, T) segment ids (all 0 when omitted).
            visual_feats: (B, R, visual_embedding_dim) region features.
            visual_pos: (B, R, visual_pos_dim) boxes (x1, y1, x2, y2) scaled to [0, 1]; read
                only when ``use_boxes`` is on.
            visual_attention_mask: (B, R), 1 for real regions, 0 for padding.
        """
        if visual_feats is None:
            raise ValueError("VisualBertModel needs visual_feats")
        tokens = input_ids.shape[1]
        hidden = self.embeddings(input_ids, token_type_ids, visual_feats, visual_pos)
        mask = None
        if attention_mask is not None or visual_attention_mask is not None:
            # One padding mask over text + regions, missing halves all real (as HF).
            text = (attention_mask.bool() if attention_mask is not None
                    else input_ids.new_ones(input_ids.shape, dtype=torch.bool))
            regions = (visual_attention_mask.bool() if visual_attention_mask is not None
                       else input_ids.new_ones(visual_feats.shape[:2], dtype=torch.bool))
            mask = additive_attention_mask(torch.cat((text, regions), dim=1),
                                           compute_dtype(hidden))
        hidden = self.encoder(hidden, mask)
        return BackboneOutput(language=hidden[:, :tokens], vision=hidden[:, tokens:],
                              pooled=self.pooler(hidden))
