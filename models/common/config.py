"""What every family's config dataclass shares: presets as data, plain-JSON fields, one-line
errors naming the key.

A family writes a ``@dataclass`` of its hyper-parameters (fields of type ``str``, ``int``,
``float`` or ``bool`` only) that inherits :class:`PresetConfig`, sets ``FAMILY`` (the name used
in messages) and ``PRESETS`` (preset name -> field values), and adds its own value checks in
``validate`` after calling ``check_types``. The preset widths the families share and their
common synthetic-world recipe live here too.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, ClassVar, Self

from vlbench.errors import ConfigError

#: BERT-base's widths, the published size of every family (hidden 768, 12 heads of 64)
BERT_BASE_WIDTHS: dict[str, Any] = {"hidden_size": 768, "num_attention_heads": 12,
                                    "intermediate_size": 3072}
#: the CPU-sized width every family's tiny preset shares, so their sizes compare: hidden 192
#: learns to bind words to regions from scratch within a few epochs where 64-128 lag far behind
TINY_WIDTHS: dict[str, Any] = {"hidden_size": 192, "num_attention_heads": 6,
                               "intermediate_size": 768}

#: every family's part of the CPU-sized recipe on synthetic worlds: learning from scratch on
#: ~10k questions wants the tiny preset and no dropout
SYNTHETIC_OVERRIDES: dict[str, Any] = {
    "model.preset": "tiny",
    "model.hidden_dropout_prob": 0.0,
    "model.attention_probs_dropout_prob": 0.0,
}

_TYPES: dict[str, type | tuple[type, ...]] = {"str": str, "int": int, "float": (int, float),
                                              "bool": bool}


class PresetConfig:
    """Mixin for a family's config dataclass (see the module docstring)."""

    FAMILY: ClassVar[str] = "model"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        self.validate()
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if str(f.type) == "float":  # 0 and 0.0 must serialise the same way
                setattr(self, f.name, float(getattr(self, f.name)))

    def validate(self) -> None:
        """Raise ConfigError if a field has the wrong type or an impossible value."""
        self.check_types()

    def check_types(self) -> None:
        """ConfigError naming the first field whose value is not of its declared type."""
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            want = _TYPES[str(f.type)]
            # bool is an int subclass: only a bool field takes one, and it takes nothing else
            if (want is bool) != isinstance(value, bool) or not isinstance(value, want):
                raise ConfigError(
                    f"model config key '{f.name}' must be {f.type}, got {value!r}; fix the value"
                )

    def check_positive(self, *names: str) -> None:
        """ConfigError naming the first of ``names`` that is not > 0."""
        for name in names:
            if getattr(self, name) <= 0:
                raise ConfigError(f"model config key '{name}' must be > 0, got {getattr(self, name)}")

    def check_layers(self, name: str = "num_hidden_layers") -> None:
        """ConfigError if the layer count ``name`` is negative (0 layers is allowed)."""
        if getattr(self, name) < 0:
            raise ConfigError(f"model config key '{name}' must be >= 0, got {getattr(self, name)}")

    def check_pad_token(self) -> None:
        """ConfigError unless ``pad_token_id`` is a row of the word table."""
        pad, vocab = self.pad_token_id, self.vocab_size  # type: ignore[attr-defined]
        if not 0 <= pad < vocab:
            raise ConfigError(f"model config key 'pad_token_id' must be in [0, vocab_size "
                              f"{vocab}), got {pad}")

    def check_probabilities(self, *names: str) -> None:
        """ConfigError naming the first of ``names`` (dropout rates) outside [0, 1)."""
        for name in names:
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(
                    f"model config key '{name}' must be in [0, 1), got {getattr(self, name)}")

    def check_heads_divide_hidden(self) -> None:
        """ConfigError unless ``hidden_size`` is a multiple of ``num_attention_heads``."""
        hidden = self.hidden_size  # type: ignore[attr-defined]
        heads = self.num_attention_heads  # type: ignore[attr-defined]
        if hidden % heads:
            raise ConfigError(
                f"model config: hidden_size {hidden} is not a multiple of "
                f"num_attention_heads {heads}; change one of them"
            )

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> Self:
        """Config of preset ``name`` with ``overrides`` applied on top."""
        if name not in cls.PRESETS:
            close = difflib.get_close_matches(name, sorted(cls.PRESETS), n=3, cutoff=0.4)
            hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else (
                f"known presets: {', '.join(sorted(cls.PRESETS))}")
            raise ConfigError(f"unknown {cls.FAMILY} preset '{name}'; {hint}")
        return cls.from_dict({**cls.PRESETS[name], "preset": name, **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """Build from a dict of field values; unknown keys are an error naming close matches."""
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.6)
                hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else (
                    f"see {cls.__name__} for the known keys")
                raise ConfigError(f"unknown {cls.FAMILY} config key '{key}'; {hint}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict of every field (round-trips through ``from_dict``)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]
