"""Everything one run needs, built from the command line or from an existing run directory.

A session ties together the resolved config, the data source, the task plugin, the
tokenizer, the feature store and the task model. ``new_session`` starts a run;
``open_session`` re-opens one (to resume it or evaluate it) exactly as it was built.
"""

from __future__ import annotations

import dataclasses
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
from vlbench.data.check import preflight
from vlbench.data.features import FeatureStore, NoRegions
from vlbench.data.jsonio import read_json
from vlbench.data.source import DataSource, cache_root, resolve_data
from vlbench.data.tokenizer import WordPieceTokenizer, build_tokenizer
from vlbench.engine.backbone import REGION_INPUTS, DataFacts, ModelEntry, model_entry
from vlbench.engine.reuse import inputs_key
from vlbench.engine.task import Task, default_layers
from vlbench.errors import ConfigError, DataError
from vlbench.registry import TASKS

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

    @property
    def entry(self) -> ModelEntry:
        return model_entry(self.model_name)

    def build_model(self) -> nn.Module:
        """A fresh task model (backbone from the family spec, head from the task)."""
        spec = self.entry.spec
        return self.task.build_model(spec.build(self.cfg.model), spec)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS repeats its reduction order only with a fixed workspace; it reads this when it
        # starts, which is after the seed is set (no model is on the GPU yet)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
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


def resolve_config(model: str, task: str, data: DataSource | None,
                   overrides: dict[str, str], synthetic: bool = False) -> RunConfig:
    """The layered config of a run (see ``vlbench.config``), validated after every layer:
    task defaults < data-source defaults < the model's own (family recipe on synthetic
    worlds, pinned preset) < the task's synthetic defaults < ``--set``. With ``data`` None
    only the model's (for a ``synthetic`` world or not) and ``--set`` layers apply: a quick
    check before the data is read."""
    entry, task_cls = model_entry(model), TASKS.get(task)
    synthetic = data.synthetic if data is not None else synthetic
    model_layer = ("model defaults", entry.overrides(synthetic=synthetic))
    if data is None:
        layers = [model_layer, ("--set", overrides)]
    else:
        task_layers = default_layers(task_cls, data)
        synthetic_task = [lay for lay in task_layers if lay[0] == "task synthetic defaults"]
        layers = [*[lay for lay in task_layers if lay[0] != "task synthetic defaults"],
                  model_layer, *synthetic_task, ("--set", overrides)]
    return build_config(entry.spec.config_class, task_cls.config_class(), layers)


def new_session(model: str, task: str, *, data_dir: str | None = None, seed: int = 0,
                out: str | Path = "runs", overrides: dict[str, str] | None = None,
                say: Say = print) -> Session:
    """Resolve config and data, build tokenizer, features and model for a new run."""
    entry, task_cls = model_entry(model), TASKS.get(task)
    overrides = dict(overrides or {})
    resolve_config(model, task, None, overrides, synthetic=data_dir is None)  # fail fast
    entry.spec.require(task_cls.requires, f"task '{task}'")
    data = resolve_data(data_dir, say=say)
    cfg = resolve_config(model, task, data, overrides)
    cfg.data.source = data.label
    task_obj = task_cls(cfg.task, data)
    identity = cfg.identity()  # as resolved, before the data fits the model config
    seed_everything(seed, cfg.train.deterministic)
    regions = reads_regions(entry, task_obj, task)
    # every reader and the feature audit: fail in seconds
    preflight(task_obj, data, cfg, say=say, regions=regions)
    check_splits(cfg, task_obj)
    tokenizer = build_tokenizer(cfg.data.vocab, task_obj.training_texts(), cfg.data.vocab_size,
                                cfg.data.max_seq_len)
    features = open_features(data, cfg) if regions else NoRegions()
    facts = DataFacts(tokenizer.vocab_size, features.feat_dim, task_obj.images_per_example)
    entry.spec.fit_to_data(cfg.model, facts, overrides)
    cfg.model.validate()
    task_obj.setup(tokenizer, features, max_boxes=cfg.data.max_boxes)
    if regions:  # a pixel model's images are checked as its batcher is made
        check_images(task_obj, features)
    seed_everything(seed, cfg.train.deterministic)
    model_obj = task_obj.build_model(entry.spec.build(cfg.model), entry.spec)
    # keyed by the feature store and images this session opened (planned_read finds the same)
    read = inputs_read(cfg, features if regions else None, task_obj.data_record())
    inputs = inputs_key(model, task, seed, identity, data, read)
    run_dir = Path(out) / new_run_id(task, model, seed)
    run_dir.mkdir(parents=True)
    tokenizer.save(run_dir / "tokenizer.json")
    from vlbench.results.records import write_json_atomic

    write_json_atomic(run_dir / "task_state.json", task_obj.state())
    return Session(run_dir, model, task, seed, cfg, data, task_obj, tokenizer, features, model_obj,
                   pick_device(cfg.train.device), {"inputs": inputs})


def planned_inputs(model: str, task: str, *, data_dir: str | None, seed: int,
                   overrides: dict[str, str], say: Say = print) -> dict[str, Any]:
    """The ``inputs`` (and key) a new run with these arguments will have, without starting it."""
    data = resolve_data(data_dir, say=say)
    cfg = resolve_config(model, task, data, dict(overrides))
    cfg.data.source = data.label
    read = planned_read(model_entry(model), TASKS.get(task)(cfg.task, data), cfg, task)
    return inputs_key(model, task, seed, cfg.identity(), data, read)


def planned_read(entry: ModelEntry, task: Task, cfg: RunConfig, name: str) -> dict[str, str]:
    """:func:`inputs_read` of a run not started yet: its feature TSVs opened and its images
    found as the run will. ``name`` is the task's, for refusals."""
    named = cfg.data.features and reads_regions(entry, task, name)
    return inputs_read(cfg, open_features(task.data, cfg) if named else None,
                       task.input_record(entry.spec, cfg.model))


def inputs_read(cfg: RunConfig, features: Any, record: dict[str, Any]) -> dict[str, str]:
    """Fingerprints of what a run reads beyond its data directory's own files, for its reuse
    key: the feature TSVs ``data.features`` names (``features``, the store opened from them,
    None when the run reads pixels; re-extracting into the same path makes another run) and
    the images a pixel backbone reads (``record``, the task's data record). Empty for a run on
    the data directory's region features."""
    read = {}
    if cfg.data.features and features is not None:
        read["features"] = features.fingerprint
    images = record.get("images")
    if images:
        read["images"] = images["fingerprint"]
    return read


def open_session(run_dir: str | Path, *, data_dir: str | None = None, say: Say = print) -> Session:
    """Rebuild a run's session from its ``run.json`` (config, tokenizer and label space as saved)."""
    run_dir = Path(run_dir)
    record = read_json(run_dir / "run.json")
    entry, task_cls = model_entry(record["model"]), TASKS.get(record["task"])
    cfg = config_from_dict(entry.spec.config_class, task_cls.config_class, record["config"])
    source = data_dir if data_dir is not None else (None if record["data"]["source"] == "synthetic"
                                                    else record["data"]["source"])
    data = resolve_data(source, say=say)
    task_obj = task_cls(cfg.task, data)
    tokenizer = WordPieceTokenizer.load(run_dir / "tokenizer.json", cfg.data.max_seq_len)
    features = open_features(data, cfg) if reads_regions(entry, task_obj, record["task"]) else NoRegions()
    # The run's word table may be larger than its tokenizer (an explicit vocab_size): keep it.
    fitted = dataclasses.replace(cfg.model)
    entry.spec.fit_to_data(fitted, DataFacts(tokenizer.vocab_size, features.feat_dim,
                                             task_obj.images_per_example),
                           {"model.vocab_size": cfg.model.vocab_size})
    if fitted != cfg.model:
        changed = [k for k, v in dataclasses.asdict(fitted).items() if getattr(cfg.model, k) != v]
        raise DataError(
            f"the data in {data.root} does not fit run {run_dir} (model.{changed[0]} would be "
            f"{getattr(fitted, changed[0])}, the run has {getattr(cfg.model, changed[0])}); "
            "point --data at the data it was trained on"
        )
    task_obj.setup(tokenizer, features, max_boxes=cfg.data.max_boxes,
                   state=read_json(run_dir / "task_state.json"))
    model_obj = task_obj.build_model(entry.spec.build(cfg.model), entry.spec)
    return Session(run_dir, record["model"], record["task"], int(record["seed"]), cfg, data, task_obj,
                   tokenizer, features, model_obj, pick_device(cfg.train.device), {"record": record})


def reads_regions(entry: ModelEntry, task: Task, name: str) -> bool:
    """Whether ``task`` feeds ``entry``'s backbone region features (else its images: the run
    opens no feature file)."""
    return task.image_input(entry.spec, f"task '{name}'") == REGION_INPUTS


def open_features(data: DataSource, cfg: RunConfig) -> Any:
    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else cache_root() / "features"
    return FeatureStore.open(data.feature_files(cfg.data.features), cache,
                             duplicate_ids=cfg.data.duplicate_ids, box_order=cfg.data.box_order)


def check_splits(cfg: RunConfig, task: Task) -> None:
    """Split names in the config must be the task's (before an epoch is spent)."""
    if cfg.train.select_split and cfg.train.select_split not in task.eval_splits:
        raise ConfigError(f"--set train.select_split={cfg.train.select_split}: not an evaluation split "
                          f"of this task ({', '.join(task.eval_splits)})")


def check_images(task: Task, features: Any) -> None:
    """Every image a split mentions must be in the feature store: fail before training, not mid-way."""
    missing = sorted(i for i in task.image_ids() if i not in features)
    if missing:
        raise DataError(
            f"{len(missing)} image id(s) used by the questions are not in the feature files "
            f"(e.g. {', '.join(missing[:3])}); add their regions or point data.features at the right TSV"
        )
