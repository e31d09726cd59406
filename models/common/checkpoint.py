"""The family-independent half of checkpoint conversion.

A family's ``convert.py`` knows its foreign layouts (which keys are the backbone, which a head,
how its config maps to HF's); everything else lives here: reading HF directories (safetensors
or ``pytorch_model.bin``, sharded or not, pickles only through the safe loader), the
:class:`LoadReport` of missing / unexpected keys, shape checks that name the key, a
:class:`LoadedCheckpoint` that rebuilds the backbone and heads without random initialisation,
and, through a family's :class:`CheckpointFamily`, the steps every family takes alike: the
outline of a load, the shared heads, reading and writing vlbench's own layout and writing an
HF directory. Families that read only HF and vlbench directories also share telling the two
apart (:func:`detect_hf_or_native`) and sorting HF keys (:func:`split_hf_state`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from vlbench.engine.layout import read_checkpoint, write_checkpoint
from vlbench.errors import CheckpointError
from vlbench.results.records import replaced_when_done, write_text_atomic

from ..heads import NLVR2Head, QAHead
from .config import PresetConfig
from .pretraining import PretrainingHeads
from .safe_load import read_state_dict

if TYPE_CHECKING:
    from vlbench.engine.backbone import ModelSpec

    from .hf_config import HfConfigMap

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
DIRECTORY_FORMATS = ("hf", "vlbench")  # layouts read from a directory, also when given a file in it
QA_HEAD_ROWS = "logit_fc.3.weight"  # the shared QAHead's classifier: a row per answer
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


#: ``build(state, config)``: a fresh head of a class only one family has, sized as ``state``
OwnHead = Callable[[Mapping[str, Tensor], Any], nn.Module]
#: ``read(path)``: the checkpoint of one layout at ``path``, unchecked
Reader = Callable[[Path], "LoadedCheckpoint"]
#: ``hf_parts(kind, head, config, answers, say)``: a family's part of an HF export of ``kind``,
#: the head's tensors under HF's names (none for "model") and the ``config.json`` dict
HfParts = Callable[[str, nn.Module | None, Any, list[str] | None, Callable[[str], None] | None],
                   tuple[dict[str, Tensor], dict[str, Any]]]


@dataclass(frozen=True)
class CheckpointFamily:
    """What the shared conversion needs from a family, and the steps every family takes alike.

    ``spec`` is the family's registered spec (its name, config and backbone classes);
    ``head_types`` maps the standard head names ("qa", "pretraining", ...) to class names;
    ``own_heads`` builds the head classes of this family alone (the shared ``QAHead`` and
    ``NLVR2Head`` and the family's ``pretraining_class`` are built here) and
    ``own_answer_rows`` names, for such a class, the key whose rows are the answers;
    ``understood`` names the layouts the family reads, for error messages. An HF export
    writes the kinds of ``hf.architectures``, with the backbone under ``hf_prefix`` beside a
    head and the rest from ``hf_parts``.
    """

    spec: ModelSpec
    pretraining_class: type[PretrainingHeads]
    head_types: Mapping[str, str]
    hf: HfConfigMap
    hf_prefix: str
    hf_parts: HfParts
    own_heads: Mapping[str, OwnHead] = field(default_factory=dict)
    own_answer_rows: Mapping[str, str] = field(default_factory=dict)
    understood: str = ""

    @property
    def family(self) -> str:
        """The family's name, as checkpoints store it ("lxmert")."""
        return self.spec.family

    @property
    def backbone_class(self) -> type[nn.Module]:
        return self.spec.backbone_class

    @property
    def config_class(self) -> type[PresetConfig]:
        return self.spec.config_class

    @property
    def answer_rows(self) -> dict[str, str]:
        """Head class name -> the key whose rows are the answers (shared heads included)."""
        return {"QAHead": QA_HEAD_ROWS,
                self.pretraining_class.__name__: f"answer_head.{QA_HEAD_ROWS}",
                **self.own_answer_rows}

    @property
    def title(self) -> str:
        """The family's name as messages spell it ("LXMERT")."""
        return self.config_class.FAMILY

    def empty_head(self, kind: str, state: Mapping[str, Tensor], config: Any,
                   backbone: nn.Module | None) -> nn.Module:
        """A freshly initialised head of class ``kind``, sized as ``state``; pre-training heads
        need the ``backbone`` whose word embeddings their LM decoder shares."""
        if kind in self.own_heads:
            return self.own_heads[kind](state, config)
        if kind == "QAHead":
            return QAHead(config.hidden_size, stored_rows(state, QA_HEAD_ROWS),
                          config.layer_norm_eps, config.initializer_range)
        if kind == "NLVR2Head":
            return NLVR2Head(config.hidden_size, config.layer_norm_eps, config.initializer_range)
        if kind == self.pretraining_class.__name__:
            if backbone is None:
                raise CheckpointError("the pre-training heads need the backbone they are tied to")
            return self.pretraining_class.sized_as(state, config, backbone)
        known = {*self.head_types.values(), *self.own_heads, "QAHead", "NLVR2Head",
                 self.pretraining_class.__name__}
        raise CheckpointError(
            f"cannot build a head of class '{kind}'; known: {', '.join(sorted(known))}")

    def load(
        self,
        path: str | Path,
        fmt: str,
        readers: Mapping[str, Reader],
        detect: Callable[[Path], str],
        answers: str | Path | list[str] | None = None,
        resolve: Callable[[Path], Path] | None = None,
    ) -> LoadedCheckpoint:
        """Read ``path`` with the reader of layout ``fmt`` ("auto": the one ``detect`` names)
        and check it; ``answers`` (a list, or a JSON file of one) replaces its answer list.

        ``readers`` maps each layout to its reader, in the order messages list them;
        ``resolve`` maps a path as the user wrote it to the one to read. The directory
        layouts ("hf", "vlbench") are read from the directory of a file given inside one.
        """
        if fmt not in ("auto", *readers):
            raise CheckpointError(
                f"unknown checkpoint format '{fmt}'; use auto, {', '.join(readers)}")
        p = resolve(Path(path)) if resolve else Path(path)
        if not p.exists():
            raise CheckpointError(f"checkpoint {path} does not exist; check the path")
        fmt = detect(p) if fmt == "auto" else fmt
        if p.is_file() and fmt in DIRECTORY_FORMATS:
            p = p.parent
        loaded = readers[fmt](p)
        if answers is not None:
            loaded.answers = read_answers(answers, self.understood)
        loaded.check()
        return loaded

    def load_native(self, directory: Path) -> LoadedCheckpoint:
        """A checkpoint in vlbench's layout (``vlbench.engine.layout``, earlier layouts
        included); CheckpointError if it holds another family's model."""
        stored = read_checkpoint(directory)
        if stored.family != self.family:
            raise CheckpointError(f"{directory}: a {stored.family} checkpoint, not {self.title}")
        try:
            config = self.config_class.from_dict(stored.model_config)
        except Exception as exc:
            raise CheckpointError(f"{directory / CONFIG_FILE}: {exc}") from exc
        report = LoadReport(str(directory), "vlbench")
        backbone, heads, report.unexpected = stored.split()
        return LoadedCheckpoint(self, stored.model, config, backbone, heads, stored.answers,
                                report, dict(stored.heads))

    def save_native(
        self,
        out_dir: str | Path,
        backbone: nn.Module,
        heads: Mapping[str, nn.Module] | None = None,
        answers: list[str] | None = None,
        model_name: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write a checkpoint in vlbench's layout (``vlbench.engine.layout``).

        ``model_name`` defaults to the family's name; ``extra`` adds JSON fields to
        config.json (e.g. the run that produced the weights).
        """
        heads = dict(heads or {})
        state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
        for name, head in heads.items():
            state.update({f"heads.{name}.{k}": v for k, v in head.state_dict().items()})
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_checkpoint(out, family=self.family,
                         model=self.family if model_name is None else model_name,
                         config={"model": backbone.config.to_dict()}, heads=heads,
                         answers=answers, extra=extra)
        write_weights(out, state)
        return out

    def export_hf(
        self,
        backbone: nn.Module,
        heads: Mapping[str, nn.Module] | None,
        out_dir: str | Path,
        kind: str = "model",
        answers: list[str] | None = None,
        say: Callable[[str], None] | None = None,
    ) -> Path:
        """Write a directory that ``transformers.<hf.architectures[kind]>.from_pretrained``
        loads.

        ``kind`` "model" writes the backbone alone; any other kind needs the head of that
        name ("qa": ``heads["qa"]``, "pretraining": ``heads["pretraining"]``, "nlvr2": ...);
        ``say`` names what HF's class leaves out.
        """
        if kind not in self.hf.architectures:
            raise CheckpointError(
                f"unknown export kind '{kind}'; use {', '.join(self.hf.architectures)}")
        head = None
        if kind == "model":
            state = dict(backbone.state_dict())
        else:
            head_name = kind  # a head kind is exported from the head of that name
            head = (heads or {}).get(head_name)
            if head is None:
                raise CheckpointError(f"export kind '{kind}' needs heads['{head_name}']")
            # HF's task models keep the backbone under a prefix
            state = {f"{self.hf_prefix}{k}": v for k, v in backbone.state_dict().items()}
        head_state, hf_config = self.hf_parts(kind, head, backbone.config, answers, say)
        state.update(head_state)
        return write_hf_dir(out_dir, hf_config, state)


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


def detect_hf_or_native(path: str | Path, family: str, model_type: str, name: str,
                        understood: str) -> str:
    """Which layout the directory ``path`` (or a config / weights file in it) holds: "hf"
    (an HF config.json of ``model_type``) or "vlbench" (a checkpoint of ``family``);
    CheckpointError, naming the family as ``name`` and what is ``understood``, if neither."""
    p = Path(path)
    if p.is_file() and (p.name == CONFIG_FILE or p.name in HF_WEIGHT_FILES):
        p = p.parent
    config_path = p / CONFIG_FILE
    if not p.is_dir() or not config_path.is_file():
        raise CheckpointError(f"{p}: no {CONFIG_FILE} in this directory; {understood}")
    meta = read_json(config_path)
    if isinstance(meta, dict) and "model" in meta and "config" in meta:
        found = read_checkpoint(p).family
        if found != family:
            raise CheckpointError(f"{p}: a {found} checkpoint, not {name}")
        return "vlbench"
    if isinstance(meta, dict) and meta.get("model_type") == model_type:
        return "hf"
    raise CheckpointError(f"{config_path}: not a {name} config; {understood}")


def hf_architecture(hf_config: Mapping[str, Any]) -> str | None:
    """The first of an HF config's ``architectures``, or None when it names none."""
    architectures = hf_config.get("architectures") or []
    return architectures[0] if architectures else None


def split_hf_state(state: Mapping[str, Tensor], report: LoadReport, *, name: str, prefix: str,
                   backbone_roots: tuple[str, ...], derived: tuple[str, ...],
                   groups: Mapping[str, Callable[[str], bool]], understood: str
                   ) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]]:
    """Sort an HF state dict's keys into the backbone (``prefix`` dropped) and ``groups``.

    Keys are read without DataParallel's ``module.`` and with old LayerNorm names; a key in
    ``derived`` (a rebuilt buffer) is skipped; a key under ``backbone_roots`` is the
    backbone's; any other goes to the first group whose test takes it, or is reported as
    unexpected. CheckpointError, naming the family as ``name``, if no backbone key is found.
    """
    backbone: dict[str, Tensor] = {}
    sorted_keys: dict[str, dict[str, Tensor]] = {group: {} for group in groups}
    for raw_key, value in state.items():
        key = rename_layer_norm(raw_key.removeprefix("module."))
        if key.startswith(prefix) and key.removeprefix(prefix).startswith(backbone_roots):
            key = key.removeprefix(prefix)
        if key in derived:
            continue
        if key.startswith(backbone_roots):
            backbone[key] = value
            continue
        group = next((g for g, takes in groups.items() if takes(key)), None)
        if group is None:
            report.unexpected.append(raw_key)
        else:
            sorted_keys[group][key] = value
    if not backbone:
        raise CheckpointError(
            f"{report.source}: no {name} backbone weights found (first keys: "
            f"{preview(list(state))}); {understood}"
        )
    return backbone, sorted_keys


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


def read_answers(answers: str | Path | list[str], understood: str = "") -> list[str]:
    """An answer list, given as one or as a JSON file of one: a list of strings
    (``trainval_label2ans.json``) or of ``{"ans": ...}`` objects (``all_ans.json``)."""
    if isinstance(answers, list):
        return [str(a) for a in answers]
    data = read_json(Path(answers), understood)
    if isinstance(data, list) and all(isinstance(a, str) for a in data):
        return data
    if isinstance(data, list) and all(isinstance(a, dict) and "ans" in a for a in data):
        return [str(a["ans"]) for a in data]
    raise CheckpointError(f"{answers}: expected a JSON list of answer strings")


def stored_rows(state: Mapping[str, Tensor], key: str) -> int:
    """Rows of ``state[key]`` (a classifier's outputs); 1 when the state lacks it."""
    return state[key].shape[0] if key in state else 1


def write_hf_dir(out_dir: str | Path, hf_config: Mapping[str, Any],
                 state: Mapping[str, Tensor]) -> Path:
    """Write an HF model directory: ``config.json`` and ``model.safetensors``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / CONFIG_FILE, json.dumps(hf_config, indent=2) + "\n")
    write_weights(out, state)
    return out


def write_weights(directory: Path, state: Mapping[str, Tensor]) -> None:
    """Write ``state`` as the directory's ``model.safetensors`` (with the ``format: pt``
    metadata HF's loaders check), through a temporary file: a kill never leaves half of it."""
    with replaced_when_done(directory / WEIGHTS_FILE) as tmp:
        save_file(contiguous(state), str(tmp), metadata={"format": "pt"})


def contiguous(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Detached contiguous tensors, as safetensors wants them."""
    return {k: v.detach().contiguous() for k, v in state.items()}


def preview(keys: list[str], n: int = 3) -> str:
    """The first ``n`` keys, and how many more there are."""
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")
