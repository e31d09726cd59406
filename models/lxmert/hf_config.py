"""Mapping between ``LxmertConfig`` and HF transformers' LXMERT ``config.json``."""

from __future__ import annotations

from typing import Any

from vlbench.errors import CheckpointError

from ..common.hf_config import HfConfigMap
from .config import LxmertConfig

# Fields with the same name and meaning on both sides.
SHARED_FIELDS = (
    "vocab_size", "hidden_size", "num_attention_heads", "intermediate_size",
    "l_layers", "r_layers", "x_layers", "visual_feat_dim", "visual_pos_dim",
    "max_position_embeddings", "type_vocab_size", "hidden_dropout_prob",
    "attention_probs_dropout_prob", "initializer_range",
    "num_qa_labels", "num_object_labels", "num_attr_labels",
)
HF_LAYER_NORM_EPS = 1e-12  # hard-coded in HF's modeling_lxmert.py
ARCHITECTURES = {
    "model": "LxmertModel",
    "qa": "LxmertForQuestionAnswering",
    "pretraining": "LxmertForPreTraining",
}
# HF's LxmertConfig defaults are the published base sizes, as are LxmertConfig's; a
# config.json without model_type is still read as LXMERT's.
HF_CONFIG = HfConfigMap(LxmertConfig, "lxmert", SHARED_FIELDS, ARCHITECTURES, article="an",
                        type_optional=True)


def config_from_hf(hf: dict[str, Any], source: str) -> LxmertConfig:
    """LxmertConfig from an HF ``config.json`` dict (HF's defaults fill absent keys)."""
    return HF_CONFIG.config_from_hf(hf, source)


def config_to_hf(
    config: LxmertConfig,
    kind: str,
    visual_losses: tuple[str, ...] = (),
    qa: bool = False,
    answers: list[str] | None = None,
) -> dict[str, Any]:
    """HF ``config.json`` dict for exporting a backbone (+ heads) as ``ARCHITECTURES[kind]``."""
    if config.cross_attention != "shared":
        raise CheckpointError(
            "cannot export to HF: its LXMERT shares one cross-attention between both "
            f"directions, this model has cross_attention={config.cross_attention!r}; keep it "
            "in vlbench's layout"
        )
    if config.layer_norm_eps != HF_LAYER_NORM_EPS:
        raise CheckpointError(
            f"cannot export to HF: its LXMERT fixes layer_norm_eps at {HF_LAYER_NORM_EPS}, "
            f"this model uses {config.layer_norm_eps}"
        )
    return HF_CONFIG.to_hf(
        config, kind, answers=answers,
        visual_loss_normalizer=6.67,
        task_matched=kind == "pretraining",
        task_mask_lm=kind == "pretraining",
        task_obj_predict=kind == "pretraining" and bool(visual_losses),
        task_qa=kind == "qa" or qa,
        visual_obj_loss="obj" in visual_losses or kind != "pretraining",
        visual_attr_loss="attr" in visual_losses or kind != "pretraining",
        visual_feat_loss="feat" in visual_losses or kind != "pretraining",
    )
