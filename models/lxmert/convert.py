"""Load and export LXMERT checkpoints in the three layouts people have.

- ``hf``: an HF transformers directory (``config.json`` + ``model.safetensors`` or
  ``pytorch_model.bin``, optionally sharded) of ``LxmertModel``, ``LxmertForPreTraining`` or
  ``LxmertForQuestionAnswering``.
- ``airsplay``: a file of the original release (github.com/airsplay/lxmert):
  pre-training ``model_LXRT.pth`` / ``EpochNN_LXRT.pth`` (``bert.*``, ``cls.*``,
  ``obj_predict_head.*``, ``answer_head.*``) and fine-tuned VQA / GQA / NLVR2 ``BEST.pth``
  (``lxrt_encoder.model.bert.*``, ``logit_fc.*``), with an optional ``module.`` prefix.
- ``vlbench``: vlbench's one checkpoint layout (``vlbench.engine.layout``: ``model.safetensors``
  with ``backbone.*`` and ``heads.<name>.*``, ``config.json``, ``answers.json``), as written by
  ``vlbench train`` / ``pretrain`` runs and by ``vlbench convert``, or an earlier layout.

Head states are returned under fixed names: ``pretraining`` (keys of
``LxmertPretrainingHeads``), ``qa`` (``QAHead``) and ``nlvr2`` (``NLVR2Head``).
Pickle files are only ever read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vlbench.errors import CheckpointError

from ..common.checkpoint import (
    CONFIG_FILE,
    HF_WEIGHT_FILES,
    CheckpointFamily,
    LoadedCheckpoint,
    LoadReport,
    Reader,
    answers_from_hf,
    matching_preset,
    preview,
    read_answers,
    read_hf_weights,
    read_json,
    rename_layer_norm,
)
from ..common.safe_load import PICKLE_SUFFIXES, read_state_dict
from .config import PRESETS, LxmertConfig
from .heads import LxmertPretrainingHeads
from .hf_config import HF_CONFIG, config_from_hf, config_to_hf
from .spec import SPEC

FORMATS = ("hf", "airsplay", "vlbench")
#: LXMERT was released at BERT-base width only (12 heads of 64)
PUBLISHED_HIDDEN = 768
LABEL2ANS_FILE = "trainval_label2ans.json"  # the original release's answer list
UNDERSTOOD = (
    "understood: an HF transformers LXMERT directory (config.json + model.safetensors or "
    "pytorch_model.bin), an original LXMERT .pth (model_LXRT.pth, EpochNN_LXRT.pth, BEST.pth), "
    "or a vlbench directory (config.json with 'model' and 'config' + model.safetensors)"
)
_BACKBONE_ROOTS = ("embeddings.", "encoder.", "pooler.")
_PRETRAIN_ROOTS = ("cls.", "obj_predict_head.", "answer_head.")
_TIED_DECODER = "cls.predictions.decoder.weight"
HEAD_TYPES = {"qa": "QAHead", "nlvr2": "NLVR2Head", "pretraining": "LxmertPretrainingHeads"}


# --------------------------------------------------------------------------------------------
# Detection and loading
# --------------------------------------------------------------------------------------------


def detect_format(path: str | Path) -> str:
    """Which layout ``path`` holds: "hf", "airsplay" or "vlbench" (CheckpointError if none)."""
    p = _resolve(Path(path))
    if p.is_file():
        if p.name == CONFIG_FILE or (
            p.name in HF_WEIGHT_FILES and (p.parent / CONFIG_FILE).is_file()
        ):
            return detect_format(p.parent)
        if p.suffix in PICKLE_SUFFIXES:
            return "airsplay"
        raise CheckpointError(f"{p}: unknown checkpoint layout; {UNDERSTOOD}")
    config_path = p / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"{p}: no {CONFIG_FILE} in this directory; {UNDERSTOOD}")
    meta = read_json(config_path, UNDERSTOOD)
    if isinstance(meta, dict) and "model" in meta and "config" in meta:
        if (meta.get("family") or meta["model"]) != "lxmert":
            raise CheckpointError(f"{config_path}: a {meta.get('family') or meta['model']} "
                                  "checkpoint, not LXMERT")
        return "vlbench"
    if isinstance(meta, dict) and (meta.get("model_type") == "lxmert" or "l_layers" in meta):
        return "hf"
    raise CheckpointError(f"{config_path}: not an LXMERT config; {UNDERSTOOD}")


def load_checkpoint(
    path: str | Path,
    fmt: str = "auto",
    *,
    answers: str | Path | list[str] | None = None,
    num_attention_heads: int | None = None,
) -> LoadedCheckpoint:
    """Read a checkpoint of any understood layout into vlbench names.

    Args:
        path: checkpoint directory or file (``BEST`` finds ``BEST.pth``, as the original does).
        fmt: "auto", "hf", "airsplay" or "vlbench".
        answers: answer list, or a JSON file of one (``trainval_label2ans.json``); by default
            the checkpoint's own list, or a ``trainval_label2ans.json`` next to an original one.
        num_attention_heads: for original ``.pth`` files, which store no config; defaults to
            hidden_size / 64 as in BERT.
    """
    readers: dict[str, Reader] = {
        "hf": _load_hf,
        "airsplay": lambda p: _load_airsplay(p, num_attention_heads),
        "vlbench": CHECKPOINTS.load_native,
    }
    return CHECKPOINTS.load(path, fmt, readers, detect_format, answers, resolve=_resolve)


def from_hf_state_dict(
    state: Mapping[str, Tensor], hf_config: Mapping[str, Any], source: str = "<memory>"
) -> LoadedCheckpoint:
    """Convert an in-memory HF LXMERT state dict and its config dict (``config.to_dict()``).

    The returned tensors share memory with ``state`` (no copy is made).
    """
    loaded = _from_hf(state, hf_config, source)
    loaded.check()
    return loaded


def _from_hf(
    state: Mapping[str, Tensor], hf_config: Mapping[str, Any], source: str
) -> LoadedCheckpoint:
    config = config_from_hf(dict(hf_config), source)
    report = LoadReport(source, "hf")
    backbone, heads = _split(state, report, airsplay=False)
    return LoadedCheckpoint(CHECKPOINTS, "lxmert", config, backbone, heads,
                            answers_from_hf(hf_config), report)


def _load_hf(directory: Path) -> LoadedCheckpoint:
    return _from_hf(read_hf_weights(directory, UNDERSTOOD),
                    read_json(directory / CONFIG_FILE, UNDERSTOOD), str(directory))


def _load_airsplay(path: Path, num_attention_heads: int | None) -> LoadedCheckpoint:
    if path.is_dir():
        raise CheckpointError(f"{path}: a directory without {CONFIG_FILE}; {UNDERSTOOD}")
    state = read_state_dict(path)
    report = LoadReport(str(path), "airsplay")
    backbone, heads = _split(state, report, airsplay=True)
    config = infer_config(backbone, heads, num_attention_heads)
    report.notes.append(
        f"config inferred from tensor shapes ({config.num_attention_heads} attention heads"
        f"{'' if num_attention_heads else ', assumed hidden_size/64'})"
    )
    if not num_attention_heads and config.hidden_size != PUBLISHED_HIDDEN:
        # The file cannot tell the head count; a wrong one loads without error but computes
        # something else, so an unpublished width gets a warning in the report.
        report.notes.append(
            f"WARNING: hidden size {config.hidden_size} is not the published {PUBLISHED_HIDDEN}: "
            f"the {config.num_attention_heads} heads are a guess; pass the real count with "
            "--set model.num_attention_heads=N")
    answers = None
    label2ans = path.parent / LABEL2ANS_FILE
    if ("qa" in heads or "pretraining" in heads) and label2ans.is_file():
        answers = read_answers(label2ans, UNDERSTOOD)
        report.notes.append(f"answers from {label2ans}")
    return LoadedCheckpoint(CHECKPOINTS, "lxmert", config, backbone, heads, answers, report)


def _split(
    state: Mapping[str, Tensor], report: LoadReport, airsplay: bool
) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]]:
    """Sort checkpoint keys into backbone / pre-training / task-head states."""
    backbone: dict[str, Tensor] = {}
    pretrain: dict[str, Tensor] = {}
    logit_fc: dict[str, Tensor] = {}
    for raw_key, value in state.items():
        # DataParallel wraps modules in "module." (the released fine-tuning code saves
        # lxrt_encoder.model.module.bert.* from multi-GPU runs and strips it on load, as here).
        key = rename_layer_norm(raw_key.removeprefix("module.").replace(".module.", "."))
        for prefix in ("lxmert.", "bert.", "lxrt_encoder.model.bert."):
            if key.startswith(prefix) and key.removeprefix(prefix).startswith(_BACKBONE_ROOTS):
                key = key.removeprefix(prefix)
                break
        if key.startswith(_BACKBONE_ROOTS):
            backbone[key] = value
        elif key.startswith(_PRETRAIN_ROOTS):
            pretrain[key] = value
        elif key.startswith("logit_fc."):
            logit_fc[key] = value
        else:
            report.unexpected.append(raw_key)
    if not backbone:
        raise CheckpointError(
            f"{report.source}: no LXMERT backbone weights found (first keys: "
            f"{preview(list(state))}); {UNDERSTOOD}"
        )
    heads: dict[str, dict[str, Tensor]] = {}
    tied = pretrain.pop(_TIED_DECODER, None)
    if tied is not None and not torch.equal(tied, backbone.get("embeddings.word_embeddings.weight",
                                                                tied)):
        report.notes.append(f"{_TIED_DECODER} differs from the word embeddings; the tied "
                            "embeddings are used")
    only_answer = pretrain and all(k.startswith("answer_head.") for k in pretrain)
    if only_answer and not airsplay:  # LxmertForQuestionAnswering
        heads["qa"] = {k.removeprefix("answer_head."): v for k, v in pretrain.items()}
    elif pretrain:
        heads["pretraining"] = pretrain
    if logit_fc:
        first = logit_fc.get("logit_fc.0.weight")
        is_pair = first is not None and first.shape[0] == first.shape[1]  # 2h -> 2h: NLVR2
        heads["nlvr2" if is_pair else "qa"] = {k: v for k, v in logit_fc.items()}
    return backbone, heads


def infer_config(
    backbone: Mapping[str, Tensor],
    heads: Mapping[str, Mapping[str, Tensor]],
    num_attention_heads: int | None = None,
) -> LxmertConfig:
    """Config of a checkpoint that stores none, read off its tensor shapes."""

    def shape(key: str, where: Mapping[str, Tensor] = backbone) -> tuple[int, ...]:
        if key not in where:
            raise CheckpointError(f"checkpoint lacks '{key}'; cannot infer the model size")
        return tuple(where[key].shape)

    def depth(stack: str) -> int:
        found = {int(m.group(1)) for k in backbone if (m := re.match(rf"encoder\.{stack}\.(\d+)\.", k))}
        return max(found) + 1 if found else 0

    vocab, hidden = shape("embeddings.word_embeddings.weight")
    values: dict[str, Any] = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_attention_heads": num_attention_heads or max(1, hidden // 64),
        "max_position_embeddings": shape("embeddings.position_embeddings.weight")[0],
        "type_vocab_size": shape("embeddings.token_type_embeddings.weight")[0],
        "visual_feat_dim": shape("encoder.visn_fc.visn_fc.weight")[1],
        "visual_pos_dim": shape("encoder.visn_fc.box_fc.weight")[1],
        "l_layers": depth("layer"),
        "r_layers": depth("r_layers"),
        "x_layers": depth("x_layers"),
        "cross_attention": ("per_direction" if any(".lang_attention." in k for k in backbone)
                            else "shared"),
    }
    for key in ("encoder.layer.0.intermediate.dense.weight",
                "encoder.r_layers.0.intermediate.dense.weight",
                "encoder.x_layers.0.lang_inter.dense.weight"):
        if key in backbone:
            values["intermediate_size"] = shape(key)[0]
            break
    pre = heads.get("pretraining", {})
    for name, key in (("num_object_labels", "obj_predict_head.decoder_dict.obj.weight"),
                      ("num_attr_labels", "obj_predict_head.decoder_dict.attr.weight"),
                      ("num_qa_labels", "answer_head.logit_fc.3.weight")):
        if key in pre:
            values[name] = shape(key, pre)[0]
    values["preset"] = matching_preset(PRESETS, {**LxmertConfig().to_dict(), **values})
    try:
        return LxmertConfig.from_dict(values)
    except Exception as exc:
        raise CheckpointError(f"checkpoint shapes give an invalid config: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def _hf_parts(kind: str, head: nn.Module | None, config: LxmertConfig,
              answers: list[str] | None, say: Callable[[str], None] | None
              ) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """LXMERT's part of an HF export: the head's tensors (a QAHead as ``answer_head.*``,
    LxmertPretrainingHeads under their own names) and the config.json dict. HF's LXMERT
    holds every key of these heads, so there is nothing for ``say`` to name."""
    if kind == "qa":
        config = dataclasses.replace(config, num_qa_labels=head.num_answers)
        return ({f"answer_head.{k}": v for k, v in head.state_dict().items()},
                config_to_hf(config, kind, answers=answers))
    if kind == "pretraining":
        losses = tuple(head.obj_predict_head.decoder_dict) if head.obj_predict_head else ()
        return dict(head.state_dict()), config_to_hf(config, kind, losses,
                                                     head.answer_head is not None, answers)
    return {}, config_to_hf(config, kind, answers=answers)


# --------------------------------------------------------------------------------------------
# Utilities
# --------------------------------------------------------------------------------------------


def _resolve(p: Path) -> Path:
    # The original scripts take "snap/vqa/BEST" and append ".pth".
    if not p.exists() and p.with_name(p.name + ".pth").is_file():
        return p.with_name(p.name + ".pth")
    return p


# --------------------------------------------------------------------------------------------
# The family: what the shared conversion needs, and the public functions it serves
# --------------------------------------------------------------------------------------------


CHECKPOINTS = CheckpointFamily(
    spec=SPEC,
    pretraining_class=LxmertPretrainingHeads,
    head_types=HEAD_TYPES,
    hf=HF_CONFIG,
    hf_prefix="lxmert.",
    hf_parts=_hf_parts,
    understood=UNDERSTOOD,
)


#: Write a directory that ``transformers.<hf_config.ARCHITECTURES[kind]>.from_pretrained``
#: loads: ``export_hf(backbone, heads, out_dir, kind="model", answers=None, say=None)``; kind
#: "qa" needs ``heads["qa"]`` (a QAHead), "pretraining" ``heads["pretraining"]``
#: (LxmertPretrainingHeads).
export_hf = CHECKPOINTS.export_hf


#: Write a checkpoint in vlbench's layout (``vlbench.engine.layout``); see
#: :meth:`CheckpointFamily.save_native`.
save_native = CHECKPOINTS.save_native
