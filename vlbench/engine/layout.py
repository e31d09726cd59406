"""The one checkpoint layout, and the one reader every loader goes through.

A checkpoint is a folder:

    model.safetensors   backbone.* (the backbone) and heads.<name>.* (one entry per head)
    config.json         {"layout": 2, "family", "model", "preset", "task", "heads": {name: kind},
                         "config": {"model": {...}, and for trained runs "task", "train", "data"}}
    answers.json        the answer table of a QA head (row i of its classifier = answer i)

Training checkpoints (``checkpoints/best``, ``checkpoints/last``), pre-training checkpoints
and converted ones are all written this way. :func:`read_checkpoint` also reads the two
earlier layouts (training checkpoints with ``answer_head.*`` / ``logit_fc.*`` / ``heads.cls.*``
keys and a run config; converted ones with a bare model config and inline answers), so older
runs keep loading.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import Tensor, nn

from vlbench.errors import CheckpointError
from vlbench.results.records import write_text_atomic

LAYOUT = 2
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ANSWERS_FILE = "answers.json"
BACKBONE = "backbone."
HEADS = "heads."


@dataclass
class StoredCheckpoint:
    """What a checkpoint folder holds, whichever layout wrote it."""

    path: Path
    family: str
    model: str
    preset: str
    config: dict[str, Any]  # sections; "model" always present
    task: str | None = None
    heads: dict[str, str] = field(default_factory=dict)  # head name -> head class name
    answers: list[str] | None = None
    legacy: bool = False  # written by an earlier layout (keys renamed on read)

    @property
    def run_dir(self) -> Path | None:
        """The run this checkpoint belongs to (``RUN/checkpoints/NAME``), if any."""
        run = self.path.parent.parent
        return run if (run / "run.json").is_file() else None

    @property
    def model_config(self) -> dict[str, Any]:
        return self.config["model"]

    def state(self) -> dict[str, Tensor]:
        """Every tensor, under this layout's names (``backbone.*``, ``heads.<name>.*``)."""
        state = read_safetensors(self.path / WEIGHTS_FILE)
        return {_current_key(k, self.task) if self.legacy else k: v for k, v in state.items()}

    def split(self) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]], list[str]]:
        """(backbone state, head states by name, keys that are neither)."""
        return split_state(self.state())


def split_state(state: Mapping[str, Tensor]
                ) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]], list[str]]:
    """Sort ``backbone.*`` / ``heads.<name>.*`` keys; returns the rest as unexpected."""
    backbone: dict[str, Tensor] = {}
    heads: dict[str, dict[str, Tensor]] = {}
    other: list[str] = []
    for key, value in state.items():
        if key.startswith(BACKBONE):
            backbone[key[len(BACKBONE):]] = value
        elif key.startswith(HEADS) and key.count(".") >= 2:
            _, name, rest = key.split(".", 2)
            heads.setdefault(name, {})[rest] = value
        else:
            other.append(key)
    return backbone, heads, other


def _current_key(key: str, task: str | None) -> str:
    """A key of an earlier training checkpoint under this layout's name."""
    if key.startswith("answer_head."):  # QA task model
        return "heads.qa." + key[len("answer_head."):]
    if key.startswith("logit_fc."):  # NLVR2 task model
        return "heads.nlvr2." + key
    if task == "pretrain" and key.startswith(HEADS):  # the pre-training heads, unnamed
        return "heads.pretraining." + key[len(HEADS):]
    return key


def is_checkpoint(path: Path) -> bool:
    """True when ``path`` is a folder in this layout (or an earlier one)."""
    try:
        read_checkpoint(path)
    except CheckpointError:
        return False
    return True


def read_checkpoint(path: str | Path) -> StoredCheckpoint:
    """Read a checkpoint folder's config (weights are read on demand); a run stands for its
    best checkpoint. One-line CheckpointError when it is not one."""
    path = Path(path).expanduser()
    if (path / "run.json").is_file():
        path = path / "checkpoints" / "best"
    if path.is_file() and path.name in (WEIGHTS_FILE, CONFIG_FILE):
        path = path.parent
    meta_path = path / CONFIG_FILE
    if not meta_path.is_file() or not (path / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{path}: not a vlbench checkpoint (needs {CONFIG_FILE} and "
                              f"{WEIGHTS_FILE}); point at a run directory or a checkpoint folder")
    meta = _read_json(meta_path)
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), str) \
            or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{meta_path}: not a vlbench checkpoint config (needs 'model' and "
                              "'config' objects)")
    config = meta["config"]
    legacy = meta.get("layout") != LAYOUT
    if "model" not in config or not isinstance(config["model"], dict):
        if isinstance(config.get("model"), str | int | float | list) or not legacy:
            raise CheckpointError(f"{meta_path}: key 'config.model' must be an object")
        config = {"model": config}  # an earlier converted checkpoint: the model config alone
    answers = meta.get("answers")
    if (path / ANSWERS_FILE).is_file():
        answers = _read_json(path / ANSWERS_FILE)
    elif answers is None and legacy:
        answers = _run_answers(path)
    if answers is not None and not (isinstance(answers, list)
                                    and all(isinstance(a, str) for a in answers)):
        raise CheckpointError(f"{path}: the answer table must be a list of strings")
    task = meta.get("task") if isinstance(meta.get("task"), str) else None
    heads = meta.get("heads") if isinstance(meta.get("heads"), dict) else {}
    return StoredCheckpoint(
        path=path, family=str(meta.get("family") or meta["model"]), model=meta["model"],
        preset=str(meta.get("preset") or config["model"].get("preset", "")), config=config,
        task=task, heads={str(k): str(v) for k, v in heads.items()}, answers=answers,
        legacy=legacy)


def write_checkpoint(directory: Path, *, family: str, model: str, config: Mapping[str, Any],
                     heads: Mapping[str, nn.Module] | Mapping[str, str], task: str | None = None,
                     answers: list[str] | None = None, extra: Mapping[str, Any] | None = None) -> None:
    """Write ``config.json`` (and ``answers.json``) into ``directory``; weights are written by
    the caller (:func:`vlbench.engine.checkpoint.save_weights`) as ``backbone.*`` /
    ``heads.<name>.*``. ``config`` holds sections (at least ``model``)."""
    for name in heads:
        if not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise CheckpointError(f"head name '{name}' must be letters, digits or '_'")
    meta = {
        "layout": LAYOUT,
        "family": family,
        "model": model,
        "preset": str(config["model"].get("preset", "")),
        "task": task,
        "heads": {n: h if isinstance(h, str) else type(h).__name__ for n, h in heads.items()},
        "config": dict(config),
        **dict(extra or {}),
    }
    write_text_atomic(directory / CONFIG_FILE, json.dumps(meta, indent=1) + "\n")
    if answers is not None:
        write_text_atomic(directory / ANSWERS_FILE, json.dumps(list(answers)) + "\n")


def read_safetensors(path: Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file; a damaged or truncated file is a one-line error."""
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types, or OSError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: unreadable safetensors file ({first}); the checkpoint "
                              "is damaged or was cut short, save or copy it again") from None


def _run_answers(path: Path) -> list[str] | None:
    """Answers of an earlier training checkpoint: its run's task_state.json."""
    state = path.parent.parent / "task_state.json"
    if not state.is_file():
        return None
    data = _read_json(state)
    answers = data.get("answers") if isinstance(data, dict) else None
    return [str(a) for a in answers] if isinstance(answers, list) else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not UTF-8 text; is this the right file?") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
