"""Blind-baseline hyper-parameters: LXMERT's, with the encoders of the missing modality at 0.

Each config is LXMERT's (same field names, so the remaining encoder is built by the same code
and LXMERT weights load into it); the encoders a blind model lacks are held at 0 layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from vlbench.errors import ConfigError

from ..common.config import BERT_BASE_WIDTHS, TINY_WIDTHS
from ..lxmert.config import LxmertConfig


class _BlindConfig(LxmertConfig):
    """LXMERT's fields; ``ABSENT`` names the layer counts that must be 0."""

    ABSENT: ClassVar[tuple[str, ...]] = ()

    def validate(self) -> None:
        super().validate()
        for name in self.ABSENT:
            if getattr(self, name) != 0:
                raise ConfigError(f"model config key '{name}' must be 0 for the {self.FAMILY} "
                                  f"baseline, got {getattr(self, name)}")


@dataclass
class TextOnlyConfig(_BlindConfig):
    """The language encoder alone (``l_layers``)."""

    FAMILY = "text-only"
    ABSENT = ("r_layers", "x_layers")
    r_layers: int = 0
    x_layers: int = 0
    # tiny: as many layers as LXMERT tiny has parameters (within 10%); base: BERT-base's 12
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "base": {**BERT_BASE_WIDTHS, "l_layers": 12, "r_layers": 0, "x_layers": 0},
        "tiny": {**TINY_WIDTHS, "l_layers": 5, "r_layers": 0, "x_layers": 0},
    }


@dataclass
class VisionOnlyConfig(_BlindConfig):
    """The object-relationship encoder alone (``r_layers``)."""

    FAMILY = "vision-only"
    ABSENT = ("l_layers", "x_layers")
    l_layers: int = 0
    x_layers: int = 0
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "base": {**BERT_BASE_WIDTHS, "l_layers": 0, "r_layers": 12, "x_layers": 0},
        "tiny": {**TINY_WIDTHS, "l_layers": 0, "r_layers": 6, "x_layers": 0},
    }
