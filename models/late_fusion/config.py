"""Late-fusion hyper-parameters: LXMERT's, with no cross-modality layers.

The config is LXMERT's (same field names, so the encoders are built by the same code and
LXMERT weights load into them); only ``x_layers`` is held at 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlbench.errors import ConfigError

from ..common.config import BERT_BASE_WIDTHS, TINY_WIDTHS
from ..lxmert.config import LxmertConfig

PRESETS: dict[str, dict[str, Any]] = {
    # LXMERT's published encoders with the cross-modality ones removed.
    "base": {**BERT_BASE_WIDTHS, "l_layers": 9, "r_layers": 5, "x_layers": 0},
    # A layer more per encoder than LXMERT tiny (2/1/1) in place of its cross-modality layer:
    # parameters within 5% of it, so a controlled comparison holds size fixed.
    "tiny": {**TINY_WIDTHS, "l_layers": 3, "r_layers": 2, "x_layers": 0},
}


@dataclass
class LateFusionConfig(LxmertConfig):
    """LXMERT's fields; ``x_layers`` must be 0 (words and regions never attend to each other)."""

    FAMILY = "late fusion"
    PRESETS = PRESETS
    x_layers: int = 0

    def validate(self) -> None:
        super().validate()
        if self.x_layers != 0:
            raise ConfigError(f"model config key 'x_layers' must be 0 for late fusion, got "
                              f"{self.x_layers}; for cross-modality layers train lxmert with "
                              f"--set model.x_layers={self.x_layers}")
