"""LXMERT as a model family: the spec the engine sees, and the model names it registers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vlbench.engine.backbone import DataFacts, ModelSpec, register_family

from ..common.config import SYNTHETIC_OVERRIDES
from ..common.fit import fit_regions_and_vocab
from .config import LxmertConfig
from .heads import LxmertPretrainingHeads
from .modeling import LxmertModel

#: config keys that fix tensor shapes (a fine-tune from a checkpoint adopts them)
ARCHITECTURE_KEYS = ("hidden_size", "num_attention_heads", "intermediate_size", "l_layers",
                     "r_layers", "x_layers", "cross_attention", "visual_pos_dim", "max_position_embeddings",
                     "type_vocab_size")

def fit_to_data(config: LxmertConfig, facts: DataFacts, explicit: Mapping[str, Any]) -> None:
    """Size the region projection (``visual_feat_dim``) to the features and the word table
    to the tokenizer."""
    fit_regions_and_vocab(config, facts, explicit)


#: LXMERT's pre-training heads (HF ``LxmertForPreTraining`` keys) over a backbone:
#: ``(config, backbone, visual_losses, num_answers)``, as ``ModelSpec`` calls them
pretraining_heads = LxmertPretrainingHeads.for_backbone


SPEC = register_family(
    ModelSpec(
        family="lxmert",
        description="LXMERT (Tan & Bansal 2019): language, object-relationship and "
                    "cross-modality encoders",
        config_class=LxmertConfig,
        backbone_class=LxmertModel,
        fit_to_data=fit_to_data,
        architecture_keys=ARCHITECTURE_KEYS,
        synthetic_overrides=SYNTHETIC_OVERRIDES,
        pretraining_heads=pretraining_heads,
    ),
    {
        "lxmert": (None, "LXMERT (Tan & Bansal 2019), 9/5/5 encoders; tiny on synthetic worlds"),
        "lxmert_base": ("base", "LXMERT at the published size: hidden 768, 9/5/5 layers"),
        "lxmert_tiny": ("tiny", "LXMERT, CPU-sized: hidden 192, 2/1/1 layers"),
        "lxmert_coattn": (None, "LXMERT with one cross-attention per direction (ViLBERT's "
                                "co-attention) instead of one shared by both",
                          {"cross_attention": "per_direction"}),
    },
)
