"""Start a run from a pre-trained checkpoint: backbone weights, vocabulary, the task's heads.

``vlbench train --init RUN_OR_CHECKPOINT`` calls :func:`apply_init` once the new session is
built. The checkpoint (any layout :func:`~vlbench.engine.layout.read_checkpoint` reads) must
be of the run's model family. Its backbone replaces the fresh one; its architecture (the
family spec's ``architecture_keys``) and its WordPiece vocabulary (``tokenizer.json`` of its
run) are adopted, since token ids must mean the same words. The task then takes what it can
from the checkpoint's heads (``Task.init_from``: a QA task copies the answer rows both answer
tables share). The returned lineage goes into the new run's ``run.json`` (``init``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vlbench.engine.layout import BACKBONE, CONFIG_FILE, WEIGHTS_FILE, read_checkpoint
from vlbench.engine.session import Session, seed_everything
from vlbench.errors import CheckpointError

Say = Callable[[str], None]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def apply_init(session: Session, path: str | Path, say: Say = print) -> dict[str, Any]:
    """Initialise ``session.model`` from the checkpoint at ``path``; returns the lineage."""
    where = Path(path).expanduser()
    if not where.exists():
        raise CheckpointError(f"--init {path}: no such run or checkpoint directory")
    source = read_checkpoint(where)
    if source.family != session.entry.family:
        raise CheckpointError(f"--init {path}: the checkpoint is a '{source.family}' model, this run "
                              f"trains '{session.model_name}' ({session.entry.family}); use a "
                              f"--model of the {source.family} family")
    backbone, _, _ = source.split()
    if not backbone:
        raise CheckpointError(f"{source.path / WEIGHTS_FILE}: no '{BACKBONE}*' tensors; "
                              "not a vlbench checkpoint")
    run_dir = source.run_dir
    adopted = adopt_architecture(session, source.model_config, source.path / CONFIG_FILE)
    tokenizer_note = adopt_tokenizer(session, run_dir, source.model_config,
                                     source.path / CONFIG_FILE, say)
    if adopted or tokenizer_note == "adopted":
        # Rebuild with the checkpoint's shapes, from the run's seed as a fresh model would be.
        seed_everything(session.seed, session.cfg.train.deterministic)
        session.model = session.build_model()
    fit = session.entry.spec.fit_checkpoint
    if fit is not None:
        backbone = fit(backbone, session.cfg.model)
    load_backbone(session.model, backbone, source.path / WEIGHTS_FILE)
    say(f"Initialised the backbone from {source.path} ({len(backbone)} tensors)")

    task_cfg = source.config.get("task", {}) or {}
    objectives = list(task_cfg.get("objectives", [])) if source.task == "pretrain" else []
    return {
        "run": str(run_dir) if run_dir else None,
        "run_id": _run_id(run_dir),
        "checkpoint": str(source.path),
        "checkpoint_sha256": file_sha256(source.path / WEIGHTS_FILE),
        "task": source.task or "",
        "objectives": objectives,
        "visual_losses": (list(task_cfg.get("visual_losses", [])) if "mask_obj" in objectives else []),
        **session.task.init_from(session.model, source, say),
        "tokenizer": tokenizer_note,
        "model_config_adopted": adopted,
    }


def adopt_architecture(session: Session, source: dict[str, Any], where: Path) -> list[str]:
    """Take the checkpoint's shape-defining model keys; returns the keys that changed."""
    cfg = session.cfg.model
    names = {f.name for f in dataclasses.fields(cfg)}
    keys = session.entry.spec.architecture_keys
    src_dim, own_dim = source.get("visual_feat_dim"), getattr(cfg, "visual_feat_dim", None)
    if src_dim is not None and own_dim is not None and int(src_dim) != int(own_dim):
        raise CheckpointError(f"{where}: the checkpoint reads {src_dim}-d region features, this run's "
                              f"features are {own_dim}-d; fine-tune on features from the same detector")
    changed = [k for k in keys
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
            raise CheckpointError(f"{where}: '{BACKBONE}{k}' is {tuple(v.shape)} in the checkpoint "
                                  f"but {tuple(own[k].shape)} in this model; fine-tune with the checkpoint's config")
    missing, _ = backbone.load_state_dict(tensors, strict=False)
    if missing:
        raise CheckpointError(f"{where}: checkpoint lacks backbone weights {missing[:3]} "
                              f"(of {len(missing)}); is it a checkpoint of the same model?")


def _run_id(run_dir: Path | None) -> str | None:
    if run_dir is None:
        return None
    try:
        return json.loads((run_dir / "run.json").read_text()).get("run_id")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
