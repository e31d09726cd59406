"""``vlbench.load_model``: a backbone from a run, a vlbench checkpoint, or a converted format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from vlbench.config import from_values
from vlbench.errors import CheckpointError
from vlbench.registry import CHECKPOINT_FORMATS, MODELS

BACKBONE_PREFIX = "backbone."


def is_native_checkpoint(path: Path) -> bool:
    cfg = path / "config.json"
    if not (cfg.is_file() and (path / "model.safetensors").is_file()):
        return False
    try:
        meta = json.loads(cfg.read_text())
    except json.JSONDecodeError:
        return False
    return isinstance(meta, dict) and isinstance(meta.get("model"), str) and "config" in meta


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory stands for its best checkpoint."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if (path / "run.json").is_file():
        return path / "checkpoints" / "best"
    return path


def load_native(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Backbone of a vlbench checkpoint (weights stored as ``backbone.*`` inside the task model)."""
    meta = json.loads((path / "config.json").read_text())
    model_cls = MODELS.get(meta["model"])
    cfg = meta.get("config", {})
    # Training checkpoints hold the whole run config (sections); converted ones the model's alone.
    model_cfg = cfg["model"] if isinstance(cfg.get("model"), dict) else cfg
    cfg = from_values(model_cls.config_class, model_cfg, "model", where=str(path / "config.json"))
    backbone = model_cls(cfg)
    state = load_file(str(path / "model.safetensors"))
    if any(k.startswith(BACKBONE_PREFIX) for k in state):
        state = {k[len(BACKBONE_PREFIX):]: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}
    own = backbone.state_dict()
    for k, v in state.items():
        if k in own and own[k].shape != v.shape:
            raise CheckpointError(f"{path}: '{k}' is {tuple(v.shape)} in the checkpoint, "
                                  f"{tuple(own[k].shape)} in a {meta['model']} built from its config")
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks backbone weights {missing[:3]} (of {len(missing)})")
    return backbone, {"format": "vlbench", "missing": list(missing), "unexpected": list(unexpected)}


def load_backbone(path: str | Path, *, fmt: str = "auto", say: Any = None) -> nn.Module:
    """Load a backbone in eval mode; ``fmt`` is ``auto`` or a registered checkpoint format."""
    ckpt = resolve_checkpoint(path)
    if fmt in ("auto", "vlbench") and ckpt.is_dir() and is_native_checkpoint(ckpt):
        backbone, report = load_native(ckpt)
    else:
        for entry in CHECKPOINT_FORMATS:
            reader = entry.obj
            if fmt in getattr(reader, "formats", ()) or (fmt == "auto" and reader.detect(ckpt)):
                backbone, report = reader.load_backbone(ckpt, fmt)
                break
        else:
            raise CheckpointError(
                f"{ckpt}: not a checkpoint format vlbench understands (a vlbench run or checkpoint "
                f"directory, or one read by: {', '.join(CHECKPOINT_FORMATS.names())})"
            )
    if say is not None:
        say(f"Loaded {ckpt} as {report['format']} checkpoint")
    with torch.no_grad():
        backbone.eval()
    return backbone
