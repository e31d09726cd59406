"""LXMERT hyper-parameters, named as in the paper and HF transformers' ``LxmertConfig``.

Sizes are data: ``PRESETS`` maps a preset name to field values, and
``LxmertConfig.from_preset(name, **overrides)`` is the one way to build a config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vlbench.errors import ConfigError

from ..common.config import BERT_BASE_WIDTHS, TINY_WIDTHS, PresetConfig

#: how the cross-modality layers attend across modalities (see ``LxmertConfig.cross_attention``)
CROSS_ATTENTION = ("shared", "per_direction")

PRESETS: dict[str, dict[str, Any]] = {
    # Published LXMERT (Tan & Bansal 2019): BERT-base widths, 9/5/5 encoders.
    "base": {
        **BERT_BASE_WIDTHS,
        "l_layers": 9,
        "r_layers": 5,
        "x_layers": 5,
    },
    # CPU-sized: same topology (all three encoders present), narrow and shallow enough to
    # fine-tune on the embedded synthetic GQA (~10k questions x 10 epochs) in minutes on 2
    # cores. Width matters more than depth for learning to bind words to regions from
    # scratch: hidden 192 learns it within a few epochs where hidden 64-128 lag far behind.
    "tiny": {
        **TINY_WIDTHS,
        "l_layers": 2,
        "r_layers": 1,
        "x_layers": 1,
    },
}


@dataclass
class LxmertConfig(PresetConfig):
    """Every hyper-parameter of the LXMERT backbone and its heads (plain JSON types only)."""

    FAMILY = "LXMERT"
    PRESETS = PRESETS

    preset: str = "tiny"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    l_layers: int = 9
    r_layers: int = 5
    x_layers: int = 5
    #: "shared": one cross-attention serves both directions (LXMERT); "per_direction": one
    #: for words attending to regions and one for regions attending to words (ViLBERT's
    #: co-attention). Neutral: runs made before the switch existed used "shared".
    cross_attention: str = field(default="shared", metadata={"neutral": True})
    visual_feat_dim: int = 2048
    visual_pos_dim: int = 4
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    # Head sizes (pre-training heads and the pre-training QA head).
    num_qa_labels: int = 9500
    num_object_labels: int = 1600
    num_attr_labels: int = 400

    def validate(self) -> None:
        """Raise ConfigError if a field has the wrong type or an impossible value."""
        self.check_types()
        self.check_positive("vocab_size", "hidden_size", "num_attention_heads",
                            "intermediate_size", "visual_feat_dim", "visual_pos_dim",
                            "max_position_embeddings", "type_vocab_size", "num_qa_labels",
                            "num_object_labels", "num_attr_labels")
        for name in ("l_layers", "r_layers", "x_layers"):  # an empty encoder is allowed
            self.check_layers(name)
        self.check_heads_divide_hidden()
        self.check_probabilities("hidden_dropout_prob", "attention_probs_dropout_prob")
        if self.cross_attention not in CROSS_ATTENTION:
            raise ConfigError(f"model config key 'cross_attention' must be one of "
                              f"{', '.join(CROSS_ATTENTION)}, got {self.cross_attention!r}")

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_attention_heads
