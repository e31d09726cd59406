"""Where a result came from: code version, environment and command line."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

import vlbench
from vlbench.engine import distributed


def git_commit() -> tuple[str | None, bool | None]:
    """The commit of the vlbench source tree and whether it has local changes (None outside git)."""
    root = Path(vlbench.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        return commit, bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return None, None


def command_line() -> str:
    """The command that started this process, as the user typed it where that is known."""
    launcher = distributed.command_prefix()
    if launcher is not None:  # sys.argv[0] is vlbench/__main__.py under torchrun
        return " ".join([*launcher, *sys.argv[1:]])
    return " ".join(["vlbench", *sys.argv[1:]]) if Path(sys.argv[0]).name == "vlbench" else " ".join(sys.argv)


def provenance(device: torch.device) -> dict[str, Any]:
    """Code version, environment, command line and world size of the current process."""
    commit, dirty = git_commit()
    world = distributed.world_size()
    return {
        "vlbench": vlbench.__version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device) if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})",
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "command": command_line(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # processes in the data-parallel group (1: no torch.distributed); the global batch is
        # train.batch_size whatever this is
        "world_size": world,
        **({"backend": distributed.backend()} if world > 1 else {}),
    }
