"""Mapping between ``VisualBertConfig`` and HF transformers' VisualBERT ``config.json``."""

from __future__ import annotations

from typing import Any

from vlbench.errors import CheckpointError

from ..common.hf_config import HfConfigMap
from .config import VisualBertConfig

MODEL_TYPE = "visual_bert"
# Fields with the same name and meaning on both sides.
SHARED_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
    "type_vocab_size", "layer_norm_eps", "initializer_range", "visual_embedding_dim",
    "bypass_transformer", "special_visual_initialize", "pad_token_id",
)
#: HF's ``VisualBertConfig`` defaults where they differ from ours (for keys a file omits)
HF_DEFAULTS = {"visual_embedding_dim": 512, "pad_token_id": 1}
ARCHITECTURES = {
    "model": "VisualBertModel",
    "qa": "VisualBertForQuestionAnswering",
    "pretraining": "VisualBertForPreTraining",
}
HF_CONFIG = HfConfigMap(VisualBertConfig, MODEL_TYPE, SHARED_FIELDS, ARCHITECTURES,
                        hf_defaults=HF_DEFAULTS, null_is_absent=True)


def config_from_hf(hf: dict[str, Any], source: str) -> VisualBertConfig:
    """VisualBertConfig from an HF ``config.json`` dict (HF's defaults fill absent keys)."""
    return HF_CONFIG.config_from_hf(hf, source)


def config_to_hf(config: VisualBertConfig, kind: str, num_labels: int | None = None,
                 answers: list[str] | None = None) -> dict[str, Any]:
    """HF ``config.json`` dict for exporting a backbone (+ head) as ``ARCHITECTURES[kind]``."""
    if config.use_boxes:
        raise CheckpointError("cannot export to HF: this VisualBERT reads boxes (use_boxes=true) "
                              "and HF's VisualBERT has no box projection")
    return HF_CONFIG.to_hf(config, kind, answers=answers, num_labels=num_labels)
