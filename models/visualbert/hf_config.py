"""Mapping between ``VisualBertConfig`` and HF transformers' VisualBERT ``config.json``."""

from __future__ import annotations

from typing import Any

from vlbench.errors import CheckpointError

from ..common.checkpoint import answers_to_hf, matching_preset
from .config import PRESETS, VisualBertConfig

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
PRESET_KEY = "vlbench_preset"  # extra key HF keeps in config.json; restores the preset name
ARCHITECTURES = {
    "model": "VisualBertModel",
    "qa": "VisualBertForQuestionAnswering",
    "pretraining": "VisualBertForPreTraining",
}


def config_from_hf(hf: dict[str, Any], source: str) -> VisualBertConfig:
    """VisualBertConfig from an HF ``config.json`` dict (HF's defaults fill absent keys)."""
    if hf.get("model_type") != MODEL_TYPE:
        raise CheckpointError(
            f"{source}: model_type is '{hf.get('model_type')}', not '{MODEL_TYPE}'; "
            "point at a VisualBERT checkpoint"
        )
    if hf.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(
            f"{source}: hidden_act '{hf['hidden_act']}' is not supported (VisualBERT uses 'gelu')"
        )
    values = {**HF_DEFAULTS, **{k: hf[k] for k in SHARED_FIELDS if k in hf and hf[k] is not None}}
    defaults = VisualBertConfig().to_dict()
    values["preset"] = hf.get(PRESET_KEY) or matching_preset(PRESETS, {**defaults, **values})
    try:
        return VisualBertConfig.from_dict(values)
    except Exception as exc:
        raise CheckpointError(f"{source}: {exc}") from exc


def config_to_hf(config: VisualBertConfig, kind: str, num_labels: int | None = None,
                 answers: list[str] | None = None) -> dict[str, Any]:
    """HF ``config.json`` dict for exporting a backbone (+ head) as ``ARCHITECTURES[kind]``."""
    if config.use_boxes:
        raise CheckpointError("cannot export to HF: this VisualBERT reads boxes (use_boxes=true) "
                              "and HF's VisualBERT has no box projection")
    hf: dict[str, Any] = {k: getattr(config, k) for k in SHARED_FIELDS}
    hf.update(model_type=MODEL_TYPE, architectures=[ARCHITECTURES[kind]], hidden_act="gelu",
              tie_word_embeddings=True)
    hf[PRESET_KEY] = config.preset
    if num_labels is not None:
        hf["num_labels"] = num_labels
    hf.update(answers_to_hf(answers))
    return hf
