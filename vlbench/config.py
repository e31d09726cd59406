"""Typed, layered run configuration.

A run's config has four sections: ``model`` (the model plugin's dataclass, built from a
preset), ``task`` (the task plugin's dataclass), ``train`` and ``data`` (below). Layers
are applied in order, later wins:

    model preset < task defaults < data-source defaults < ``--set key=value`` overrides

On a synthetic world the data-source layer is a CPU-sized recipe, and a task may change
parts of it (``Task.synthetic_overrides``, applied right after it).

Keys are dotted (``train.lr``, ``model.x_layers``); values are parsed and type-checked
against the dataclass field, and an unknown key is an error with a close-match hint. After
every layer the whole config is validated (each field's declared range, the model's own
checks), so a bad value fails before any work, naming the layer that set it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from vlbench.errors import ConfigError


def valid(low: float | None = None, high: float | None = None, *, above: float | None = None,
          choices: tuple[str, ...] = ()) -> dict[str, Any]:
    """Field metadata declaring a field's valid values: ``low <= x <= high``, ``x > above``,
    or one of ``choices``. Checked by :func:`validate_section` whenever a config is resolved."""
    return {"valid": (low, high, above, choices)}


def check(default: Any, *, neutral: bool = False, **rule: Any) -> Any:
    """A dataclass field with a default and a declared valid range (see :func:`valid`).

    ``neutral``: the default does what every finished run made before the field existed did,
    so :meth:`RunConfig.identity` leaves the field out while it holds the default (adding such
    a field does not make earlier runs look different).
    """
    return field(default=default, metadata={**valid(**rule), "neutral": neutral})


@dataclass
class TrainConfig:
    """Optimisation and schedule (LXMERT fine-tuning uses AdamW, warmup then linear decay)."""

    epochs: int = check(4, low=1)
    batch_size: int = check(32, low=1)
    lr: float = check(1e-5, above=0.0)
    weight_decay: float = check(0.01, low=0.0)
    warmup_ratio: float = check(0.1, low=0.0, high=1.0)
    max_grad_norm: float = check(5.0, above=0.0)
    grad_accum: int = check(1, low=1)
    precision: str = check("fp32", choices=("fp32", "bf16"))  # bf16: autocast
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    train_limit: int = check(0, low=0)  # use only the first N training examples (0 = all): low-data settings
    eval_limit: int = check(0, low=0)  # score only the first N examples of each eval split (0 = all)
    log_every: int = check(20, low=1)
    save_every: int = check(0, low=0)  # also checkpoint every N optimiser steps mid-epoch (0 = epoch ends only)
    select_split: str = ""  # split whose primary metric picks the best checkpoint ("" = first eval split)
    deterministic: bool = True
    # Speed only (see vlbench.engine.loader and vlbench.engine.speed); neutral: their defaults
    # train exactly as runs made before them did.
    compile: bool = check(False, neutral=True)  # torch.compile the training forward/backward
    # Processes building training batches: -1 = auto (none on CPU, where the batch is built in the
    # training process exactly as before; up to 4 per GPU on CUDA, with pinned memory and prefetch).
    loader_workers: int = check(-1, low=-1, neutral=True)


@dataclass
class DataConfig:
    """Where the data lives and how text and regions become tensors."""

    source: str = ""  # "synthetic" or a directory; filled in by the data-source layer
    max_seq_len: int = check(20, low=3)  # LXMERT truncates sentences to 20 WordPiece tokens
    max_boxes: int = check(36, low=1)
    vocab: str = "train"  # "train": WordPiece trained on the task's training text; or a vocab.txt
    vocab_size: int = check(30522, low=8)  # target size when training a WordPiece vocabulary
    features: str = ""  # feature TSV path(s), comma-separated; "" = the data directory's default
    cache_dir: str = ""  # where the memory-mapped feature store goes ("" = user cache dir)
    # Regions kept of an image with more than max_boxes: its first rows in the TSV ("file", as
    # extractors write them by confidence) or its most confident ("confidence"); LXMERT uses all.
    box_order: str = check("file", choices=("file", "confidence"), neutral=True)
    # An image id given by two feature rows: refuse, or use its first or last row (LXMERT: last).
    # Neutral: a run over repeated ids used to keep the first row; now it would not start.
    duplicate_ids: str = check("error", choices=("error", "first", "last"), neutral=True)


def validate_section(obj: Any, section: str, where: str) -> None:
    """Check every field of a config section against its declared range (one-line ConfigError)."""
    for f in dataclasses.fields(obj):
        rule = f.metadata.get("valid")
        if rule is None:
            continue
        low, high, above, choices = rule
        value = getattr(obj, f.name)
        bad = ((choices and value not in choices)
               or (low is not None and value < low) or (high is not None and value > high)
               or (above is not None and value <= above))
        if bad:
            if choices:
                want = f"one of {', '.join(choices)}"
            else:
                parts = [f">= {low}" if low is not None else "", f"> {above}" if above is not None else "",
                         f"<= {high}" if high is not None else ""]
                want = " and ".join(p for p in parts if p)
            raise ConfigError(f"{where}: {section}.{f.name}={value!r} is out of range; it must be {want}")


@dataclass
class RunConfig:
    model: Any
    task: Any
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict[str, Any]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def identity(self) -> dict[str, Any]:
        """:meth:`to_dict` less the neutral fields that hold their default (see :func:`check`):
        what decides whether two runs are the same run."""
        out = self.to_dict()
        for name in SECTIONS:
            section = getattr(self, name)
            for f in dataclasses.fields(section):
                if f.metadata.get("neutral") and getattr(section, f.name) == f.default:
                    del out[name][f.name]
        return out


SECTIONS = ("model", "task", "train", "data")


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """``["train.lr=1e-4", ...]`` -> ``{"train.lr": "1e-4"}`` (values stay strings until typed)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set '{pair}': expected key=value, e.g. --set train.lr=1e-4")
        out[key.strip()] = value.strip()
    return out


def build_config(
    model_config_cls: Any,
    task_config: Any,
    layers: list[tuple[str, dict[str, Any]]],
) -> RunConfig:
    """Resolve the layered config.

    ``layers`` are ``(name, {dotted_key: value})`` from lowest to highest precedence (task
    defaults, data-source defaults, a task's synthetic defaults, user overrides).
    ``model.preset`` is resolved first, since every other model key is applied on top of it.
    """
    preset = None
    for _, values in layers:
        if "model.preset" in values:
            preset = str(values["model.preset"])
    # Model plugins provide at least a published-size "base" and a CPU-sized "tiny" preset.
    model = model_config_cls.from_preset(preset or getattr(model_config_cls, "default_preset", "base"))
    cfg = RunConfig(model=model, task=task_config)
    for layer_name, values in layers:
        for key, value in values.items():
            if key == "model.preset":
                continue
            set_dotted(cfg, key, value, where=layer_name)
        validate(cfg, layer_name)
    return cfg


def validate(cfg: RunConfig, where: str) -> None:
    """Every section in range: the model's own ``validate()``, declared ranges for the rest."""
    try:
        cfg.model.validate()
        if hasattr(cfg.task, "validate"):
            cfg.task.validate()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    for section in ("train", "data"):
        validate_section(getattr(cfg, section), section, where)


def set_dotted(cfg: RunConfig, key: str, value: Any, where: str = "--set") -> None:
    """Set ``section.field`` on ``cfg``, parsing and type-checking ``value``."""
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name:
        close = difflib.get_close_matches(section, SECTIONS, n=1)
        hint = f" (did you mean '{close[0]}.{name}'?)" if close and name else ""
        raise ConfigError(
            f"{where}: unknown config key '{key}'{hint}; keys look like "
            f"{', '.join(s + '.<name>' for s in SECTIONS)}"
        )
    obj = getattr(cfg, section)
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"did you mean {', '.join(f'{section}.{c}' for c in close)}?" if close else (
            f"known: {', '.join(names)}"
        )
        raise ConfigError(f"{where}: unknown config key '{key}'; {hint}")
    setattr(obj, name, coerce(value, hints[name], key, where))


def coerce(value: Any, typ: Any, key: str, where: str) -> Any:
    """Parse ``value`` (often a string from the command line) into ``typ``."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if isinstance(value, str) and value.lower() in ("none", "null"):
            return None
        if value is None:
            return None
        return coerce(value, args[0], key, where)
    if origin in (list, tuple):
        (item,) = typing.get_args(typ)[:1] or (str,)
        items = value.split(",") if isinstance(value, str) else list(value)
        items = [i.strip() for i in items] if isinstance(value, str) else items
        return [coerce(i, item, key, where) for i in items if i != ""]
    if typ is Any:
        return value
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value) if not isinstance(value, str) else int(value.replace("_", ""))
        if typ is float:
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise ValueError(value)  # inf / nan are never a setting: they train garbage
            return float(value)
        if typ is str:
            return str(value)
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise ConfigError(
        f"{where}: '{key}' expects {getattr(typ, '__name__', typ)}, got {value!r}; "
        f"e.g. --set {key}={_example(typ)}"
    )


def _example(typ: Any) -> str:
    return {int: "3", float: "0.5", bool: "true", str: "text"}.get(typ, "...")


def from_values(cls: Any, values: dict[str, Any], section: str, where: str = "run config") -> Any:
    """Build dataclass ``cls`` from ``values``, type-checked; unknown keys are errors."""
    obj = cls()
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for k, v in values.items():
        if k not in known:
            raise ConfigError(f"{where}: unknown key '{section}.{k}'; was it written by a newer vlbench?")
        setattr(obj, k, coerce(v, hints[k], f"{section}.{k}", where))
    return obj


def config_from_dict(model_config_cls: Any, task_config_cls: Any, data: dict[str, Any]) -> RunConfig:
    """Rebuild a resolved config (e.g. from a run record)."""
    return RunConfig(
        model=from_values(model_config_cls, data.get("model", {}), "model"),
        task=from_values(task_config_cls, data.get("task", {}), "task"),
        train=from_values(TrainConfig, data.get("train", {}), "train"),
        data=from_values(DataConfig, data.get("data", {}), "data"),
    )
