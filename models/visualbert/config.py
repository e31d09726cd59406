"""VisualBERT hyper-parameters, named as HF transformers' ``VisualBertConfig``.

Sizes are data: ``PRESETS`` maps a preset name to field values, and
``VisualBertConfig.from_preset(name, **overrides)`` is the one way to build a config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlbench.errors import ConfigError

from ..common.config import BERT_BASE_WIDTHS, TINY_WIDTHS, PresetConfig

PRESETS: dict[str, dict[str, Any]] = {
    # Published VisualBERT (Li et al. 2019): BERT-base, 2048-d Faster R-CNN region features.
    "base": {
        **BERT_BASE_WIDTHS,
        "num_hidden_layers": 12,
        "visual_embedding_dim": 2048,
    },
    # CPU-sized, at LXMERT tiny's width (hidden 192, 6 heads, FFN 768) and weight: LXMERT
    # tiny's 2 + 1 BERT layers and one cross-modality layer (about two BERT layers) make 5
    # layers' worth, and 5 layers come within 2% of its parameter count on the synthetic
    # world (2.66M vs 2.72M at 1000 words and 64-d regions; 4 layers would be 18% smaller).
    "tiny": {
        **TINY_WIDTHS,
        "num_hidden_layers": 5,
    },
}


@dataclass
class VisualBertConfig(PresetConfig):
    """Every hyper-parameter of the VisualBERT backbone and its heads (plain JSON types only).

    HF's field names and meanings; ``visual_embedding_dim`` is the width of the region
    features (HF's name for it). vlbench adds ``use_boxes`` (VisualBERT reads no boxes; when
    true a ``visual_box_projection`` adds the projected box to each region's embedding),
    ``visual_pos_dim`` and the pre-training head sizes.
    """

    FAMILY = "VisualBERT"
    PRESETS = PRESETS

    preset: str = "base"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    visual_embedding_dim: int = 2048
    bypass_transformer: bool = False
    special_visual_initialize: bool = True
    # BERT's and vlbench's [PAD] is 0; HF's VisualBertConfig defaults to 1 (read from its files)
    pad_token_id: int = 0
    use_boxes: bool = False
    visual_pos_dim: int = 4
    # Head sizes (pre-training heads and the pre-training QA head).
    num_object_labels: int = 1600
    num_attr_labels: int = 400
    num_qa_labels: int = 9500

    def validate(self) -> None:
        """Raise ConfigError if a field has the wrong type or an impossible value."""
        self.check_types()
        self.check_positive("vocab_size", "hidden_size", "num_attention_heads",
                            "intermediate_size", "max_position_embeddings", "type_vocab_size",
                            "visual_embedding_dim", "visual_pos_dim", "num_object_labels",
                            "num_attr_labels", "num_qa_labels")
        self.check_layers()
        self.check_heads_divide_hidden()
        self.check_probabilities("hidden_dropout_prob", "attention_probs_dropout_prob")
        if self.type_vocab_size < 2:
            # visual tokens use segment 1 (HF's default visual_token_type_ids)
            raise ConfigError(
                f"model config key 'type_vocab_size' must be >= 2 for VisualBERT, got "
                f"{self.type_vocab_size}")
        self.check_pad_token()
        if self.bypass_transformer:
            raise ConfigError("model config key 'bypass_transformer' must be false: vlbench's "
                              "VisualBERT runs every layer over words and regions together")

    @property
    def visual_feat_dim(self) -> int:
        """The region feature width under the name the shared heads read."""
        return self.visual_embedding_dim

    @visual_feat_dim.setter
    def visual_feat_dim(self, value: int) -> None:
        self.visual_embedding_dim = value
