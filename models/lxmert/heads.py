"""LXMERT's pre-training heads, named as HF's ``LxmertForPreTraining`` and the released code.

The heads themselves are shared with the other families (``models/common/pretraining.py``);
this module gives them LXMERT's name, which checkpoints store as the head's class.
"""

from __future__ import annotations

from ..common.pretraining import (
    VISUAL_LOSSES,
    LMPredictionHead,
    PredictionHeadTransform,
    PreTrainingHeads,
    PretrainingHeads,
    VisualObjHead,
)

__all__ = [
    "VISUAL_LOSSES", "LMPredictionHead", "LxmertPretrainingHeads", "PreTrainingHeads",
    "PredictionHeadTransform", "VisualObjHead",
]


class LxmertPretrainingHeads(PretrainingHeads):
    """All LXMERT pre-training heads over one backbone output: ``cls.predictions`` (masked LM,
    tied to the word embeddings), ``cls.seq_relationship`` (cross-modality matching),
    ``obj_predict_head`` (masked-object decoders) and ``answer_head`` (image QA)."""
