"""Everything one run needs, built from the command line or from an existing run directory.

A session ties together the resolved config, the data source, the task plugin, the
tokenizer, the feature store and the task model. ``new_session`` starts a run;
``open_session`` re-opens one (to resume it or evaluate it) exactly as it was built.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlbench.config import RunConfig, build_config, config_from_dict
from vlbench.data.jsonio import read_json
from vlbench.data.source import DataSource, cache_root, resolve_data
from vlbench.data.tokenizer import WordPieceTokenizer, build_tokenizer
from vlbench.engine.task import Task, default_layers
from vlbench.errors import ConfigError, DataError
from vlbench.registry import MODELS, TASKS

Say = Callable[[str], None]


@dataclass
class Session:
    run_dir: Path
    model_name: str
    task_name: str
    seed: int
    cfg: RunConfig
    data: DataSource
    task: Task
    tokenizer: WordPieceTokenizer
    features: Any
    model: nn.Module
    device: torch.device
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def variant(self) -> str:
        return str(getattr(self.cfg.model, "variant", "") or self.model_name)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def pick_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise ConfigError(f"train.device={spec!r}: {exc}; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={spec!r} but no CUDA device is available; use --set train.device=cpu")
    return device


def new_run_id(task: str, model: str, seed: int) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{task}-{model}-s{seed}-{stamp}-{os.urandom(2).hex()}"  # urandom: leaves seeded RNGs alone


def new_session(model: str, task: str, *, data_dir: str | None = None, seed: int = 0,
                out: str | Path = "runs", overrides: dict[str, str] | None = None,
                say: Say = print) -> Session:
    """Resolve config and data, build tokenizer, features and model for a new run."""
    model_cls, task_cls = MODELS.get(model), TASKS.get(task)
    overrides = dict(overrides or {})
    build_config(model_cls.config_class, task_cls.config_class(), [("--set", overrides)])  # fail fast
    data = resolve_data(data_dir, say=say)
    layers = [*default_layers(task_cls, data), ("--set", overrides)]
    cfg = build_config(model_cls.config_class, task_cls.config_class(), layers)
    cfg.data.source = data.label
    seed_everything(seed, cfg.train.deterministic)
    task_obj = task_cls(cfg.task, data)
    tokenizer = build_tokenizer(cfg.data.vocab, task_obj.training_texts(), cfg.data.vocab_size,
                                cfg.data.max_seq_len)
    features = open_features(data, cfg)
    fit_model_to_data(cfg, tokenizer, features, explicit=overrides)
    task_obj.setup(tokenizer, features, max_boxes=cfg.data.max_boxes)
    check_images(task_obj, features)
    seed_everything(seed, cfg.train.deterministic)
    model_obj = task_obj.build_model(model_cls(cfg.model))
    run_dir = Path(out) / new_run_id(task, model, seed)
    run_dir.mkdir(parents=True)
    tokenizer.save(run_dir / "tokenizer.json")
    from vlbench.results.records import write_json_atomic

    write_json_atomic(run_dir / "task_state.json", task_obj.state())
    return Session(run_dir, model, task, seed, cfg, data, task_obj, tokenizer, features, model_obj,
                   pick_device(cfg.train.device))


def open_session(run_dir: str | Path, *, data_dir: str | None = None, say: Say = print) -> Session:
    """Rebuild a run's session from its ``run.json`` (config, tokenizer and label space as saved)."""
    run_dir = Path(run_dir)
    record = read_json(run_dir / "run.json")
    model_cls, task_cls = MODELS.get(record["model"]), TASKS.get(record["task"])
    cfg = config_from_dict(model_cls.config_class, task_cls.config_class, record["config"])
    source = data_dir if data_dir is not None else (None if record["data"]["source"] == "synthetic"
                                                    else record["data"]["source"])
    data = resolve_data(source, say=say)
    task_obj = task_cls(cfg.task, data)
    tokenizer = WordPieceTokenizer.load(run_dir / "tokenizer.json", cfg.data.max_seq_len)
    features = open_features(data, cfg)
    if features.feat_dim != cfg.model.visual_feat_dim:
        raise DataError(
            f"features in {data.root} are {features.feat_dim}-d but run {run_dir} was trained on "
            f"{cfg.model.visual_feat_dim}-d; point --data at the data it was trained on"
        )
    task_obj.setup(tokenizer, features, max_boxes=cfg.data.max_boxes,
                   state=read_json(run_dir / "task_state.json"))
    model_obj = task_obj.build_model(model_cls(cfg.model))
    return Session(run_dir, record["model"], record["task"], int(record["seed"]), cfg, data, task_obj,
                   tokenizer, features, model_obj, pick_device(cfg.train.device), {"record": record})


def open_features(data: DataSource, cfg: RunConfig) -> Any:
    from vlbench.data.features import FeatureStore

    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else cache_root() / "features"
    return FeatureStore.open(data.feature_files(cfg.data.features), cache)


def fit_model_to_data(cfg: RunConfig, tokenizer: WordPieceTokenizer, features: Any,
                      explicit: dict[str, str]) -> None:
    """Give the model the tokenizer's vocabulary size and the features' dimension."""
    if "model.visual_feat_dim" in explicit and cfg.model.visual_feat_dim != features.feat_dim:
        raise DataError(
            f"--set model.visual_feat_dim={cfg.model.visual_feat_dim} but the feature files hold "
            f"{features.feat_dim}-d regions; drop the override or use matching features"
        )
    cfg.model.visual_feat_dim = features.feat_dim
    if "model.vocab_size" in explicit and cfg.model.vocab_size < tokenizer.vocab_size:
        raise ConfigError(
            f"--set model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's "
            f"{tokenizer.vocab_size} tokens; drop the override"
        )
    cfg.model.vocab_size = max(cfg.model.vocab_size if "model.vocab_size" in explicit else 0,
                               tokenizer.vocab_size)


def check_images(task: Task, features: Any) -> None:
    """Every image a split mentions must be in the feature store: fail before training, not mid-way."""
    missing = sorted(i for i in task.image_ids() if i not in features)
    if missing:
        raise DataError(
            f"{len(missing)} image id(s) used by the questions are not in the feature files "
            f"(e.g. {', '.join(missing[:3])}); add their regions or point data.features at the right TSV"
        )
