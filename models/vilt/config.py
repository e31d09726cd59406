"""ViLT hyper-parameters, named as HF transformers' ``ViltConfig``.

Sizes are data: ``PRESETS`` maps a preset name to field values, and
``ViltConfig.from_preset(name, **overrides)`` is the one way to build a config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlbench.errors import ConfigError

from ..common.config import BERT_BASE_WIDTHS, TINY_WIDTHS, PresetConfig

PRESETS: dict[str, dict[str, Any]] = {
    # Published ViLT-B/32 (Kim et al. 2021): a ViT-B/32 trunk over 384-px images, BERT's
    # WordPiece vocabulary, 40 text positions (HF ViltConfig's defaults).
    "base": {
        **BERT_BASE_WIDTHS,
        "num_hidden_layers": 12,
        "image_size": 384,
        "patch_size": 32,
    },
    # CPU-sized, at LXMERT tiny's width (hidden 192, 6 heads, FFN 768): 4 layers over a 4x4
    # grid of 32-px patches of 128-px images. 2.61M parameters at 1000 words, within 4% of
    # LXMERT tiny's 2.72M (1000 words, 64-d regions); 16-px patches (an 8x8 grid, --set
    # model.patch_size=16) give 2.18M.
    "tiny": {
        **TINY_WIDTHS,
        "num_hidden_layers": 4,
        "image_size": 128,
        "patch_size": 32,
    },
}


@dataclass
class ViltConfig(PresetConfig):
    """Every hyper-parameter of the ViLT backbone and its heads (plain JSON types only).

    HF's field names, meanings and defaults: ``type_vocab_size`` sizes the text segment table,
    ``modality_type_vocab_size`` the modality table (0 text, 1 image, 2 a second image as in
    NLVR2), ``max_image_length`` the number of patches sampled per image while training (-1:
    every patch), ``num_images`` the images per example of an NLVR2 model (-1: one).
    vlbench adds ``pad_token_id`` as a number (BERT's and vlbench's [PAD] is 0; HF's default
    None reads as 0), ``init_vit`` (a timm ViT state dict the trunk of a fresh backbone starts
    from, ``--set model.init_vit=FILE``) and the pre-training QA head size.
    """

    FAMILY = "ViLT"
    PRESETS = PRESETS

    preset: str = "base"
    vocab_size: int = 30522
    type_vocab_size: int = 2
    modality_type_vocab_size: int = 2
    max_position_embeddings: int = 40
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    image_size: int = 384
    patch_size: int = 32
    num_channels: int = 3
    qkv_bias: bool = True
    max_image_length: int = -1
    num_images: int = -1
    pad_token_id: int = 0
    init_vit: str = ""
    num_qa_labels: int = 3129  # ViLT's VQAv2 answer table

    def validate(self) -> None:
        """Raise ConfigError if a field has the wrong type or an impossible value."""
        self.check_types()
        self.check_positive("vocab_size", "type_vocab_size", "modality_type_vocab_size",
                            "max_position_embeddings", "hidden_size", "num_attention_heads",
                            "intermediate_size", "image_size", "patch_size", "num_channels",
                            "num_qa_labels")
        self.check_layers()
        self.check_heads_divide_hidden()
        self.check_probabilities("hidden_dropout_prob", "attention_probs_dropout_prob")
        if self.hidden_act != "gelu":
            raise ConfigError(f"model config key 'hidden_act' must be 'gelu' (ViLT's), got "
                              f"'{self.hidden_act}'")
        if self.patch_size > self.image_size:
            raise ConfigError(f"model config: patch_size {self.patch_size} is larger than "
                              f"image_size {self.image_size}; the image holds no patch")
        if self.max_image_length == 0 or self.max_image_length < -1:
            raise ConfigError(f"model config key 'max_image_length' must be -1 (every patch) or "
                              f"> 0, got {self.max_image_length}")
        if self.num_images == 0 or self.num_images < -1:
            raise ConfigError(f"model config key 'num_images' must be -1 or > 0, got "
                              f"{self.num_images}")
        if self.modality_type_vocab_size < self.images_per_example + 1:
            # text is modality 0, image i of an example modality i + 1
            raise ConfigError(
                f"model config: num_images {self.num_images} needs modality_type_vocab_size >= "
                f"{self.images_per_example + 1}, got {self.modality_type_vocab_size}")
        self.check_pad_token()

    @property
    def images_per_example(self) -> int:
        """Images an example holds (``num_images``, where -1 means one)."""
        return max(self.num_images, 1)

    @property
    def grid_size(self) -> int:
        """Patches per side of a full ``image_size`` image (the position table's grid)."""
        return self.image_size // self.patch_size
