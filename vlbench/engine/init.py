"""Start a run from a pre-trained checkpoint: backbone weights, vocabulary, QA-head rows.

``vlbench train --init RUN_OR_CHECKPOINT`` calls :func:`apply_init` once the new session is
built. The checkpoint's backbone (the ``backbone.*`` tensors of the task model it stores)
replaces the fresh one; its architecture and its WordPiece vocabulary (``tokenizer.json`` of
its run) are adopted, since token ids must mean the same words. For QA tasks the rows of
the checkpoint's answer head are copied for every answer the two answer tables share after
LXMERT's normalisation (``load_lxmert_qa`` in the released code: the rest start at zero);
the copied biases of a softmax-trained pre-training head are then shifted so that the sigmoid
loss of fine-tuning starts calibrated (:func:`recenter_answer_logits`). The returned lineage goes into the new run's ``run.json`` (``init``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from vlbench.engine.session import Session, seed_everything
from vlbench.errors import CheckpointError
from vlbench.registry import MODELS

BACKBONE_PREFIX = "backbone."
#: where a task model keeps its QA head (pre-training model, fine-tuned QA model)
ANSWER_HEAD_PREFIXES = ("heads.answer_head.", "answer_head.")
#: model config keys that fix tensor shapes: a fine-tune takes them from the checkpoint
ARCHITECTURE_KEYS = ("hidden_size", "num_attention_heads", "intermediate_size", "l_layers",
                     "r_layers", "x_layers", "visual_pos_dim", "max_position_embeddings",
                     "type_vocab_size")

Say = Callable[[str], None]


def locate(path: str | Path) -> tuple[Path, Path | None]:
    """``(checkpoint directory, run directory or None)`` for a run or a checkpoint path."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"--init {path}: no such run or checkpoint directory")
    if (path / "run.json").is_file():
        return path / "checkpoints" / "best", path
    if path.is_file() and path.name == "model.safetensors":
        path = path.parent
    run_dir = path.parent.parent
    return path, run_dir if (run_dir / "run.json").is_file() else None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def apply_init(session: Session, path: str | Path, say: Say = print) -> dict[str, Any]:
    """Initialise ``session.model`` from the checkpoint at ``path``; returns the lineage."""
    ckpt, run_dir = locate(path)
    weights, meta_path = ckpt / "model.safetensors", ckpt / "config.json"
    if not weights.is_file() or not meta_path.is_file():
        raise CheckpointError(f"--init {path}: {ckpt} has no model.safetensors + config.json; "
                              "point it at a vlbench run directory or a checkpoint inside one")
    try:
        meta = json.loads(meta_path.read_text())
        source_model = meta["model"]
        source_cfg = meta["config"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise CheckpointError(f"{meta_path}: not a vlbench checkpoint config (keys model, config)") from None
    if source_model != session.model_name:
        raise CheckpointError(f"--init {path}: the checkpoint is a '{source_model}' model, this run "
                              f"trains '{session.model_name}'; use --model {source_model}")
    state = load_file(str(weights))
    backbone = {k[len(BACKBONE_PREFIX):]: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}
    if not backbone:
        raise CheckpointError(f"{weights}: no '{BACKBONE_PREFIX}*' tensors; not a vlbench task checkpoint")

    adopted = adopt_architecture(session, source_cfg.get("model", {}), meta_path)
    tokenizer_note = adopt_tokenizer(session, run_dir, source_cfg.get("model", {}), meta_path, say)
    if adopted or tokenizer_note == "adopted":
        # Rebuild with the checkpoint's shapes, from the run's seed as a fresh model would be.
        seed_everything(session.seed, session.cfg.train.deterministic)
        session.model = session.task.build_model(MODELS.get(session.model_name)(session.cfg.model))
    load_backbone(session.model, backbone, weights)
    say(f"Initialised the backbone from {ckpt} ({len(backbone)} tensors)")

    source_task = str(meta.get("task", ""))
    task_cfg = source_cfg.get("task", {}) or {}
    # The pre-training QA head is a softmax (CE); a fine-tuned QA head is already sigmoid (BCE).
    answers = transfer_answers(session, state, run_dir, say, recenter=source_task == "pretrain")
    return {
        "run": str(run_dir) if run_dir else None,
        "run_id": _run_id(run_dir),
        "checkpoint": str(ckpt),
        "checkpoint_sha256": file_sha256(weights),
        "task": source_task,
        "objectives": list(task_cfg.get("objectives", [])) if source_task == "pretrain" else [],
        "visual_losses": (list(task_cfg.get("visual_losses", []))
                          if "mask_obj" in task_cfg.get("objectives", []) else []),
        **answers,
        "tokenizer": tokenizer_note,
        "model_config_adopted": adopted,
    }


def adopt_architecture(session: Session, source: dict[str, Any], where: Path) -> list[str]:
    """Take the checkpoint's shape-defining model keys; returns the keys that changed."""
    cfg = session.cfg.model
    names = {f.name for f in dataclasses.fields(cfg)}
    src_dim, own_dim = source.get("visual_feat_dim"), getattr(cfg, "visual_feat_dim", None)
    if src_dim is not None and own_dim is not None and int(src_dim) != int(own_dim):
        raise CheckpointError(f"{where}: the checkpoint reads {src_dim}-d region features, this run's "
                              f"features are {own_dim}-d; fine-tune on features from the same detector")
    changed = [k for k in ARCHITECTURE_KEYS
               if k in names and k in source and source[k] != getattr(cfg, k)]
    for k in changed:
        setattr(cfg, k, source[k])
    if changed and "preset" in names and "preset" in source:
        cfg.preset = source["preset"]
    return changed


def adopt_tokenizer(session: Session, run_dir: Path | None, source: dict[str, Any], where: Path,
                    say: Say) -> str:
    """Use the pre-training run's vocabulary: ``"same"``, ``"adopted"`` or ``"unchecked"``."""
    from vlbench.data.tokenizer import WordPieceTokenizer

    source_vocab = int(source.get("vocab_size", session.cfg.model.vocab_size))
    path = run_dir / "tokenizer.json" if run_dir else None
    if path is None or not path.is_file():
        if source_vocab != session.cfg.model.vocab_size:
            raise CheckpointError(
                f"{where}: the checkpoint has {source_vocab} word embeddings, this run's vocabulary "
                f"{session.cfg.model.vocab_size}, and no tokenizer.json lies beside it; pass the run "
                "directory to --init or --set data.vocab=<the vocab.txt it was trained with>")
        say("No tokenizer.json beside the checkpoint: assuming it was trained with this vocabulary")
        return "unchecked"
    tokenizer = WordPieceTokenizer.load(path, session.cfg.data.max_seq_len)
    if tokenizer.tokenizer.get_vocab() == session.tokenizer.tokenizer.get_vocab():
        return "same"
    session.tokenizer = tokenizer
    if hasattr(session.task, "tokenizer"):
        session.task.tokenizer = tokenizer
    tokenizer.save(session.run_dir / "tokenizer.json")
    session.cfg.model.vocab_size = max(source_vocab, tokenizer.vocab_size)
    say(f"Using the pre-training vocabulary of {run_dir} ({tokenizer.vocab_size} word pieces)")
    return "adopted"


def load_backbone(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where: Path) -> None:
    """Copy ``tensors`` into ``model.backbone``; every backbone weight must be present."""
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise CheckpointError(f"{where}: this task's model has no .backbone to initialise")
    own = backbone.state_dict()
    for k, v in tensors.items():
        if k in own and own[k].shape != v.shape:
            raise CheckpointError(f"{where}: '{BACKBONE_PREFIX}{k}' is {tuple(v.shape)} in the checkpoint "
                                  f"but {tuple(own[k].shape)} in this model; fine-tune with the checkpoint's config")
    missing, _ = backbone.load_state_dict(tensors, strict=False)
    if missing:
        raise CheckpointError(f"{where}: checkpoint lacks backbone weights {missing[:3]} "
                              f"(of {len(missing)}); is it a checkpoint of the same model?")


def transfer_answers(session: Session, state: dict[str, torch.Tensor], run_dir: Path | None,
                     say: Say, recenter: bool = True) -> dict[str, Any]:
    """Copy QA-head rows for answers shared after normalisation.

    Returns ``answers_transferred``, ``answers_total`` (the task's answers) and
    ``answer_bias_shift`` (see :func:`recenter_answer_logits`).
    """
    from vlbench.tasks.pretrain.objectives import normalize_answer
    from vlbench.tasks.qa import QATask

    task, model = session.task, session.model
    if not isinstance(task, QATask) or not hasattr(model, "answer_head"):
        return {"answers_transferred": 0, "answers_total": 0, "answer_bias_shift": 0.0}
    total = len(task.answers)
    none = {"answers_transferred": 0, "answers_total": total, "answer_bias_shift": 0.0}
    prefix = next((p for p in ANSWER_HEAD_PREFIXES if f"{p}logit_fc.3.weight" in state), None)
    source_answers = _source_answers(run_dir)
    if prefix is None or not source_answers:
        say("The checkpoint has no QA head with an answer table: the answer head starts fresh")
        return none
    head = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if head["logit_fc.3.weight"].shape[0] != len(source_answers):
        raise CheckpointError(f"{run_dir}: task_state.json lists {len(source_answers)} answers but the "
                              f"QA head has {head['logit_fc.3.weight'].shape[0]} rows")
    index: dict[str, int] = {}
    for i, a in enumerate(source_answers):
        index.setdefault(normalize_answer(a), i)
    rows = [(j, index.get(normalize_answer(a))) for j, a in enumerate(task.answers)]
    shared = [(j, i) for j, i in rows if i is not None]
    if not shared:
        say(f"Transferred 0 of {total} answers: no answer is shared with the pre-training answer table")
        return none
    own = model.answer_head.state_dict()
    for k in ("logit_fc.0.weight", "logit_fc.0.bias", "logit_fc.2.weight", "logit_fc.2.bias"):
        if own[k].shape != head[k].shape:
            raise CheckpointError(f"{run_dir}: answer head '{k}' is {tuple(head[k].shape)}, this model's "
                                  f"{tuple(own[k].shape)}")
        own[k] = head[k].clone()
    weight = torch.zeros_like(own["logit_fc.3.weight"])
    bias = torch.zeros_like(own["logit_fc.3.bias"])
    dst = torch.tensor([j for j, _ in shared])
    src = torch.tensor([i for _, i in shared])
    weight[dst] = head["logit_fc.3.weight"][src]
    bias[dst] = head["logit_fc.3.bias"][src]
    own["logit_fc.3.weight"], own["logit_fc.3.bias"] = weight, bias
    model.answer_head.load_state_dict(own)
    shift = recenter_answer_logits(session, dst) if recenter else 0.0
    say(f"Transferred {len(shared)} of {total} answers from the pre-trained QA head"
        + (f" (biases shifted by {-shift:.2f} for the sigmoid loss)" if recenter else ""))
    return {"answers_transferred": len(shared), "answers_total": total, "answer_bias_shift": -shift}


def recenter_answer_logits(session: Session, rows: torch.Tensor, n_examples: int = 256) -> float:
    """Shift the transferred answer biases by the mean log-partition of their logits.

    Pre-training trains the QA head with a softmax over the answer table; fine-tuning uses
    LXMERT's sigmoid BCE over answers. Raw softmax logits read as sigmoid scores say "yes" to
    many answers at once, and the first fine-tuning steps are spent pulling them all down,
    which on a small fine-tuning set erases what pre-training learned. Subtracting
    ``E_x[logsumexp_j z_j(x)]`` turns the logits into (approximately) log-probabilities, so the
    sigmoid scores start near the softmax probabilities. Returns the shift applied.
    """
    task, model = session.task, session.model
    examples = task.examples(task.train_split)[:n_examples]
    if not examples or len(rows) == 0:
        return 0.0
    was_training = model.training
    model.eval()
    parts = []
    with torch.no_grad():
        for i in range(0, len(examples), 64):
            logits = model(task.collate(examples[i:i + 64])).float()
            parts.append(torch.logsumexp(logits[:, rows], dim=-1))
    model.train(was_training)
    shift = float(torch.cat(parts).mean())
    with torch.no_grad():
        model.answer_head.logit_fc[3].bias[rows] -= shift
    return shift


def _source_answers(run_dir: Path | None) -> list[str]:
    path = run_dir / "task_state.json" if run_dir else None
    if path is None or not path.is_file():
        return []
    try:
        answers = json.loads(path.read_text()).get("answers", [])
    except (json.JSONDecodeError, AttributeError):
        raise CheckpointError(f"{path}: unreadable task state; is the run complete?") from None
    return [str(a) for a in answers]


def _run_id(run_dir: Path | None) -> str | None:
    if run_dir is None:
        return None
    try:
        return json.loads((run_dir / "run.json").read_text()).get("run_id")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
