"""Mapping between ``ViltConfig`` and HF transformers' ViLT ``config.json``."""

from __future__ import annotations

from typing import Any

from vlbench.errors import CheckpointError

from ..common.hf_config import HfConfigMap
from .config import ViltConfig

MODEL_TYPE = "vilt"
# Fields with the same name and meaning on both sides (HF's defaults are ViltConfig's).
SHARED_FIELDS = (
    "vocab_size", "type_vocab_size", "modality_type_vocab_size", "max_position_embeddings",
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "layer_norm_eps",
    "image_size", "patch_size", "num_channels", "qkv_bias", "max_image_length", "num_images",
    "pad_token_id",
)
ARCHITECTURES = {
    "model": "ViltModel",
    "qa": "ViltForQuestionAnswering",
    "nlvr2": "ViltForImagesAndTextClassification",
    "pretraining": "ViltForMaskedLM",
}
# null_is_absent: HF writes pad_token_id null by default, which reads as BERT's [PAD] 0
HF_CONFIG = HfConfigMap(ViltConfig, MODEL_TYPE, SHARED_FIELDS, ARCHITECTURES,
                        null_is_absent=True)


def config_from_hf(hf: dict[str, Any], source: str) -> ViltConfig:
    """ViltConfig from an HF ``config.json`` dict (HF's defaults fill absent keys). HF allows
    ``[height, width]`` image and patch sizes; square ones read as one number."""
    hf = dict(hf)
    for key in ("image_size", "patch_size"):
        value = hf.get(key)
        if isinstance(value, list | tuple):
            if len(value) != 2 or value[0] != value[1]:
                raise CheckpointError(f"{source}: {key} {value} is not square; vlbench's ViLT "
                                      "reads square images and patches")
            hf[key] = value[0]
    return HF_CONFIG.config_from_hf(hf, source)


def config_to_hf(config: ViltConfig, kind: str, num_labels: int | None = None,
                 answers: list[str] | None = None) -> dict[str, Any]:
    """HF ``config.json`` dict for exporting a backbone (+ head) as ``ARCHITECTURES[kind]``."""
    return HF_CONFIG.to_hf(config, kind, answers=answers, num_labels=num_labels)
