"""A family's checkpoint layouts as a ``CHECKPOINT_FORMATS`` registry plugin.

The engine's ``vlbench.load_model`` and ``vlbench convert`` reach a family's conversion
(its ``convert.py``) through such a plugin: :class:`CheckpointFormats` over that module.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from vlbench.errors import CheckpointError

from .checkpoint import LoadedCheckpoint


class FamilyConversion(Protocol):
    """What a family's ``convert`` module offers the plugin."""

    FORMATS: tuple[str, ...]
    detect_format: Callable[[Path], str]
    load_checkpoint: Callable[..., LoadedCheckpoint]
    save_native: Callable[..., Path]
    #: ``export_hf(backbone, heads, out_dir, kind, answers, say=...)``
    export_hf: Callable[..., Path]


class CheckpointFormats:
    """The plugin object: ``formats``, ``detect``, ``load_backbone`` and ``convert``.

    Args:
        conversion: the family's ``convert`` module.
        description: what the registry lists for it.
        claims: the layouts ``detect`` answers True for (default: all the family reads);
            a layout another reader owns is left out.
    """

    def __init__(self, conversion: FamilyConversion, description: str,
                 claims: Collection[str] | None = None) -> None:
        self.conversion = conversion
        self.formats = conversion.FORMATS
        self.claims = tuple(conversion.FORMATS if claims is None else claims)
        self.__doc__ = description  # the registry lists a plugin by its docstring

    def detect(self, path: Path) -> bool:
        """True when ``path`` holds one of the layouts this plugin claims."""
        try:
            return self.conversion.detect_format(path) in self.claims
        except CheckpointError:
            return False

    def load_backbone(self, path: Path, fmt: str = "auto", **options: Any
                      ) -> tuple[nn.Module, dict[str, Any]]:
        """The backbone stored at ``path`` and a report of what the load found; ``options`` go
        to the family's ``load_checkpoint`` (e.g. ``num_attention_heads`` for files that store
        no config)."""
        loaded = self.conversion.load_checkpoint(path, fmt, **options)
        return loaded.build_backbone(), {"format": loaded.report.fmt, "report": str(loaded.report)}

    def convert(self, src: Path, dst: Path, *, fmt_from: str = "auto", fmt_to: str = "vlbench",
                say: Callable[[str], None] = print, **options: Any) -> Path:
        """Read ``src`` in any layout the family reads and write ``dst`` as vlbench or HF."""
        if fmt_to not in ("vlbench", "hf"):
            raise CheckpointError(f"--to {fmt_to}: write 'vlbench' or 'hf'")
        loaded = self.conversion.load_checkpoint(src, fmt_from, **options)
        say(f"Read {loaded.report}")
        backbone = loaded.build_backbone()
        heads = {name: loaded.build_head(name, backbone) for name in loaded.heads_state}
        if fmt_to == "vlbench":
            return self.conversion.save_native(dst, backbone, heads, loaded.answers)
        kind = "qa" if "qa" in heads else "pretraining" if "pretraining" in heads else "model"
        if len(heads) > 1 or (heads and kind == "model"):
            say(f"HF holds one head per directory: writing the '{kind}' kind; other heads are "
                "left out")
        return self.conversion.export_hf(backbone, heads, dst, kind, loaded.answers, say=say)
