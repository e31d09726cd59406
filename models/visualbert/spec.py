"""VisualBERT as a model family: the spec the engine sees, and the model names it registers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vlbench.engine.backbone import DataFacts, ModelSpec, register_family

from ..common.config import SYNTHETIC_OVERRIDES
from ..common.fit import fit_regions_and_vocab
from .config import VisualBertConfig
from .heads import VisualBertPretrainingHeads, build_qa_head
from .modeling import VisualBertModel

#: config keys that fix tensor shapes (a fine-tune from a checkpoint adopts them)
ARCHITECTURE_KEYS = ("hidden_size", "num_attention_heads", "intermediate_size",
                     "num_hidden_layers", "max_position_embeddings", "type_vocab_size",
                     "use_boxes", "visual_pos_dim")

def fit_to_data(config: VisualBertConfig, facts: DataFacts, explicit: Mapping[str, Any]) -> None:
    """Size the region projection (``visual_embedding_dim``) to the features and the word
    table to the tokenizer."""
    fit_regions_and_vocab(config, facts, explicit, feat_key="visual_embedding_dim")


#: VisualBERT's pre-training heads (HF ``VisualBertForPreTraining``'s ``cls.*`` keys, plus the
#: masked-object and QA heads) over a backbone: ``(config, backbone, visual_losses,
#: num_answers)``, as ``ModelSpec`` calls them
pretraining_heads = VisualBertPretrainingHeads.for_backbone


SPEC = register_family(
    ModelSpec(
        family="visualbert",
        description="VisualBERT (Li et al. 2019): one BERT encoder over words and regions",
        config_class=VisualBertConfig,
        backbone_class=VisualBertModel,
        fit_to_data=fit_to_data,
        architecture_keys=ARCHITECTURE_KEYS,
        synthetic_overrides=SYNTHETIC_OVERRIDES,
        pretraining_heads=pretraining_heads,
        # NLVR2 has no entry: the shared pair head over (sentence, image) encodings serves.
        task_heads={"qa": build_qa_head},
    ),
    {
        "visualbert": (None, "VisualBERT (Li et al. 2019), BERT-base single stream; tiny on "
                             "synthetic worlds"),
        "visualbert_base": ("base", "VisualBERT at the published size: hidden 768, 12 layers"),
        "visualbert_tiny": ("tiny", "VisualBERT, CPU-sized: hidden 192, 5 layers"),
    },
)
