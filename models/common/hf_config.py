"""Mapping between a family's config and HF transformers' ``config.json`` of the same model.

Each family describes its mapping with an :class:`HfConfigMap` (which fields match by name,
its ``model_type``, its architectures) and keeps only its own checks and extra keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from vlbench.errors import CheckpointError

from .checkpoint import answers_to_hf, matching_preset
from .config import PresetConfig

PRESET_KEY = "vlbench_preset"  # extra key HF keeps in config.json; restores the preset name

C = TypeVar("C", bound=PresetConfig)


@dataclass(frozen=True)
class HfConfigMap(Generic[C]):
    """How ``config_class`` maps to HF's ``config.json`` of ``model_type``.

    ``shared_fields`` have the same name and meaning on both sides; ``architectures`` maps an
    export kind ("model", "qa", "pretraining") to HF's class; ``hf_defaults`` are HF's
    defaults where they differ from the family's (for keys a file omits); ``article`` goes
    before the family's name in messages ("an LXMERT").
    """

    config_class: type[C]
    model_type: str
    shared_fields: tuple[str, ...]
    architectures: Mapping[str, str]
    article: str = "a"
    hf_defaults: Mapping[str, Any] = field(default_factory=dict)
    type_optional: bool = False  # a config.json without model_type is read as this model's
    null_is_absent: bool = False  # a null field takes HF's default instead of failing

    def config_from_hf(self, hf: Mapping[str, Any], source: str) -> C:
        """The family config of an HF ``config.json`` dict (HF's defaults fill absent keys)."""
        name = self.config_class.FAMILY
        if hf.get("model_type", self.model_type if self.type_optional else None) != self.model_type:
            raise CheckpointError(
                f"{source}: model_type is '{hf.get('model_type')}', not '{self.model_type}'; "
                f"point at {self.article} {name} checkpoint"
            )
        if hf.get("hidden_act", "gelu") != "gelu":
            raise CheckpointError(
                f"{source}: hidden_act '{hf['hidden_act']}' is not supported ({name} uses 'gelu')"
            )
        given = {k: hf[k] for k in self.shared_fields
                 if k in hf and not (self.null_is_absent and hf[k] is None)}
        values = {**self.hf_defaults, **given}
        defaults = self.config_class().to_dict()
        values["preset"] = hf.get(PRESET_KEY) or matching_preset(self.config_class.PRESETS,
                                                                 {**defaults, **values})
        try:
            return self.config_class.from_dict(values)
        except Exception as exc:
            raise CheckpointError(f"{source}: {exc}") from exc

    def to_hf(self, config: C, kind: str, *, answers: list[str] | None = None,
              num_labels: int | None = None, **extra: Any) -> dict[str, Any]:
        """HF ``config.json`` dict for exporting ``config`` as ``architectures[kind]``:
        the shared fields, the family's ``extra`` keys, the preset name, ``num_labels`` when
        given and the answers as ``id2label`` / ``label2id``."""
        hf: dict[str, Any] = {k: getattr(config, k) for k in self.shared_fields}
        hf.update(model_type=self.model_type, architectures=[self.architectures[kind]],
                  hidden_act="gelu", tie_word_embeddings=True, **extra)
        hf[PRESET_KEY] = config.preset  # type: ignore[attr-defined]
        if num_labels is not None:
            hf["num_labels"] = num_labels
        hf.update(answers_to_hf(answers))
        return hf
