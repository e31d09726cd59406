"""``vlbench.load_model``: a backbone from a run, a vlbench checkpoint, or a converted format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlbench.engine.backbone import family_spec, model_config_from_dict
from vlbench.engine.layout import CONFIG_FILE, StoredCheckpoint, is_checkpoint, read_checkpoint
from vlbench.errors import CheckpointError, ConfigError
from vlbench.registry import CHECKPOINT_FORMATS


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory stands for its best checkpoint."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if (path / "run.json").is_file():
        return path / "checkpoints" / "best"
    return path


def build_backbone(stored: StoredCheckpoint) -> tuple[nn.Module, dict[str, Any]]:
    """The backbone of a checkpoint in vlbench's layout, its weights loaded.

    The model is first built on the meta device (no memory) and checked against the file's
    tensors, so a config that does not fit its weights fails before anything is allocated.
    """
    where = str(stored.path / CONFIG_FILE)
    try:
        spec = family_spec(stored.family)
        config = model_config_from_dict(spec, stored.model_config, where)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    state, _, _ = stored.split()
    with torch.device("meta"):
        own = spec.build(config).state_dict()
    for k, v in state.items():
        if k in own and own[k].shape != v.shape:
            raise CheckpointError(f"{stored.path}: '{k}' is {tuple(v.shape)} in the checkpoint, "
                                  f"{tuple(own[k].shape)} in a {stored.family} built from its config")
    missing = [k for k in own if k not in state]
    if missing:
        raise CheckpointError(f"{stored.path}: checkpoint lacks backbone weights {missing[:3]} "
                              f"(of {len(missing)})")
    backbone = spec.build(config)
    _, unexpected = backbone.load_state_dict(state, strict=False)
    return backbone, {"format": "vlbench", "family": stored.family, "missing": [],
                      "unexpected": list(unexpected)}


#: what a published checkpoint without a config may be told (``--set model.KEY=VALUE``)
READER_OPTIONS = {"model.num_attention_heads": "num_attention_heads"}


def reader_options(overrides: dict[str, str] | None) -> dict[str, Any]:
    """``--set`` overrides a checkpoint reader takes, as its keyword arguments (ConfigError for
    others: a checkpoint's architecture comes from its config or its tensor shapes)."""
    out: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if key not in READER_OPTIONS:
            raise ConfigError(f"--set {key}: a checkpoint read takes only "
                              f"{', '.join(READER_OPTIONS)} (files that store no config)")
        try:
            out[READER_OPTIONS[key]] = int(value)
        except ValueError:
            raise ConfigError(f"--set {key}={value}: expects a whole number") from None
    return out


def load_backbone(path: str | Path, *, fmt: str = "auto", say: Any = None,
                  overrides: dict[str, str] | None = None) -> nn.Module:
    """Load a backbone in eval mode; ``fmt`` is ``auto`` or a registered checkpoint format;
    ``overrides`` tell a config-less published file what its shapes cannot (see
    :data:`READER_OPTIONS`)."""
    options = reader_options(overrides)
    ckpt = resolve_checkpoint(path)
    if fmt in ("auto", "vlbench") and ckpt.is_dir() and is_checkpoint(ckpt):
        if options:
            raise ConfigError(f"{ckpt}: a vlbench checkpoint stores its config; drop --set")
        backbone, report = build_backbone(read_checkpoint(ckpt))
    else:
        readers = [e.obj for e in CHECKPOINT_FORMATS
                   if fmt == "auto" or fmt in getattr(e.obj, "formats", ())]
        reader = next((r for r in readers if r.detect(ckpt)), readers[0] if fmt != "auto" and readers
                      else None)
        if reader is None:
            raise CheckpointError(
                f"{ckpt}: not a checkpoint format vlbench understands (a vlbench run or checkpoint "
                f"directory, or one read by: {', '.join(CHECKPOINT_FORMATS.names())})"
            )
        backbone, report = reader.load_backbone(ckpt, fmt, **options)
    if say is not None:
        say(f"Loaded {ckpt} as {report['format']} checkpoint")
    with torch.no_grad():
        backbone.eval()
    return backbone
