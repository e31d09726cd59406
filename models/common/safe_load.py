"""Read tensors from checkpoint files without ever running code stored in them.

``.safetensors`` files hold raw tensors only. Pickle-based files (``.pth``, ``.bin``, ``.pt``)
are read with ``torch.load(weights_only=True)``, whose unpickler accepts tensors and plain
containers and refuses every other global, so a crafted file cannot execute anything.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from vlbench.errors import CheckpointError

PICKLE_SUFFIXES = (".pth", ".bin", ".pt", ".ckpt")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of one checkpoint file, by key, on the CPU.

    Raises CheckpointError for a missing or unreadable file, for a pickle that needs to run code,
    and for a file that does not hold a mapping of names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist; check the path")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:
            raise CheckpointError(
                f"{path}: not a readable safetensors file ({_first_line(exc)}); re-export it"
            ) from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(_unsafe_message(path, exc)) from exc
    except Exception as exc:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: "
            f"{_first_line(exc)}); check that the file is complete"
        ) from exc
    return _tensor_mapping(obj, path)


def _tensor_mapping(obj: object, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping) and not all(isinstance(v, Tensor) for v in obj.values()):
        # Training scripts sometimes wrap the weights: {"state_dict": ...} or {"model": ...}.
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), Mapping):
                return _tensor_mapping(obj[key], path)
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"{path}: holds a {type(obj).__name__}, not a state dict of named tensors; "
            "save model.state_dict() instead"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(
            f"{path}: entry {bad[0]!r} is not a named tensor; save model.state_dict() instead"
        )
    return dict(obj)


def _unsafe_message(path: Path, exc: Exception) -> str:
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return (
            f"{path}: refused to load: it references {found.group(1)}, which only running code "
            "from the file could restore (vlbench reads tensors only); re-save the weights as a "
            "plain state dict or safetensors in an environment you trust"
        )
    detail = re.search(r"WeightsUnpickler error: *\n*\s*([^\n]+)", text)
    return (
        f"{path}: not a readable PyTorch checkpoint (the safe loader stopped at: "
        f"{detail.group(1).strip() if detail else _first_line(exc)}); check that the file is a "
        "complete torch.save() of a state dict"
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
