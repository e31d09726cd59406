"""Late fusion as a model family: the spec the engine sees, and the model names it registers."""

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
from ..lxmert.heads import LxmertPretrainingHeads
from ..lxmert.spec import ARCHITECTURE_KEYS, fit_to_data
from .config import LateFusionConfig
from .modeling import LateFusionModel

SPEC = register_family(
    ModelSpec(
        family="late_fusion",
        description="Late fusion: LXMERT's language and object-relationship encoders, no "
                    "cross-modality layers; the pooled text times the pooled regions",
        config_class=LateFusionConfig,
        backbone_class=LateFusionModel,
        fit_to_data=fit_to_data,
        architecture_keys=ARCHITECTURE_KEYS,
        synthetic_overrides=SYNTHETIC_OVERRIDES,
        provides=frozenset({LANGUAGE_STATES, REGION_STATES, CROSS_MODAL_POOLED, REGION_INPUTS}),
        refusals={CROSS_ATTENTION: "its words and regions never attend to each other: a "
                                   "matched/mismatched decision would rest on two summaries "
                                   "pooled apart, not on the cross-modal alignment this "
                                   "objective trains"},
        pretraining_heads=LxmertPretrainingHeads.for_backbone,
    ),
    {
        "late_fusion": (None, "Late fusion of LXMERT's single-modality encoders; tiny (3/2/0, "
                              "sized as LXMERT tiny) on synthetic worlds"),
        "late_fusion_base": ("base", "Late fusion at LXMERT's published encoder sizes (9/5/0)"),
    },
)
