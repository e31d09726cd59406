"""ViLT as a model family: the spec the engine sees, and the model names it registers."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vlbench.engine.backbone import (
    CROSS_ATTENTION,
    CROSS_MODAL_POOLED,
    LANGUAGE_STATES,
    PIXEL_INPUTS,
    REGION_INPUTS,
    REGION_STATES,
    DataFacts,
    ModelSpec,
    register_family,
)
from vlbench.errors import ConfigError

from ..common.config import SYNTHETIC_OVERRIDES
from ..common.fit import fit_vocab
from .config import ViltConfig
from .heads import ViltPretrainingHeads, build_nlvr2_head, build_qa_head
from .modeling import ViltModel

#: config keys that fix tensor shapes (a fine-tune from a checkpoint adopts them); the
#: modality table's size is the task's (one or two images), so ``fit_checkpoint`` fits it
ARCHITECTURE_KEYS = ("hidden_size", "num_attention_heads", "intermediate_size",
                     "num_hidden_layers", "max_position_embeddings", "type_vocab_size",
                     "image_size", "patch_size", "num_channels", "qkv_bias")
#: the backbone's modality-type table (text, first image, second image, ...)
MODALITY_TABLE = "embeddings.token_type_embeddings.weight"

#: ViLT reads pixels and has patch states, not region states
PROVIDES = frozenset({LANGUAGE_STATES, CROSS_MODAL_POOLED, CROSS_ATTENTION, PIXEL_INPUTS})
REFUSALS = {
    REGION_INPUTS: "it reads images (pixel_values), and this task feeds detector region "
                   "features only (GQA, VQA, NLVR2 and pre-training feed a pixel model their "
                   "images)",
    REGION_STATES: "a masked-region objective does not apply to patches",
}


def fit_to_data(config: ViltConfig, facts: DataFacts, explicit: Mapping[str, Any]) -> None:
    """Size the word table to the tokenizer (ViLT reads no region features), give each image
    of a multi-image example its own modality type (NLVR2: HF's ``num_images=2`` with
    modality types 1 and 2, as ``ViltForImagesAndTextClassification``), and check up front
    that an ``init_vit`` the user sets for this run names a file."""
    fit_vocab(config, facts, explicit)
    if facts.images_per_example > 1 and "model.num_images" not in explicit:
        config.num_images = facts.images_per_example
    if "model.modality_type_vocab_size" not in explicit:
        config.modality_type_vocab_size = max(config.modality_type_vocab_size,
                                              config.images_per_example + 1)
    if "model.init_vit" in explicit and config.init_vit and not Path(
            config.init_vit).expanduser().is_file():
        raise ConfigError(f"--set model.init_vit={config.init_vit}: no such file; name a timm "
                          "ViT state dict (.safetensors, .pth or .bin)")


def fit_checkpoint(tensors: dict[str, Tensor], config: ViltConfig) -> dict[str, Tensor]:
    """A checkpoint's backbone with its modality table sized for ``config``: grown as ViLT's
    own NLVR2 fine-tuning grows it (each new image type starts as the first image's row), or
    cut to the rows a run with fewer images per example uses."""
    table = tensors.get(MODALITY_TABLE)
    rows = config.modality_type_vocab_size
    if table is None or table.shape[0] == rows:
        return tensors
    extra = table[1:2].expand(max(rows - table.shape[0], 0), -1)
    return {**tensors, MODALITY_TABLE: torch.cat([table[:rows], extra]).clone()}


#: ViLT's pre-training heads (masked LM with HF ``ViltForMaskedLM``'s keys, matching, QA) over
#: a backbone: ``(config, backbone, visual_losses, num_answers)``, as ``ModelSpec`` calls them
pretraining_heads = ViltPretrainingHeads.for_backbone


SPEC = register_family(
    ModelSpec(
        family="vilt",
        description="ViLT (Kim et al. 2021): one transformer over words and image patches",
        config_class=ViltConfig,
        backbone_class=ViltModel,
        fit_to_data=fit_to_data,
        architecture_keys=ARCHITECTURE_KEYS,
        synthetic_overrides=SYNTHETIC_OVERRIDES,
        provides=PROVIDES,
        refusals=REFUSALS,
        pretraining_heads=pretraining_heads,
        task_heads={"qa": build_qa_head, "nlvr2": build_nlvr2_head},
        fit_checkpoint=fit_checkpoint,
    ),
    {
        "vilt": (None, "ViLT (Kim et al. 2021), ViT-B/32 single stream over pixels; tiny on "
                       "synthetic worlds"),
        "vilt_base": ("base", "ViLT-B/32 at the published size: hidden 768, 12 layers, 384 px"),
        "vilt_tiny": ("tiny", "ViLT, CPU-sized: hidden 192, 4 layers, 32-px patches of 128 px"),
    },
)
