"""Load and export VisualBERT checkpoints.

- ``hf``: an HF transformers directory (``config.json`` with ``model_type: visual_bert`` +
  ``model.safetensors`` or ``pytorch_model.bin``, optionally sharded) of ``VisualBertModel``,
  ``VisualBertForQuestionAnswering`` or ``VisualBertForPreTraining``. Other VisualBERT
  architectures load their backbone; their head keys are reported as unexpected.
- ``vlbench``: vlbench's checkpoint layout (``vlbench.engine.layout``) of a VisualBERT.

Head states are returned under fixed names: ``qa`` (``VisualBertForQuestionAnswering``),
``pretraining`` (``VisualBertPretrainingHeads``) and, in vlbench checkpoints, ``nlvr2``
(the shared ``NLVR2Head``). Pickle files are only ever read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vlbench.errors import CheckpointError

from ..common.checkpoint import (
    CONFIG_FILE,
    CheckpointFamily,
    LoadedCheckpoint,
    LoadReport,
    Reader,
    answers_from_hf,
    detect_hf_or_native,
    hf_architecture,
    preview,
    read_hf_weights,
    read_json,
    split_hf_state,
    stored_rows,
)
from .config import VisualBertConfig
from .heads import VisualBertForQuestionAnswering, VisualBertPretrainingHeads
from .hf_config import ARCHITECTURES, HF_CONFIG, MODEL_TYPE, config_from_hf, config_to_hf
from .spec import SPEC

FAMILY = "visualbert"
FORMATS = ("hf", "vlbench")
UNDERSTOOD = (
    "understood: an HF transformers VisualBERT directory (config.json with model_type "
    "'visual_bert' + model.safetensors or pytorch_model.bin) or a vlbench VisualBERT checkpoint"
)
HEAD_TYPES = {"qa": "VisualBertForQuestionAnswering", "pretraining": "VisualBertPretrainingHeads",
              "nlvr2": "NLVR2Head"}
HF_PREFIX = "visual_bert."  # where HF's task models keep the backbone
_BACKBONE_ROOTS = ("embeddings.", "encoder.", "pooler.")
_PRETRAIN_ROOTS = ("cls.predictions.", "cls.seq_relationship.")
_QA_KEYS = ("cls.weight", "cls.bias")
_TIED_DECODER = "cls.predictions.decoder.weight"  # the word embeddings (tied)
_TIED_DECODER_BIAS = "cls.predictions.decoder.bias"  # cls.predictions.bias (tied)
_DERIVED = ("embeddings.position_ids",)  # a buffer older HF versions saved; rebuilt, not read


# --------------------------------------------------------------------------------------------
# Detection and loading
# --------------------------------------------------------------------------------------------


def detect_format(path: str | Path) -> str:
    """Which layout ``path`` holds: "hf" or "vlbench" (CheckpointError if neither, or if it
    is another family's checkpoint)."""
    return detect_hf_or_native(path, FAMILY, MODEL_TYPE, "VisualBERT", UNDERSTOOD)


def load_checkpoint(path: str | Path, fmt: str = "auto", *,
                    answers: list[str] | None = None) -> LoadedCheckpoint:
    """Read a VisualBERT checkpoint of either layout into vlbench names.

    Args:
        path: checkpoint directory (or its ``config.json`` / weights file).
        fmt: "auto", "hf" or "vlbench".
        answers: the answer list, when the checkpoint holds none (HF ``id2label``, vlbench
            ``answers.json``) or a different one.
    """
    readers: dict[str, Reader] = {"hf": _load_hf, "vlbench": CHECKPOINTS.load_native}
    return CHECKPOINTS.load(path, fmt, readers, detect_format, answers)


def from_hf_state_dict(state: Mapping[str, Tensor], hf_config: Mapping[str, Any],
                       source: str = "<memory>") -> LoadedCheckpoint:
    """Convert an in-memory HF VisualBERT state dict and its config dict
    (``config.to_dict()``). The returned tensors share memory with ``state``."""
    loaded = _from_hf(state, hf_config, source)
    loaded.check()
    return loaded


def _from_hf(state: Mapping[str, Tensor], hf_config: Mapping[str, Any],
             source: str) -> LoadedCheckpoint:
    config = config_from_hf(dict(hf_config), source)
    report = LoadReport(source, "hf")
    backbone, heads = _split(state, report, hf_architecture(hf_config))
    return LoadedCheckpoint(CHECKPOINTS, FAMILY, config, backbone, heads,
                            answers_from_hf(hf_config), report)


def _split(state: Mapping[str, Tensor], report: LoadReport, architecture: str | None
           ) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]]:
    """Sort HF keys into backbone / pre-training / QA states."""
    backbone, groups = split_hf_state(
        state, report, name="VisualBERT", prefix=HF_PREFIX, backbone_roots=_BACKBONE_ROOTS,
        derived=_DERIVED, understood=UNDERSTOOD,
        groups={"tied": lambda k: k in (_TIED_DECODER, _TIED_DECODER_BIAS),
                "pretrain": lambda k: k.startswith(_PRETRAIN_ROOTS),
                "classifier": lambda k: k in _QA_KEYS})
    tied, pretrain, classifier = groups["tied"], groups["pretrain"], groups["classifier"]
    _note_untied(tied, backbone.get("embeddings.word_embeddings.weight"),
                 pretrain.get("cls.predictions.bias"), report)
    heads: dict[str, dict[str, Tensor]] = {}
    if pretrain:
        heads["pretraining"] = pretrain
    if classifier:
        if architecture in (None, ARCHITECTURES["qa"]):
            heads["qa"] = classifier
            if architecture is None:
                report.notes.append("no 'architectures' in config.json; cls.* read as the VQA head")
        else:  # VisualReasoning / MultipleChoice classify the pooled state: not this QA head
            report.unexpected += list(classifier)
            report.notes.append(f"the {architecture} head has no vlbench counterpart; "
                                "its keys are left out")
    return backbone, heads


def _note_untied(tied: Mapping[str, Tensor], embeddings: Tensor | None, bias: Tensor | None,
                 report: LoadReport) -> None:
    """Say when a stored copy of a tied tensor differs from the tensor it is tied to."""
    for key, reference, what in ((_TIED_DECODER, embeddings, "word embeddings"),
                                 (_TIED_DECODER_BIAS, bias, "cls.predictions.bias")):
        if key in tied and reference is not None and not torch.equal(tied[key], reference):
            report.notes.append(f"{key} differs from the {what}; the tied {what} are used")


def _load_hf(directory: Path) -> LoadedCheckpoint:
    return _from_hf(read_hf_weights(directory, UNDERSTOOD), read_json(directory / CONFIG_FILE),
                    str(directory))


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def _hf_parts(kind: str, head: nn.Module | None, config: VisualBertConfig,
              answers: list[str] | None, say: Callable[[str], None] | None
              ) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """VisualBERT's part of an HF export: the head's tensors and the config.json dict. The QA
    head must be a ``VisualBertForQuestionAnswering``; of the pre-training heads HF's
    ``VisualBertForPreTraining`` holds the ``cls.*`` ones (``say`` names what is left out)."""
    if kind == "qa":
        if not isinstance(head, VisualBertForQuestionAnswering):
            raise CheckpointError(
                f"HF's {ARCHITECTURES['qa']} holds a last-token classifier; a "
                f"{type(head).__name__} has no place in it (export kind 'model' instead)")
        return dict(head.state_dict()), config_to_hf(config, kind, head.num_answers, answers)
    if kind == "pretraining":
        head_state = head.state_dict()
        left_out = [k for k in head_state if not k.startswith(_PRETRAIN_ROOTS)]
        if left_out and say is not None:
            say(f"HF's {ARCHITECTURES['pretraining']} has only the cls.* heads: left out "
                f"{preview(left_out)}")
        return ({k: v for k, v in head_state.items() if k.startswith(_PRETRAIN_ROOTS)},
                config_to_hf(config, kind))
    return {}, config_to_hf(config, kind)


# --------------------------------------------------------------------------------------------
# The family: what the shared conversion needs, and the public functions it serves
# --------------------------------------------------------------------------------------------


def _qa_head(state: Mapping[str, Tensor], config: VisualBertConfig
             ) -> VisualBertForQuestionAnswering:
    """HF's VQA head, sized as ``state``."""
    return VisualBertForQuestionAnswering(config, stored_rows(state, "cls.weight"))


CHECKPOINTS = CheckpointFamily(
    spec=SPEC,
    pretraining_class=VisualBertPretrainingHeads,
    head_types=HEAD_TYPES,
    hf=HF_CONFIG,
    hf_prefix=HF_PREFIX,
    hf_parts=_hf_parts,
    # HF's VQA head; a task may still ask for the shared QAHead, which is built too
    own_heads={"VisualBertForQuestionAnswering": _qa_head},
    own_answer_rows={"VisualBertForQuestionAnswering": "cls.weight"},
    understood=UNDERSTOOD,
)


#: Write a directory that ``transformers.<hf_config.ARCHITECTURES[kind]>.from_pretrained``
#: loads: ``export_hf(backbone, heads, out_dir, kind="model", answers=None, say=None)``; kind
#: "qa" needs ``heads["qa"]`` (a ``VisualBertForQuestionAnswering``), "pretraining"
#: ``heads["pretraining"]``, of which HF's ``VisualBertForPreTraining`` holds the ``cls.*``
#: heads (``say`` names what is left out).
export_hf = CHECKPOINTS.export_hf


#: Write a checkpoint in vlbench's layout (``vlbench.engine.layout``); see
#: :meth:`CheckpointFamily.save_native`.
save_native = CHECKPOINTS.save_native
