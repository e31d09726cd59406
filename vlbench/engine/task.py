"""The protocol a task plugin meets the engine through.

The engine never looks inside a task: it asks the plugin for examples, batches, a
model around the backbone, a loss, predictions and official scores. ``tasks/`` holds
the implementations (VQA, GQA, NLVR2); a third-party task subclasses ``Task`` and
registers itself with ``@register_task("name")``.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Container, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from vlbench.data.source import DataSource
from vlbench.engine.backbone import REGION_INPUTS, BackboneOutput, ModelSpec, backbone_inputs


class TaskModel(nn.Module):
    """A backbone and the task's named heads: weights ``backbone.*`` and ``heads.<name>.*``.

    Heads are called with the backbone output and the batch (``head(output, batch)``): most
    read ``output.pooled``; a family's own head may read more (e.g. the last word's state).
    """

    def __init__(self, backbone: nn.Module, heads: dict[str, nn.Module]):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)

    def encode(self, batch: dict[str, Any]) -> BackboneOutput:
        return self.backbone(**backbone_inputs(batch))


class Task(ABC):
    """A benchmark task: data in its official formats, a head, a loss, the official metric."""

    config_class: ClassVar[type]
    primary_metric: ClassVar[str] = "accuracy"
    #: how each metric named here is a mean over per-question units, so that statistics can
    #: resample them (written to run.json as ``metric_units``; read-only). A spec is ``{}``
    #: (the mean score of the counted rows), ``{"where": {kind: [category, "!category", ...]}}``
    #: (only counted rows whose ``types[kind]`` is one of the plain categories and none of
    #: the ``!`` ones), and/or ``{"over": "group"}`` (units are the rows' ``group`` keys: a
    #: group is right when all its rows are). Rows say ``"counted": false`` when the official
    #: metric leaves them out. ``per_<kind>.<category>`` breakdowns need no entry.
    metric_units: ClassVar[dict[str, dict[str, Any]]] = {"accuracy": {}}
    #: the ``types`` kinds whose categories ``vlbench compare`` breaks differences down by
    #: (written to run.json as ``category_kinds``)
    category_kinds: ClassVar[tuple[str, ...]] = ()
    prediction_suffix: ClassVar[str] = ".json"
    #: bump when a code change alters this task's results (``vlbench train --reuse``)
    revision: ClassVar[int] = 1
    #: what the backbone must provide (capabilities of ``vlbench.engine.backbone``), checked
    #: before any data is read: by default the task feeds region features, so a backbone
    #: must read them
    requires: ClassVar[frozenset[str]] = frozenset({REGION_INPUTS})
    #: the image inputs the task can feed, preferred first: ``REGION_INPUTS`` (region
    #: features and boxes) and/or ``PIXEL_INPUTS`` (the images). A task that can feed either
    #: leaves them out of ``requires`` and asks :meth:`image_input` in ``build_model``.
    image_inputs: ClassVar[tuple[str, ...]] = (REGION_INPUTS,)
    #: images per example, fed as that many adjacent (text, image) rows (NLVR2: 2); a
    #: model config sized by it learns of it through ``DataFacts``
    images_per_example: ClassVar[int] = 1
    #: this task's part of the embedded synthetic world (``vlbench.data.synth.parts``), or None
    synthetic_part: ClassVar[Any] = None

    def __init__(self, config: Any, data: DataSource):
        self.config = config
        self.data = data

    # -- configuration -------------------------------------------------------------
    @classmethod
    def default_overrides(cls, data: DataSource) -> dict[str, Any]:
        """Task-level defaults for any config section (``{"train.lr": 1e-5}``)."""
        return {}

    @classmethod
    def synthetic_overrides(cls) -> dict[str, Any]:
        """This task's changes to the CPU-sized recipe of synthetic worlds (applied over it)."""
        return {}

    @property
    @abstractmethod
    def train_split(self) -> str: ...

    @property
    @abstractmethod
    def eval_splits(self) -> list[str]: ...

    # -- data ----------------------------------------------------------------------
    @abstractmethod
    def training_texts(self) -> Iterable[str]:
        """Sentences a WordPiece vocabulary is learned from when none is given."""

    @abstractmethod
    def setup(self, tokenizer: Any, features: Any, *, max_boxes: int,
              state: dict[str, Any] | None = None) -> None:
        """Read the splits and build what training needs (e.g. the answer vocabulary).

        ``features`` is the feature store (``features.batch(img_ids, max_boxes)`` gives padded
        regions, boxes and their mask); ``max_boxes`` is ``data.max_boxes``, the most regions
        a batch holds per image. ``state`` is what ``state()`` returned for an earlier run:
        reuse it so a resumed or re-evaluated run sees the same label space.
        """

    def state(self) -> dict[str, Any]:
        """JSON-able task state saved with the run (answer vocabulary, ...)."""
        return {}

    @abstractmethod
    def examples(self, split: str) -> Sequence[Any]: ...

    @abstractmethod
    def collate(self, examples: Sequence[Any]) -> dict[str, Any]:
        """Examples -> a batch of tensors (backbone inputs, targets) plus ids."""

    def batch_groups(self, examples: Sequence[Any]) -> list[str] | None:
        """One key per training example: examples sharing a key are kept in one batch
        (the batch size allowing), or None for a plain shuffle."""
        return None

    def set_epoch(self, epoch: int) -> None:
        """Called before each training epoch (schedules such as "QA only from epoch K")."""
        return None

    @classmethod
    def scene_objects(cls, data: DataSource, img_ids: Container[str], limit: int
                      ) -> dict[str, tuple[np.ndarray, list[dict[str, str]]]]:
        """Annotated objects of up to ``limit`` images among ``img_ids``, for probes: per image
        the boxes (N, 4: x1, y1, x2, y2 divided by the image width/height) and each object's
        properties (``category`` and attributes such as ``color``). Empty when the task's data
        holds no such annotations (most tasks)."""
        return {}

    def image_ids(self) -> set[str]:
        """Image ids every split refers to (checked against the feature store up front)."""
        return set()

    # -- model ---------------------------------------------------------------------
    @abstractmethod
    def build_model(self, backbone: nn.Module, spec: ModelSpec) -> nn.Module:
        """Wrap the backbone with this task's head; ``model(batch)`` returns logits.

        The task model keeps the backbone as ``backbone`` and its heads in ``heads`` (an
        ``nn.ModuleDict``), so its weights are ``backbone.*`` and ``heads.<name>.*`` (the one
        checkpoint layout). ``spec`` is the backbone's family: ask it for family-specific heads
        (``spec.head``) and refuse what the backbone cannot serve (``spec.require``).
        """

    def image_input(self, spec: ModelSpec, who: str) -> str:
        """The image input to feed ``spec``'s backbone: the first of ``image_inputs`` it reads
        (``REGION_INPUTS`` or ``PIXEL_INPUTS``); refused with the family's reason when it
        reads none. ``who`` names the task in that refusal ("task 'gqa'")."""
        for kind in self.image_inputs:
            if kind in spec.provides:
                return kind
        spec.require(frozenset(self.image_inputs[:1]), who)
        raise AssertionError("unreachable: require refused")  # pragma: no cover

    def input_record(self, spec: ModelSpec, model_config: Any) -> dict[str, Any]:
        """What :meth:`data_record` will hold once ``build_model`` has made a model of ``spec``
        with ``model_config``, known before any run starts (for its reuse key); ``{}`` when
        the task feeds only the feature store."""
        return {}

    def data_record(self) -> dict[str, Any]:
        """What the run records about the data the task reads besides the feature store and
        its examples, e.g. ``{"images": {"folder", "size", "fingerprint"}}`` when it feeds
        pixels (added to run.json's ``data`` and to its fingerprint); ``{}`` when nothing."""
        return {}

    def init_from(self, model: nn.Module, source: Any, say: Any = print) -> dict[str, Any]:
        """Start ``model``'s heads from a checkpoint's (``source``: a ``StoredCheckpoint`` whose
        backbone was already loaded); returns what was transferred, for the run record."""
        return {}

    @abstractmethod
    def loss(self, logits: Any, batch: dict[str, Any]) -> torch.Tensor | dict[str, torch.Tensor]:
        """The training loss, or named (weighted) losses that the trainer sums and logs."""

    @abstractmethod
    def predict(self, logits: torch.Tensor, batch: dict[str, Any]) -> list[tuple[str, Any]]:
        """Logits -> ``(example id, prediction)`` pairs in the submission's terms."""

    # -- scoring -------------------------------------------------------------------
    @abstractmethod
    def score(self, split: str, predictions: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Official metrics (percent) and one record per question (see the run contract)."""

    @abstractmethod
    def write_predictions(self, predictions: dict[str, Any], path: Path) -> Path:
        """Write predictions in the official submission format; returns the file written."""

    @abstractmethod
    def read_predictions(self, path: Path) -> dict[str, Any]:
        """Read a submission file back (for re-scoring stored predictions)."""

    def baselines(self, split: str) -> dict[str, dict[str, float]]:
        """Text-only or trivial baselines on ``split`` (at least ``prior``)."""
        return {}

    # -- scoring files without a run (``vlbench score``) ------------------------------
    #: inputs besides ``--predictions``: option name -> (required, what it is)
    score_inputs: ClassVar[dict[str, tuple[bool, str]]] = {}

    @classmethod
    def score_files(cls, predictions: Path, **inputs: Path | None) -> dict[str, Any]:
        """Official metrics of a submission file against the given annotation files."""
        raise NotImplementedError(f"{cls.__name__} does not score files")


def default_layers(task_cls: type[Task], data: DataSource) -> list[tuple[str, dict[str, Any]]]:
    """The config layers under ``--set``, lowest first: task defaults, data-source defaults,
    then on synthetic data the task's own changes to that recipe."""
    layers = [("task defaults", task_cls.default_overrides(data)),
              ("data-source defaults", data.defaults())]
    if data.synthetic:
        layers.append(("task synthetic defaults", task_cls.synthetic_overrides()))
    return layers


def questions_fingerprint(task: Task) -> str:
    """Content hash of the task's examples alone (questions, labels, image ids): the benchmark
    a run is scored on, whatever visual input it reads. Runs with equal values are ranked
    and compared in one leaderboard section."""
    return "sha256:" + hash_examples(hashlib.sha256(), task).hexdigest()


def hash_examples(h: Any, task: Task) -> Any:
    """Feed ``h`` every example of the task's training and evaluation splits; returns it."""
    for split in [task.train_split, *task.eval_splits]:
        h.update(split.encode())
        for ex in task.examples(split):
            h.update(repr(ex).encode())
    return h
