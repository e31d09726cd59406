"""The family-independent half of checkpoint conversion.

A family's ``convert.py`` knows its foreign layouts (which keys are the backbone, which a head,
how its config maps to HF's); everything else lives here: reading HF directories (safetensors
or ``pytorch_model.bin``, sharded or not, pickles only through the safe loader), the
:class:`LoadReport` of missing / unexpected keys, shape checks that name the key, and a
:class:`LoadedCheckpoint` that rebuilds the backbone and heads without random initialisation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vlbench.errors import CheckpointError

from .safe_load import read_state_dict

CONFIG_FILE = "config.json"
HF_WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json",
    "pytorch_model.bin", "pytorch_model.bin.index.json",
)


@dataclass
class LoadReport:
    """What a load found: keys the model needs but the file lacks, keys nothing uses, notes."""

    source: str
    fmt: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.missing and not self.unexpected

    def __str__(self) -> str:
        parts = [f"{self.source} ({self.fmt})"]
        parts.append(f"missing {len(self.missing)}: {preview(self.missing)}" if self.missing
                     else "no missing keys")
        parts.append(f"unexpected {len(self.unexpected)}: {preview(self.unexpected)}"
                     if self.unexpected else "no unexpected keys")
        return "; ".join(parts + self.notes)


#: ``empty_head(class_name, head_state, config, backbone)``: a fresh head sized as the state
EmptyHead = Callable[[str, Mapping[str, Tensor], Any, nn.Module | None], nn.Module]


@dataclass(frozen=True)
class CheckpointFamily:
    """What the generic loader needs from a family.

    ``head_types`` maps the standard head names ("qa", "pretraining", ...) to class names;
    ``answer_rows`` maps a head class name to the key whose rows are the answers.
    """

    family: str
    backbone_class: type[nn.Module]
    empty_head: EmptyHead
    head_types: Mapping[str, str]
    answer_rows: Mapping[str, str] = field(default_factory=dict)


@dataclass
class LoadedCheckpoint:
    """Backbone config and weights, head weights by head name, and the answer vocabulary."""

    family: CheckpointFamily
    model_name: str
    config: Any
    backbone_state: dict[str, Tensor]
    heads_state: dict[str, dict[str, Tensor]]
    answers: list[str] | None
    report: LoadReport
    # Head name -> head class name; names default to their standard kinds.
    head_types: dict[str, str] = field(default_factory=dict)

    def head_type(self, name: str) -> str:
        """Class name of head ``name``."""
        return self.head_types.get(name) or self.family.head_types.get(name, name)

    def build_backbone(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        """The backbone holding a copy of these weights (floating ones as ``dtype``).

        Built without random initialisation (the weights are copied straight in).
        CheckpointError if any weight is missing.
        """
        source = self.report.source
        with torch.device("meta"):
            model = self.family.backbone_class(self.config)
        missing, _ = compare_state(model.state_dict(), self.backbone_state, source)
        if missing:
            raise CheckpointError(
                f"{source}: backbone weights missing {len(missing)} keys "
                f"({preview(missing)}); the checkpoint is incomplete"
            )
        state = {k: v.to(dtype if v.is_floating_point() else v.dtype, copy=True)
                 for k, v in self.backbone_state.items()}
        model.load_state_dict(state, strict=False, assign=True)
        return model

    def build_head(self, name: str, backbone: nn.Module | None = None) -> nn.Module:
        """The head ``name`` with its weights loaded; pre-training heads need the backbone
        whose word embeddings their LM decoder shares."""
        if name not in self.heads_state:
            raise CheckpointError(
                f"{self.report.source}: no '{name}' head in this checkpoint "
                f"(it has: {', '.join(self.heads_state) or 'none'})"
            )
        head = self.family.empty_head(self.head_type(name), self.heads_state[name], self.config,
                                      backbone)
        missing, _ = load_state(head, self.heads_state[name], self.report.source)
        if missing:
            raise CheckpointError(f"{self.report.source}: head '{name}' misses {preview(missing)}")
        return head

    def check(self) -> None:
        """Fill the report's missing / unexpected keys and fail on a shape mismatch or an
        answer list that does not fit a head, without allocating any weights."""
        self._check_answers()
        source = self.report.source
        with torch.device("meta"):
            backbone = self.family.backbone_class(self.config)
            missing, unexpected = compare_state(backbone.state_dict(), self.backbone_state, source)
            self.report.missing += missing
            self.report.unexpected += unexpected
            for name, state in self.heads_state.items():
                kind = self.head_type(name)
                if kind not in self.family.head_types.values():
                    self.report.notes.append(f"head '{name}' ({kind}) not checked")
                    continue
                head = self.family.empty_head(kind, state, self.config, backbone)
                missing, unexpected = compare_state(head.state_dict(), state, source)
                self.report.missing += [f"{name}: {k}" for k in missing]
                self.report.unexpected += [f"{name}: {k}" for k in unexpected]

    def _check_answers(self) -> None:
        if self.answers is None:
            return
        for name, state in self.heads_state.items():
            key = self.family.answer_rows.get(self.head_type(name))
            weight = state.get(key) if key else None
            if weight is not None and weight.shape[0] != len(self.answers):
                raise CheckpointError(
                    f"{self.report.source}: {len(self.answers)} answers but the '{name}' head "
                    f"has {weight.shape[0]} outputs; pass the answer list the model was trained with"
                )


def load_state(
    module: nn.Module, state: Mapping[str, Tensor], source: str
) -> tuple[list[str], list[str]]:
    """Copy ``state`` into ``module``; returns (missing, unexpected) keys.

    A tensor whose shape differs from the module's raises CheckpointError naming the key and
    both shapes.
    """
    missing, unexpected = compare_state(module.state_dict(), state, source)
    module.load_state_dict(dict(state), strict=False)
    return missing, unexpected


def compare_state(
    own: Mapping[str, Tensor], state: Mapping[str, Tensor], source: str
) -> tuple[list[str], list[str]]:
    """(missing, unexpected) keys of ``state`` against a model's ``own`` state; CheckpointError
    naming the key and both shapes on a shape mismatch."""
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise CheckpointError(
                f"{source}: key '{key}' has shape {tuple(value.shape)} in the checkpoint but "
                f"{tuple(own[key].shape)} in the model; the config does not match the weights"
            )
    return [k for k in own if k not in state], [k for k in state if k not in own]


def read_json(path: Path, understood: str = "") -> Any:
    """A JSON file's content; CheckpointError naming the file (and line) otherwise."""
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist" + (f"; {understood}" if understood else ""))
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc


def read_hf_weights(directory: Path, understood: str = "") -> dict[str, Tensor]:
    """The tensors of an HF model directory: safetensors or ``pytorch_model.bin``, single or
    sharded (``*.index.json``); pickles are read with ``torch.load(weights_only=True)``."""
    for name in HF_WEIGHT_FILES:
        path = directory / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return read_state_dict(path)
        index = read_json(path)
        shards = sorted(set(index.get("weight_map", {}).values())) if isinstance(index, dict) else []
        if not shards:
            raise CheckpointError(f"{path}: no 'weight_map' entries; the index is damaged")
        state: dict[str, Tensor] = {}
        for shard in shards:
            # An index names files beside it; a path that leaves the directory is refused.
            if not isinstance(shard, str) or Path(shard).is_absolute() or ".." in Path(shard).parts:
                raise CheckpointError(f"{path}: shard {shard!r} points outside {directory}; "
                                      "an index may only name files in its own directory")
            state.update(read_state_dict(directory / shard))
        return state
    raise CheckpointError(
        f"{directory}: no weights file (looked for {', '.join(HF_WEIGHT_FILES)})"
        + (f"; {understood}" if understood else "")
    )


def answers_from_hf(hf: Mapping[str, Any]) -> list[str] | None:
    """Answer strings stored as ``id2label`` (None when absent or only placeholder names)."""
    id2label = hf.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return None
    labels = [id2label[k] for k in sorted(id2label, key=int)]
    if all(label == f"LABEL_{i}" for i, label in enumerate(labels)):
        return None
    return [str(label) for label in labels]


def answers_to_hf(answers: list[str] | None) -> dict[str, Any]:
    """``id2label`` / ``label2id`` entries of an HF config for ``answers`` (none without)."""
    if answers is None:
        return {}
    return {"id2label": {str(i): a for i, a in enumerate(answers)},
            "label2id": {a: i for i, a in enumerate(answers)}}


def matching_preset(presets: Mapping[str, Mapping[str, Any]], values: Mapping[str, Any]) -> str:
    """The preset whose sizes ``values`` has, else "custom"."""
    for name, sizes in presets.items():
        if all(values.get(k) == v for k, v in sizes.items()):
            return name
    return "custom"


def rename_layer_norm(key: str) -> str:
    """``LayerNorm.gamma/beta`` (early BERT ports) as ``LayerNorm.weight/bias``."""
    if key.endswith((".gamma", ".beta")) and ("LayerNorm" in key or "layer_norm" in key):
        return key.rsplit(".", 1)[0] + (".weight" if key.endswith(".gamma") else ".bias")
    return key


def contiguous(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Detached contiguous tensors, as safetensors wants them."""
    return {k: v.detach().contiguous() for k, v in state.items()}


def preview(keys: list[str], n: int = 3) -> str:
    """The first ``n`` keys, and how many more there are."""
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")
