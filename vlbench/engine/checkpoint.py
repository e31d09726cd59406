"""Checkpoints: safetensors weights + JSON config, and the whole training state for resuming.

A checkpoint directory is in the one layout of :mod:`vlbench.engine.layout`
(``model.safetensors`` with ``backbone.*`` and ``heads.<name>.*``, ``config.json``, the
answer table) and, for resumable ones,
``optim.safetensors`` + ``trainer_state.json`` (optimizer moments, scheduler, step,
epoch, position in the epoch, RNG states). Nothing is pickled. Directories are written
to a temporary name and renamed, so a kill mid-save leaves the previous one intact.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from vlbench.engine.layout import CONFIG_FILE, read_checkpoint, read_safetensors, write_checkpoint
from vlbench.errors import CheckpointError


def save_weights(module: torch.nn.Module, path: Path) -> None:
    # safetensors refuses shared storage (tied embeddings): store each tensor once, contiguous.
    state = {}
    seen: dict[int, str] = {}
    for k, v in module.state_dict().items():
        ptr = v.data_ptr()
        if ptr in seen and v.numel() > 0:
            continue
        seen[ptr] = k
        state[k] = v.detach().contiguous().cpu()
    save_file(state, str(path))


def load_weights(module: torch.nn.Module, path: Path, *, strict: bool = True) -> tuple[list[str], list[str]]:
    """Load ``path`` into ``module``; a shape mismatch names the key and both shapes."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no weights file; is this a vlbench checkpoint directory?")
    # Through the layout reader, so checkpoints of earlier layouts load under today's names.
    state = (read_checkpoint(path.parent).state() if (path.parent / CONFIG_FILE).is_file()
             else read_safetensors(path))
    own = module.state_dict()
    for k, v in state.items():
        if k in own and own[k].shape != v.shape:
            raise CheckpointError(
                f"{path}: '{k}' has shape {tuple(v.shape)} in the checkpoint but {tuple(own[k].shape)} in the "
                "model; load it with the config it was trained with"
            )
    missing, unexpected = module.load_state_dict(state, strict=False)
    tied = _tied_keys(module)
    missing = [k for k in missing if k not in tied]
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{path}: checkpoint does not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return missing, unexpected


def _tied_keys(module: torch.nn.Module) -> set[str]:
    """Keys whose tensors share storage with an earlier key (stored once)."""
    seen: set[int] = set()
    tied = set()
    for k, v in module.state_dict().items():
        if v.data_ptr() in seen and v.numel() > 0:
            tied.add(k)
        seen.add(v.data_ptr())
    return tied


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    meta = {
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": _jsonable(random.getstate()),
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    random.setstate(_tuples(meta["python"]))


def _jsonable(x: Any) -> Any:
    return [_jsonable(i) for i in x] if isinstance(x, tuple | list) else x


def _tuples(x: Any) -> Any:
    return tuple(_tuples(i) for i in x) if isinstance(x, list) else x


def save_checkpoint(directory: Path, model: torch.nn.Module, meta: dict[str, Any],
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    trainer_state: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint directory atomically (temporary sibling, then rename); ``meta`` are
    the keyword arguments of :func:`~vlbench.engine.layout.write_checkpoint`. With an
    optimizer, also its state, the scheduler's, the trainer's counters and the current RNG state."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(model, tmp / "model.safetensors")
    write_checkpoint(tmp, **meta)
    if optimizer is not None:
        tensors, optim_meta = _flatten_optimizer(optimizer.state_dict())
        rng_tensors, rng_meta = rng_state()
        tensors.update(rng_tensors)
        save_file(tensors, str(tmp / "optim.safetensors"))
        state = dict(trainer_state or {})
        state.update({
            "optimizer": optim_meta,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": rng_meta,
        })
        (tmp / "trainer_state.json").write_text(json.dumps(state))
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def recover(directory: Path) -> Path:
    """Finish a save that was killed between its two renames (see :func:`save_checkpoint`).

    The temporary sibling is complete once renaming starts, so it is the newest state; without
    it, the previous checkpoint (``.old``) is. Either is moved back to ``directory``.
    """
    directory = Path(directory)
    if directory.exists():
        return directory
    for candidate in (directory.with_name(directory.name + ".tmp"), directory.with_name(directory.name + ".old")):
        if (candidate / "trainer_state.json").is_file() and (candidate / "optim.safetensors").is_file():
            os.replace(candidate, directory)
            break
    return directory


def load_training_state(directory: Path, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNG states; returns the trainer's own counters."""
    state_path, optim_path = directory / "trainer_state.json", directory / "optim.safetensors"
    if not state_path.is_file() or not optim_path.is_file():
        raise CheckpointError(f"{directory}: no resumable training state (trainer_state.json, optim.safetensors)")
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{state_path}: damaged training state (not JSON); the checkpoint was cut "
                              "short: start the run again") from None
    tensors = read_safetensors(optim_path)
    optimizer.load_state_dict(_unflatten_optimizer(tensors, state.pop("optimizer")))
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    set_rng_state(tensors, state.pop("rng"))
    state.pop("scheduler", None)
    return state


def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for pid, pstate in sd["state"].items():
        for name, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}
