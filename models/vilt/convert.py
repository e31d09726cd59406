"""Load and export ViLT checkpoints.

- ``hf``: an HF transformers directory (``config.json`` with ``model_type: vilt`` +
  ``model.safetensors`` or ``pytorch_model.bin``, optionally sharded) of ``ViltModel``,
  ``ViltForQuestionAnswering``, ``ViltForImagesAndTextClassification`` (NLVR2) or
  ``ViltForMaskedLM``. Other ViLT architectures load their backbone; their head keys are
  reported as unexpected.
- ``vlbench``: vlbench's checkpoint layout (``vlbench.engine.layout``) of a ViLT.

Head states are returned under fixed names: ``qa`` (``ViltForQuestionAnswering``), ``nlvr2``
(``ViltForImagesAndTextClassification``) and ``pretraining`` (``ViltPretrainingHeads``, whose
``mlm_score`` HF's ``ViltForMaskedLM`` holds). Pickle files are only ever read with
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
from .config import ViltConfig
from .heads import (
    NLVR2_LABELS,
    QA_ROWS,
    ViltForImagesAndTextClassification,
    ViltForQuestionAnswering,
    ViltPretrainingHeads,
)
from .hf_config import ARCHITECTURES, HF_CONFIG, MODEL_TYPE, config_from_hf, config_to_hf
from .spec import SPEC

FAMILY = "vilt"
FORMATS = ("hf", "vlbench")
UNDERSTOOD = (
    "understood: an HF transformers ViLT directory (config.json with model_type 'vilt' + "
    "model.safetensors or pytorch_model.bin) or a vlbench ViLT checkpoint"
)
HEAD_TYPES = {"qa": "ViltForQuestionAnswering", "nlvr2": "ViltForImagesAndTextClassification",
              "pretraining": "ViltPretrainingHeads"}
HF_PREFIX = "vilt."  # where HF's task models keep the backbone
NLVR2_CLASSES = ("False", "True")  # vlbench's NLVR2 label order, and HF's fine-tuned model's
_BACKBONE_ROOTS = ("embeddings.", "encoder.", "layernorm.", "pooler.")
_MLM_ROOT = "mlm_score."
_TIED_DECODER = "mlm_score.decoder.weight"  # the word embeddings (tied)
_OLD_MLM_BIAS = "mlm_score.bias"  # earlier HF versions' alias of mlm_score.decoder.bias
_CLASSIFIER_ROOT = "classifier."
# buffers older HF versions saved; rebuilt, not read
_DERIVED = ("embeddings.text_embeddings.position_ids", "embeddings.text_embeddings.token_type_ids")


# --------------------------------------------------------------------------------------------
# Detection and loading
# --------------------------------------------------------------------------------------------


def detect_format(path: str | Path) -> str:
    """Which layout ``path`` holds: "hf" or "vlbench" (CheckpointError if neither, or if it
    is another family's checkpoint)."""
    return detect_hf_or_native(path, FAMILY, MODEL_TYPE, "ViLT", UNDERSTOOD)


def load_checkpoint(path: str | Path, fmt: str = "auto", *,
                    answers: list[str] | None = None) -> LoadedCheckpoint:
    """Read a ViLT checkpoint of either layout into vlbench names.

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
    """Convert an in-memory HF ViLT state dict and its config dict (``config.to_dict()``).
    The returned tensors share memory with ``state``."""
    loaded = _from_hf(state, hf_config, source)
    loaded.check()
    return loaded


def _from_hf(state: Mapping[str, Tensor], hf_config: Mapping[str, Any],
             source: str) -> LoadedCheckpoint:
    config = config_from_hf(dict(hf_config), source)
    report = LoadReport(source, "hf")
    backbone, heads = _split(state, report, hf_architecture(hf_config), config)
    answers = answers_from_hf(hf_config)
    if "nlvr2" in heads:  # NLVR2's two classes are not an answer table
        heads["nlvr2"] = _nlvr2_in_vlbench_order(heads["nlvr2"], answers, report)
        answers = None
    return LoadedCheckpoint(CHECKPOINTS, FAMILY, config, backbone, heads, answers, report)


def _split(state: Mapping[str, Tensor], report: LoadReport, architecture: str | None,
           config: ViltConfig) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]]:
    """Sort HF keys into backbone / masked-LM / classifier states."""
    backbone, groups = split_hf_state(
        state, report, name="ViLT", prefix=HF_PREFIX, backbone_roots=_BACKBONE_ROOTS,
        derived=_DERIVED, understood=UNDERSTOOD,
        groups={"tied": lambda k: k in (_TIED_DECODER, _OLD_MLM_BIAS),
                "mlm": lambda k: k.startswith(_MLM_ROOT),
                "classifier": lambda k: k.startswith(_CLASSIFIER_ROOT)})
    tied, mlm, classifier = groups["tied"], groups["mlm"], groups["classifier"]
    _read_tied(tied, mlm, backbone.get("embeddings.text_embeddings.word_embeddings.weight"),
               report)
    heads: dict[str, dict[str, Tensor]] = {}
    if mlm:
        heads["pretraining"] = mlm
    if classifier:
        kind = _classifier_kind(classifier, architecture, config, report)
        if kind is None:
            report.unexpected += list(classifier)
        else:  # vlbench's classifier heads keep HF's keys (classifier.0/1/3)
            heads[kind] = classifier
    return backbone, heads


def _classifier_kind(classifier: Mapping[str, Tensor], architecture: str | None,
                     config: ViltConfig, report: LoadReport) -> str | None:
    """Which head HF's ``classifier.*`` is: "qa", "nlvr2" or None (no vlbench counterpart)."""
    if architecture == ARCHITECTURES["qa"]:
        return "qa"
    if architecture == ARCHITECTURES["nlvr2"]:
        return "nlvr2"
    if architecture is not None:  # token classification, ...: not a pooled-state classifier
        report.notes.append(f"the {architecture} head has no vlbench counterpart; its keys "
                            "are left out")
        return None
    first = classifier.get("classifier.0.weight")
    kind = "nlvr2" if first is not None and first.shape[1] > config.hidden_size else "qa"
    report.notes.append(f"no 'architectures' in config.json; classifier.* read as the "
                        f"{kind} head (its input width)")
    return kind


def _read_tied(tied: Mapping[str, Tensor], mlm: dict[str, Tensor], embeddings: Tensor | None,
               report: LoadReport) -> None:
    """Stored copies of tied tensors: the decoder weight is the word-embedding table (say so
    when the copy differs); the old ``mlm_score.bias`` stands for the decoder bias."""
    decoder = tied.get(_TIED_DECODER)
    if decoder is not None and embeddings is not None and not torch.equal(decoder, embeddings):
        report.notes.append(f"{_TIED_DECODER} differs from the word embeddings; the tied word "
                            "embeddings are used")
    old_bias = tied.get(_OLD_MLM_BIAS)
    if old_bias is not None:
        bias = mlm.setdefault("mlm_score.decoder.bias", old_bias)
        if not torch.equal(bias, old_bias):
            report.notes.append(f"{_OLD_MLM_BIAS} differs from mlm_score.decoder.bias; the "
                                "decoder's is used")


def _nlvr2_in_vlbench_order(state: dict[str, Tensor], labels: list[str] | None,
                            report: LoadReport) -> dict[str, Tensor]:
    """The NLVR2 classifier with its outputs in vlbench's order (False, True): HF's fine-tuned
    model's, assumed where ``id2label`` holds no names; rows swapped for (True, False)."""
    if labels is None or [a.lower() for a in labels] == [c.lower() for c in NLVR2_CLASSES]:
        return state
    if [a.lower() for a in labels] != [c.lower() for c in reversed(NLVR2_CLASSES)]:
        raise CheckpointError(f"{report.source}: NLVR2 labels {labels}; vlbench reads the two "
                              f"classes {', '.join(NLVR2_CLASSES)}")
    report.notes.append("NLVR2 outputs reordered from (True, False) to (False, True)")
    out = dict(state)
    for key in (f"{_CLASSIFIER_ROOT}{QA_ROWS}", f"{_CLASSIFIER_ROOT}3.bias"):
        out[key] = state[key].flip(0)
    return out


def _load_hf(directory: Path) -> LoadedCheckpoint:
    return _from_hf(read_hf_weights(directory, UNDERSTOOD), read_json(directory / CONFIG_FILE),
                    str(directory))


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def _hf_parts(kind: str, head: nn.Module | None, config: ViltConfig,
              answers: list[str] | None, say: Callable[[str], None] | None
              ) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """ViLT's part of an HF export: the head's tensors and the config.json dict. The QA and
    NLVR2 heads must be ViLT's own; of the pre-training heads HF's ``ViltForMaskedLM`` holds
    ``mlm_score`` (``say`` names what is left out)."""
    if kind == "qa":
        _expect(head, ViltForQuestionAnswering, kind)
        return dict(head.state_dict()), config_to_hf(config, kind, head.num_answers, answers)
    if kind == "nlvr2":
        _expect(head, ViltForImagesAndTextClassification, kind)
        if config.images_per_example != head.num_images:
            # HF gives image i of an example modality i + 1; this backbone would not
            raise CheckpointError(
                f"HF's {ARCHITECTURES['nlvr2']} reads {head.num_images} images with their own "
                f"modality types, but this backbone has num_images {config.num_images}; "
                "export kind 'model' instead")
        return dict(head.state_dict()), config_to_hf(config, kind, NLVR2_LABELS,
                                                     list(NLVR2_CLASSES))
    if kind == "pretraining":
        _expect(head, ViltPretrainingHeads, kind)
        head_state = head.state_dict()
        left_out = [k for k in head_state if not k.startswith(_MLM_ROOT)]
        if left_out and say is not None:
            say(f"HF's {ARCHITECTURES['pretraining']} has only the mlm_score head: left out "
                f"{preview(left_out)}")
        return ({k: v for k, v in head_state.items() if k.startswith(_MLM_ROOT)},
                config_to_hf(config, kind))
    return {}, config_to_hf(config, kind)


def _expect(head: nn.Module | None, cls: type[nn.Module], kind: str) -> None:
    if not isinstance(head, cls):
        raise CheckpointError(f"HF's {ARCHITECTURES[kind]} holds a {cls.__name__}; a "
                              f"{type(head).__name__} has no place in it (export kind 'model' "
                              "instead)")


# --------------------------------------------------------------------------------------------
# The family: what the shared conversion needs, and the public functions it serves
# --------------------------------------------------------------------------------------------


def _qa_head(state: Mapping[str, Tensor], config: ViltConfig) -> ViltForQuestionAnswering:
    """HF's VQA classifier, sized as ``state``."""
    return ViltForQuestionAnswering(config, stored_rows(state, f"{_CLASSIFIER_ROOT}{QA_ROWS}"))


def _nlvr2_head(state: Mapping[str, Tensor], config: ViltConfig
                ) -> ViltForImagesAndTextClassification:
    """HF's NLVR2 classifier, sized as ``state`` (images from its input width)."""
    first = state.get(f"{_CLASSIFIER_ROOT}0.weight")
    images = first.shape[1] // config.hidden_size if first is not None else config.images_per_example
    return ViltForImagesAndTextClassification(
        config, num_images=images, num_labels=stored_rows(state, f"{_CLASSIFIER_ROOT}{QA_ROWS}"))


CHECKPOINTS = CheckpointFamily(
    spec=SPEC,
    pretraining_class=ViltPretrainingHeads,  # type: ignore[arg-type]  # same protocol
    head_types=HEAD_TYPES,
    hf=HF_CONFIG,
    hf_prefix=HF_PREFIX,
    hf_parts=_hf_parts,
    own_heads={"ViltForQuestionAnswering": _qa_head,
               "ViltForImagesAndTextClassification": _nlvr2_head},
    own_answer_rows={"ViltForQuestionAnswering": f"{_CLASSIFIER_ROOT}{QA_ROWS}",
                     "ViltPretrainingHeads": f"vqa_classifier.{QA_ROWS}"},
    understood=UNDERSTOOD,
)


#: Write a directory that ``transformers.<hf_config.ARCHITECTURES[kind]>.from_pretrained``
#: loads: ``export_hf(backbone, heads, out_dir, kind="model", answers=None, say=None)``; kind
#: "qa" needs ``heads["qa"]`` (a ``ViltForQuestionAnswering``), "nlvr2" ``heads["nlvr2"]`` (a
#: ``ViltForImagesAndTextClassification`` on a backbone with num_images 2), "pretraining"
#: ``heads["pretraining"]``, of which HF's ``ViltForMaskedLM`` holds ``mlm_score`` (``say``
#: names what is left out).
export_hf = CHECKPOINTS.export_hf


#: Write a checkpoint in vlbench's layout (``vlbench.engine.layout``); see
#: :meth:`CheckpointFamily.save_native`.
save_native = CHECKPOINTS.save_native
