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


def provenance(device: torch.device) -> dict[str, Any]:
    commit, dirty = git_commit()
    return {
        "vlbench": vlbench.__version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device) if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})",
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "command": " ".join(["vlbench", *sys.argv[1:]]) if Path(sys.argv[0]).name == "vlbench" else " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
