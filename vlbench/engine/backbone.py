"""The contract between the engine and a model family: the backbone protocol and the spec.

A model family (LXMERT, VisualBERT, ...) registers one :class:`ModelSpec` (its config class,
named presets, how its config fits the data, its pre-training heads, its checkpoint readers)
and one model name per preset (``lxmert``, ``lxmert_tiny``, ...) with :func:`register_family`.
The engine, the tasks and the objectives see only the spec and the backbone protocol below;
they never import a model module.

Every backbone is called with the same keyword inputs and returns a :class:`BackboneOutput`
with the three outputs of HF's ``LxmertModel``. Single-stream models split their final
sequence: ``.language`` holds the text positions, ``.vision`` the region positions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from vlbench.errors import ConfigError
from vlbench.registry import MODELS

#: what a backbone can serve; tasks and objectives name what they need (see ``requires``)
LANGUAGE_STATES = "language_states"  # per-token outputs a masked-LM head can read
REGION_STATES = "region_states"  # per-region outputs a masked-object head can read
CROSS_MODAL_POOLED = "cross_modal_pooled"  # a pooled state that has seen words and regions
CROSS_ATTENTION = "cross_attention"  # words and regions attend to each other inside the encoder
REGION_INPUTS = "region_inputs"  # reads region features and boxes (visual_feats/visual_pos)
PIXEL_INPUTS = "pixel_inputs"  # reads images (pixel_values/pixel_mask), as ViLT
#: what a region-feature backbone provides (a family's default)
CAPABILITIES = (LANGUAGE_STATES, REGION_STATES, CROSS_MODAL_POOLED, CROSS_ATTENTION, REGION_INPUTS)


#: the keyword inputs of every backbone, as a batch dict holds them
BACKBONE_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "visual_feats", "visual_pos",
                   "visual_attention_mask", "pixel_values", "pixel_mask")


def backbone_inputs(batch: Mapping[str, Any]) -> dict[str, Tensor]:
    """The backbone's inputs out of a task batch (which also holds targets and ids)."""
    return {k: batch[k] for k in BACKBONE_INPUTS if k in batch}


@dataclass
class BackboneOutput:
    """Final hidden states: ``language`` (B, T, H), ``vision`` (B, R, H), ``pooled`` (B, H)."""

    language: Tensor
    vision: Tensor
    pooled: Tensor


@runtime_checkable
class Backbone(Protocol):
    """What every backbone offers. ``config`` has at least ``hidden_size`` and
    ``initializer_range``; inputs:

    - ``input_ids`` (B, T) WordPiece ids, ``attention_mask`` (B, T) 1 = real token,
      ``token_type_ids`` (B, T) segment ids;
    - ``visual_feats`` (B, R, D) region features, ``visual_pos`` (B, R, 4) boxes
      x1, y1, x2, y2 divided by the image width/height, ``visual_attention_mask`` (B, R)
      1 = real region.
    """

    config: Any

    def __call__(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                 token_type_ids: Tensor | None = None, visual_feats: Tensor | None = None,
                 visual_pos: Tensor | None = None,
                 visual_attention_mask: Tensor | None = None) -> BackboneOutput: ...

    def get_input_embeddings(self) -> nn.Embedding: ...


@dataclass(frozen=True)
class DataFacts:
    """What the data tells a model config: the tokenizer's size, the regions' shape and how
    many images an example holds (NLVR2: two, encoded as adjacent rows)."""

    vocab_size: int
    feat_dim: int
    images_per_example: int = 1


class ModelConfig(Protocol):
    """What the engine asks of a family's config dataclass."""

    preset: str
    hidden_size: int

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> Any: ...

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Any: ...

    def to_dict(self) -> dict[str, Any]: ...

    def validate(self) -> None: ...


@dataclass(frozen=True)
class ModelSpec:
    """One model family, as the engine sees it.

    ``architecture_keys`` are the config keys that fix tensor shapes (a fine-tune from a
    checkpoint adopts them); ``synthetic_overrides`` the family's part of the CPU-sized recipe
    on synthetic worlds (``{"model.preset": "tiny", ...}``); ``provides`` the capabilities
    above; ``refusals`` a reason per capability it lacks, said when a task or objective
    needs it. ``pretraining_heads(config, backbone, visual_decoders, num_answers)`` builds the
    module behind ``heads.pretraining.*`` (``num_answers`` 0: no QA head). ``task_heads``
    replaces a task's shared head by the family's own (``{"qa": build(config, num_answers)}``,
    as VisualBERT's classifier); tasks ask through :meth:`head`. ``fit_checkpoint(tensors,
    config)`` makes a checkpoint's backbone tensors fit a run's config where the family knows
    how (ViLT grows its modality table for NLVR2's second image); without it they must fit as
    they are. ``revision`` is bumped when a code change alters the family's results
    (``vlbench train --reuse`` then trains again).
    """

    family: str
    description: str
    config_class: type
    backbone_class: type
    fit_to_data: Callable[[Any, DataFacts, Mapping[str, Any]], None]
    architecture_keys: tuple[str, ...]
    synthetic_overrides: Mapping[str, Any] = field(default_factory=dict)
    provides: frozenset[str] = frozenset(CAPABILITIES)
    refusals: Mapping[str, str] = field(default_factory=dict)
    pretraining_heads: Callable[..., nn.Module] | None = None
    task_heads: Mapping[str, Callable[..., nn.Module]] = field(default_factory=dict)
    fit_checkpoint: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None
    default_preset: str = "base"
    revision: int = 1

    def build(self, config: Any) -> nn.Module:
        """A freshly initialised backbone for ``config``."""
        return self.backbone_class(config)

    def config(self, preset: str | None = None, **overrides: Any) -> Any:
        return self.config_class.from_preset(preset or self.default_preset, **overrides)

    def head(self, kind: str, config: Any, default: Callable[..., nn.Module], **sizes: Any) -> nn.Module:
        """The head of ``kind`` ("qa", "nlvr2") for this family: its own, else ``default``."""
        return self.task_heads.get(kind, default)(config, **sizes)

    def require(self, needs: frozenset[str] | set[str], who: str) -> None:
        """Refuse, with the family's reason, a task or objective this backbone cannot serve."""
        for need in sorted(set(needs) - self.provides):
            reason = self.refusals.get(need, f"it does not provide {need.replace('_', ' ')}")
            raise ConfigError(f"{who} cannot run on {self.family}: {reason}")


@dataclass(frozen=True)
class ModelEntry:
    """A registered model name: a family spec and, optionally, a preset and config values
    pinned to it (``lxmert_coattn`` is LXMERT with ``cross_attention="per_direction"``)."""

    name: str
    spec: ModelSpec
    preset: str | None = None
    description: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return self.spec.family

    def overrides(self, synthetic: bool) -> dict[str, Any]:
        """This model's config layer: the family's synthetic recipe, then a pinned preset,
        then the pinned config values."""
        out = dict(self.spec.synthetic_overrides) if synthetic else {}
        if self.preset is not None:
            out["model.preset"] = self.preset
        out.update({f"model.{k}": v for k, v in self.config.items()})
        return out

    def default_config(self) -> Any:
        return self.spec.config(self.preset, **self.config)

    def parameter_count(self) -> int:
        """Parameters of the backbone at this preset (built on the meta device: no memory)."""
        with torch.device("meta"):
            model = self.spec.build(self.default_config())
        return sum(p.numel() for p in model.parameters())


#: a model name's registration: (pinned preset or None, one line) or, with pinned config
#: values, (preset, one line, {"field": value})
Registration = tuple[str | None, str] | tuple[str | None, str, Mapping[str, Any]]


def register_family(spec: ModelSpec, names: Mapping[str, Registration]) -> ModelSpec:
    """Register ``spec`` under each model name: ``{"lxmert": (None, "..."), "lxmert_tiny":
    ("tiny", "..."), "lxmert_coattn": (None, "...", {"cross_attention": "per_direction"})}``
    maps a name to its pinned preset (None: the family default, tiny on synthetic worlds), a
    one-line description and, optionally, config values pinned to the name."""
    for name, (preset, description, *pinned) in names.items():
        config = dict(pinned[0]) if pinned else {}
        spec.config(preset, **config)  # an unknown preset or value fails at import, not later
        MODELS.register(name, ModelEntry(name, spec, preset, description, config),
                        description=description)
    return spec


def model_entry(name: str) -> ModelEntry:
    """The registered model ``name`` (one-line error with close matches otherwise)."""
    return MODELS.get(name)


def family_spec(family: str) -> ModelSpec:
    """The spec of ``family`` (as written in checkpoints' ``config.json``)."""
    for entry in MODELS:
        if entry.obj.spec.family == family:
            return entry.obj.spec
    families = sorted({e.obj.spec.family for e in MODELS})
    raise ConfigError(f"unknown model family '{family}'; known: {', '.join(families)}")


def model_config_from_dict(spec: ModelSpec, values: Mapping[str, Any], where: str) -> Any:
    """A family config from stored values, with the file named on a bad key or value."""
    try:
        return spec.config_class.from_dict(dict(values))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"{where}: model config does not fit {spec.family} ({exc})") from None


def architecture(spec: ModelSpec, config: Any) -> dict[str, Any]:
    """The shape-defining part of ``config`` (what a fine-tune adopts from its checkpoint)."""
    values = dataclasses.asdict(config)
    return {k: values[k] for k in spec.architecture_keys if k in values}
