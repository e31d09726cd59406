"""The blind baselines as model families: ``text_only`` and ``vision_only``."""

from __future__ import annotations

from vlbench.engine.backbone import (
    CROSS_ATTENTION,
    CROSS_MODAL_POOLED,
    LANGUAGE_STATES,
    REGION_INPUTS,
    REGION_STATES,
    ModelSpec,
    register_family,
)

from ..common.config import SYNTHETIC_OVERRIDES
from ..common.fit import fit_vocab
from ..lxmert.heads import LxmertPretrainingHeads
from ..lxmert.spec import ARCHITECTURE_KEYS
from ..lxmert.spec import fit_to_data as fit_regions
from .config import TextOnlyConfig, VisionOnlyConfig
from .heads import RegionPretrainingHeads
from .modeling import TextOnlyModel, VisionOnlyModel

_NOT_BOTH = "its pooled state has read only the {seen}; the objective needs one that has read both"

TEXT_ONLY = register_family(
    ModelSpec(
        family="text_only",
        description="Blind baseline: LXMERT's language encoder on the question or sentence "
                    "alone; the regions never reach it",
        config_class=TextOnlyConfig,
        backbone_class=TextOnlyModel,
        fit_to_data=lambda config, facts, explicit: fit_vocab(config, facts, explicit),
        architecture_keys=ARCHITECTURE_KEYS,
        synthetic_overrides=SYNTHETIC_OVERRIDES,
        # REGION_INPUTS: it accepts the region batches every task feeds, and ignores them
        provides=frozenset({LANGUAGE_STATES, REGION_INPUTS}),
        refusals={REGION_STATES: "it never reads the regions, so it has no region states",
                  CROSS_MODAL_POOLED: _NOT_BOTH.format(seen="text"),
                  CROSS_ATTENTION: _NOT_BOTH.format(seen="text")},
        pretraining_heads=LxmertPretrainingHeads.for_backbone,
    ),
    {"text_only": (None, "Blind baseline: the text alone (5 layers tiny, sized as LXMERT "
                         "tiny, on synthetic worlds)")},
)

VISION_ONLY = register_family(
    ModelSpec(
        family="vision_only",
        description="Blind baseline: LXMERT's object-relationship encoder on the regions "
                    "alone; the text never reaches it",
        config_class=VisionOnlyConfig,
        backbone_class=VisionOnlyModel,
        fit_to_data=fit_regions,
        architecture_keys=ARCHITECTURE_KEYS,
        synthetic_overrides=SYNTHETIC_OVERRIDES,
        provides=frozenset({REGION_STATES, REGION_INPUTS}),
        refusals={LANGUAGE_STATES: "it never reads the text, so it has no word states",
                  CROSS_MODAL_POOLED: _NOT_BOTH.format(seen="regions"),
                  CROSS_ATTENTION: _NOT_BOTH.format(seen="regions")},
        pretraining_heads=RegionPretrainingHeads.for_backbone,
    ),
    {"vision_only": (None, "Blind baseline: the regions alone (6 layers tiny, sized as LXMERT "
                           "tiny, on synthetic worlds)")},
)
