"""LXMERT hyper-parameters, named as in the paper and HF transformers' ``LxmertConfig``.

Sizes are data: ``PRESETS`` maps a preset name to field values, and
``LxmertConfig.from_preset(name, **overrides)`` is the one way to build a config.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

from vlbench.errors import ConfigError

PRESETS: dict[str, dict[str, Any]] = {
    # Published LXMERT (Tan & Bansal 2019): BERT-base widths, 9/5/5 encoders.
    "base": {
        "hidden_size": 768,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "l_layers": 9,
        "r_layers": 5,
        "x_layers": 5,
    },
    # CPU-sized: same topology (all three encoders present), narrow and shallow enough to
    # fine-tune on the embedded synthetic GQA (~10k questions x 10 epochs) in minutes on 2
    # cores. Width matters more than depth for learning to bind words to regions from
    # scratch: hidden 192 learns it within a few epochs where hidden 64-128 lag far behind.
    "tiny": {
        "hidden_size": 192,
        "num_attention_heads": 6,
        "intermediate_size": 768,
        "l_layers": 2,
        "r_layers": 1,
        "x_layers": 1,
    },
}


@dataclass
class LxmertConfig:
    """Every hyper-parameter of the LXMERT backbone and its heads (plain JSON types only)."""

    preset: str = "tiny"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    l_layers: int = 9
    r_layers: int = 5
    x_layers: int = 5
    visual_feat_dim: int = 2048
    visual_pos_dim: int = 4
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    # Head sizes (pre-training heads and the pre-training QA head).
    num_qa_labels: int = 9500
    num_object_labels: int = 1600
    num_attr_labels: int = 400

    def __post_init__(self) -> None:
        self.validate()
        for f in dataclasses.fields(self):
            if str(f.type) == "float":  # 0 and 0.0 must serialise the same way
                setattr(self, f.name, float(getattr(self, f.name)))

    def validate(self) -> None:
        """Raise ConfigError if a field has the wrong type or an impossible value."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            want = {"str": str, "int": int, "float": (int, float)}[str(f.type)]
            if isinstance(value, bool) or not isinstance(value, want):
                raise ConfigError(
                    f"model config key '{f.name}' must be {f.type}, got {value!r}; fix the value"
                )
        for name in ("vocab_size", "hidden_size", "num_attention_heads", "intermediate_size",
                     "visual_feat_dim", "visual_pos_dim", "max_position_embeddings",
                     "type_vocab_size", "num_qa_labels", "num_object_labels", "num_attr_labels"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model config key '{name}' must be > 0, got {getattr(self, name)}")
        for name in ("l_layers", "r_layers", "x_layers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model config key '{name}' must be >= 0, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"model config: hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}; change one of them"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model config key '{name}' must be in [0, 1), got {getattr(self, name)}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> LxmertConfig:
        """Config of preset ``name`` ("base", "tiny") with ``overrides`` applied on top."""
        if name not in PRESETS:
            close = difflib.get_close_matches(name, sorted(PRESETS), n=3, cutoff=0.4)
            hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else (
                f"known presets: {', '.join(sorted(PRESETS))}")
            raise ConfigError(f"unknown LXMERT preset '{name}'; {hint}")
        return cls.from_dict({**PRESETS[name], "preset": name, **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LxmertConfig:
        """Build from a dict of field values; unknown keys are an error naming close matches."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.6)
                hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else (
                    "see LxmertConfig for the known keys")
                raise ConfigError(f"unknown LXMERT config key '{key}'; {hint}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict of every field (round-trips through ``from_dict``)."""
        return dataclasses.asdict(self)
