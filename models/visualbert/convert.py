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

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from vlbench.engine.layout import read_checkpoint, write_checkpoint
from vlbench.errors import CheckpointError

from ..common.checkpoint import (
    CONFIG_FILE,
    HF_WEIGHT_FILES,
    CheckpointFamily,
    LoadedCheckpoint,
    LoadReport,
    answers_from_hf,
    contiguous,
    preview,
    read_hf_weights,
    read_json,
    rename_layer_norm,
)
from ..common.pretraining import VISUAL_LOSSES
from ..heads import NLVR2Head, QAHead
from .config import VisualBertConfig
from .heads import VisualBertForQuestionAnswering, VisualBertPretrainingHeads
from .hf_config import ARCHITECTURES, MODEL_TYPE, config_from_hf, config_to_hf
from .modeling import VisualBertModel

FAMILY = "visualbert"
FORMATS = ("hf", "vlbench")
WEIGHTS_FILE = "model.safetensors"
UNDERSTOOD = (
    "understood: an HF transformers VisualBERT directory (config.json with model_type "
    "'visual_bert' + model.safetensors or pytorch_model.bin) or a vlbench VisualBERT checkpoint"
)
HEAD_TYPES = {"qa": "VisualBertForQuestionAnswering", "pretraining": "VisualBertPretrainingHeads",
              "nlvr2": "NLVR2Head"}
HEAD_CLASSES = (*HEAD_TYPES.values(), "QAHead")  # QAHead: the shared head, when a task asks
HF_PREFIX = "visual_bert."  # where HF's task models keep the backbone
_BACKBONE_ROOTS = ("embeddings.", "encoder.", "pooler.")
_PRETRAIN_ROOTS = ("cls.predictions.", "cls.seq_relationship.")
_QA_KEYS = ("cls.weight", "cls.bias")
_TIED_DECODER = "cls.predictions.decoder.weight"  # the word embeddings (tied)
_TIED_DECODER_BIAS = "cls.predictions.decoder.bias"  # cls.predictions.bias (tied)
_DERIVED = ("embeddings.position_ids",)  # a buffer older HF versions saved; rebuilt, not read


def _empty_head(kind: str, state: Mapping[str, Tensor], config: VisualBertConfig,
                backbone: nn.Module | None) -> nn.Module:
    """A freshly initialised head of class ``kind``, sized as ``state``."""
    if kind == "VisualBertForQuestionAnswering":
        rows = state["cls.weight"].shape[0] if "cls.weight" in state else 1
        return VisualBertForQuestionAnswering(config, rows)
    if kind == "QAHead":
        rows = state["logit_fc.3.weight"].shape[0] if "logit_fc.3.weight" in state else 1
        return QAHead(config.hidden_size, rows, config.layer_norm_eps, config.initializer_range)
    if kind == "NLVR2Head":
        return NLVR2Head(config.hidden_size, config.layer_norm_eps, config.initializer_range)
    if kind == "VisualBertPretrainingHeads":
        if backbone is None:
            raise CheckpointError("the pre-training heads need the backbone they are tied to")
        losses = tuple(n for n in VISUAL_LOSSES
                       if f"obj_predict_head.decoder_dict.{n}.weight" in state)
        # Label counts as stored: the heads may have been built for fewer QA answers etc.
        sizes = {name: state[key].shape[0] for name, key in (
            ("num_qa_labels", "answer_head.logit_fc.3.weight"),
            ("num_object_labels", "obj_predict_head.decoder_dict.obj.weight"),
            ("num_attr_labels", "obj_predict_head.decoder_dict.attr.weight")) if key in state}
        qa = any(k.startswith("answer_head.") for k in state)
        return VisualBertPretrainingHeads(dataclasses.replace(config, **sizes),
                                          backbone.get_input_embeddings(), losses, qa)
    raise CheckpointError(
        f"cannot build a head of class '{kind}'; known: {', '.join(sorted(HEAD_CLASSES))}")


CHECKPOINTS = CheckpointFamily(
    family=FAMILY,
    backbone_class=VisualBertModel,
    empty_head=_empty_head,
    head_types=HEAD_TYPES,
    answer_rows={"VisualBertForQuestionAnswering": "cls.weight", "QAHead": "logit_fc.3.weight",
                 "VisualBertPretrainingHeads": "answer_head.logit_fc.3.weight"},
)


# --------------------------------------------------------------------------------------------
# Detection and loading
# --------------------------------------------------------------------------------------------


def detect_format(path: str | Path) -> str:
    """Which layout ``path`` holds: "hf" or "vlbench" (CheckpointError if neither, or if it
    is another family's checkpoint)."""
    p = Path(path)
    if p.is_file() and (p.name == CONFIG_FILE or p.name in HF_WEIGHT_FILES):
        p = p.parent
    config_path = p / CONFIG_FILE
    if not p.is_dir() or not config_path.is_file():
        raise CheckpointError(f"{p}: no {CONFIG_FILE} in this directory; {UNDERSTOOD}")
    meta = read_json(config_path)
    if isinstance(meta, dict) and "model" in meta and "config" in meta:
        family = read_checkpoint(p).family
        if family != FAMILY:
            raise CheckpointError(f"{p}: a {family} checkpoint, not VisualBERT")
        return "vlbench"
    if isinstance(meta, dict) and meta.get("model_type") == MODEL_TYPE:
        return "hf"
    raise CheckpointError(f"{config_path}: not a VisualBERT config; {UNDERSTOOD}")


def load_checkpoint(path: str | Path, fmt: str = "auto", *,
                    answers: list[str] | None = None) -> LoadedCheckpoint:
    """Read a VisualBERT checkpoint of either layout into vlbench names.

    Args:
        path: checkpoint directory (or its ``config.json`` / weights file).
        fmt: "auto", "hf" or "vlbench".
        answers: the answer list, when the checkpoint holds none (HF ``id2label``, vlbench
            ``answers.json``) or a different one.
    """
    if fmt not in ("auto", *FORMATS):
        raise CheckpointError(f"unknown checkpoint format '{fmt}'; use auto, {', '.join(FORMATS)}")
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    fmt = detect_format(p) if fmt == "auto" else fmt
    if p.is_file():
        p = p.parent
    if fmt == "hf":
        loaded = _from_hf(read_hf_weights(p, UNDERSTOOD), read_json(p / CONFIG_FILE), str(p))
    else:
        loaded = _load_native(p)
    if answers is not None:
        loaded.answers = [str(a) for a in answers]
    loaded.check()
    return loaded


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
    architectures = hf_config.get("architectures") or []
    architecture = architectures[0] if architectures else None
    backbone, heads = _split(state, report, architecture)
    return LoadedCheckpoint(CHECKPOINTS, FAMILY, config, backbone, heads,
                            answers_from_hf(hf_config), report)


def _split(state: Mapping[str, Tensor], report: LoadReport, architecture: str | None
           ) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]]:
    """Sort HF keys into backbone / pre-training / QA states."""
    backbone: dict[str, Tensor] = {}
    pretrain: dict[str, Tensor] = {}
    classifier: dict[str, Tensor] = {}
    tied: dict[str, Tensor] = {}
    for raw_key, value in state.items():
        key = rename_layer_norm(raw_key.removeprefix("module."))
        if key.startswith(HF_PREFIX) and key.removeprefix(HF_PREFIX).startswith(_BACKBONE_ROOTS):
            key = key.removeprefix(HF_PREFIX)
        if key in _DERIVED:
            continue
        if key.startswith(_BACKBONE_ROOTS):
            backbone[key] = value
        elif key in (_TIED_DECODER, _TIED_DECODER_BIAS):
            tied[key] = value
        elif key.startswith(_PRETRAIN_ROOTS):
            pretrain[key] = value
        elif key in _QA_KEYS:
            classifier[key] = value
        else:
            report.unexpected.append(raw_key)
    if not backbone:
        raise CheckpointError(
            f"{report.source}: no VisualBERT backbone weights found (first keys: "
            f"{preview(list(state))}); {UNDERSTOOD}"
        )
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


def _load_native(directory: Path) -> LoadedCheckpoint:
    stored = read_checkpoint(directory)
    if stored.family != FAMILY:
        raise CheckpointError(f"{directory}: a {stored.family} checkpoint, not VisualBERT")
    try:
        config = VisualBertConfig.from_dict(stored.model_config)
    except Exception as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: {exc}") from exc
    report = LoadReport(str(directory), "vlbench")
    backbone, heads, report.unexpected = stored.split()
    return LoadedCheckpoint(CHECKPOINTS, stored.model, config, backbone, heads, stored.answers,
                            report, dict(stored.heads))


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def export_hf(
    backbone: VisualBertModel,
    heads: Mapping[str, nn.Module] | None,
    out_dir: str | Path,
    kind: str = "model",
    answers: list[str] | None = None,
    say: Callable[[str], None] | None = None,
) -> Path:
    """Write a directory that ``transformers.<ARCHITECTURES[kind]>.from_pretrained`` loads.

    ``kind`` "model" writes the backbone alone; "qa" needs ``heads["qa"]`` (a
    ``VisualBertForQuestionAnswering``); "pretraining" needs ``heads["pretraining"]``, of which
    HF's ``VisualBertForPreTraining`` holds the ``cls.*`` heads (``say`` names what is left out).
    """
    if kind not in ARCHITECTURES:
        raise CheckpointError(f"unknown export kind '{kind}'; use {', '.join(ARCHITECTURES)}")
    heads = dict(heads or {})
    state: dict[str, Tensor] = {}
    num_labels = None
    if kind == "model":
        state.update(backbone.state_dict())
    else:
        head_name = "qa" if kind == "qa" else "pretraining"
        head = heads.get(head_name)
        if head is None:
            raise CheckpointError(f"export kind '{kind}' needs heads['{head_name}']")
        state.update({f"{HF_PREFIX}{k}": v for k, v in backbone.state_dict().items()})
        if kind == "qa":
            if not isinstance(head, VisualBertForQuestionAnswering):
                raise CheckpointError(
                    f"HF's {ARCHITECTURES['qa']} holds a last-token classifier; a "
                    f"{type(head).__name__} has no place in it (export kind 'model' instead)")
            state.update(head.state_dict())
            num_labels = head.num_answers
        else:
            head_state = head.state_dict()
            left_out = [k for k in head_state if not k.startswith(_PRETRAIN_ROOTS)]
            if left_out and say is not None:
                say(f"HF's {ARCHITECTURES['pretraining']} has only the cls.* heads: left out "
                    f"{preview(left_out)}")
            state.update({k: v for k, v in head_state.items() if k.startswith(_PRETRAIN_ROOTS)})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf = config_to_hf(backbone.config, kind, num_labels, answers if kind == "qa" else None)
    (out / CONFIG_FILE).write_text(json.dumps(hf, indent=2) + "\n")
    save_file(contiguous(state), str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    return out


def save_native(
    out_dir: str | Path,
    backbone: VisualBertModel,
    heads: Mapping[str, nn.Module] | None = None,
    answers: list[str] | None = None,
    model_name: str = FAMILY,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint in vlbench's layout (``vlbench.engine.layout``).

    ``extra`` adds JSON fields to config.json (e.g. the run that produced the weights).
    """
    heads = dict(heads or {})
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    for name, head in heads.items():
        state.update({f"heads.{name}.{k}": v for k, v in head.state_dict().items()})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_checkpoint(out, family=FAMILY, model=model_name,
                     config={"model": backbone.config.to_dict()}, heads=heads, answers=answers,
                     extra=extra)
    save_file(contiguous(state), str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    return out
