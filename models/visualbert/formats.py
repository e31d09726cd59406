"""VisualBERT checkpoint layouts (HF directories, vlbench) as a registry plugin.

The engine's ``vlbench.load_model`` and ``vlbench convert`` reach these through
``CHECKPOINT_FORMATS``; the conversion itself lives in ``convert.py``. ``detect`` claims HF
VisualBERT directories only: vlbench checkpoints are the engine's to read, and LXMERT
directories are LXMERT's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from vlbench.errors import CheckpointError
from vlbench.registry import register_checkpoint_format

from .convert import FORMATS, detect_format, export_hf, load_checkpoint, save_native


@register_checkpoint_format("visualbert")
class VisualBertCheckpoints:
    """VisualBERT weights: HF transformers directories (model_type visual_bert), vlbench."""

    formats = FORMATS

    @staticmethod
    def detect(path: Path) -> bool:
        """True for an HF VisualBERT directory (or its config.json / weights file)."""
        try:
            return detect_format(path) == "hf"
        except CheckpointError:
            return False

    @staticmethod
    def load_backbone(path: Path, fmt: str = "auto") -> tuple[nn.Module, dict[str, Any]]:
        """The backbone stored at ``path`` and a report of what the load found."""
        loaded = load_checkpoint(path, fmt)
        return loaded.build_backbone(), {"format": loaded.report.fmt, "report": str(loaded.report)}

    @staticmethod
    def convert(src: Path, dst: Path, *, fmt_from: str = "auto", fmt_to: str = "vlbench",
                say: Callable[[str], None] = print) -> Path:
        """Read ``src`` (HF or vlbench VisualBERT) and write ``dst`` as vlbench or HF."""
        if fmt_to not in ("vlbench", "hf"):
            raise CheckpointError(f"--to {fmt_to}: write 'vlbench' or 'hf'")
        loaded = load_checkpoint(src, fmt_from)
        say(f"Read {loaded.report}")
        backbone = loaded.build_backbone()
        heads = {name: loaded.build_head(name, backbone) for name in loaded.heads_state}
        if fmt_to == "vlbench":
            return save_native(dst, backbone, heads, loaded.answers)
        kind = "qa" if "qa" in heads else "pretraining" if "pretraining" in heads else "model"
        if len(heads) > 1 or (heads and kind == "model"):
            say(f"HF holds one head per directory: writing the '{kind}' kind; other heads are left out")
        return export_hf(backbone, heads, dst, kind, loaded.answers, say=say)
