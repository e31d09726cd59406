"""What a task contributes to the synthetic world: its "world part".

A task class names its part in the class attribute ``synthetic_part``. The world generator
(:mod:`vlbench.data.synth.world`) knows no task: it reads the parts off the task registry,
builds them in ``order``, runs the detector over the scenes they return, writes their
files and gathers their split counts and statistics into ``manifest.json``.

A part whose scenes are pictured names the folder its rendered images go in and each
image's file there, in its task's own layout (:mod:`vlbench.data.synth.images` draws them).

A part may also offer material to the parts built after it (today, the pre-training
corpus): scenes to caption and question-answer pairs per image, by pre-training split
(``"train"`` or ``"val"``). A consumer takes whatever the earlier parts offer and never
names another task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vlbench.data.synth.config import WorldConfig
from vlbench.data.synth.scene import Scene

#: a part's named random stream -> its generator (the stream names are the part's own)
RngFor = Callable[[str], np.random.Generator]
#: the next object id of a part, as a string
NextId = Callable[[], str]
#: a question (or sentence) with its soft answer label
QAPair = tuple[str, dict[str, float]]


class PartData:
    """What a part built: its scenes, files, split counts and statistics.

    Defaults suit a part without scenes, statistics or anything to offer to later parts.
    """

    def scenes(self) -> list[Scene]:
        """Every scene of the part in a fixed order (the detector's input, whose order
        decides the feature bytes)."""
        return []

    def write(self, out_dir: Path) -> dict:
        """Write the part's files under ``out_dir``; returns the manifest's ``files`` entry
        (nested dicts of paths relative to ``out_dir``)."""
        raise NotImplementedError(f"{type(self).__name__} writes no files")

    def split_counts(self) -> dict:
        """The manifest's ``splits`` entry: sizes per split."""
        raise NotImplementedError(f"{type(self).__name__} counts no splits")

    def stats(self) -> dict | None:
        """The manifest's ``stats`` entry (baselines, oracle), or None for none."""
        return None

    #: where the part's rendered images go (relative to the world), or None: none are drawn
    image_folder: ClassVar[str | None] = None

    def image_files(self) -> dict[str, Scene]:
        """Each rendered image's path (relative to ``image_folder``) -> its scene."""
        return {}

    def pretraining_scenes(self, split: str) -> list[Scene]:
        """Scenes this part offers to the pre-training corpus split ``split``."""
        return []

    def pretraining_pairs(self, split: str) -> dict[str, dict[str, list[QAPair]]]:
        """Image id -> {source name: [(question, label)]} offered to the corpus split ``split``."""
        return {}


class WorldPart:
    """One task's share of the synthetic world (a task class's ``synthetic_part``).

    ``streams`` and ``first_object_id`` are fixed numbers, not positions: a world keeps its
    bytes when parts are added or removed, as long as each part keeps its numbers.
    """

    #: key of the part in the manifest's ``files``, ``splits`` and ``stats``
    name: ClassVar[str]
    #: parts are built, and their scenes detected, in increasing order
    order: ClassVar[int]
    #: the part's named random streams -> stream numbers, unique across the world
    streams: ClassVar[Mapping[str, int]] = {}
    #: object ids of the part's scenes count up from here (unique across the world)
    first_object_id: ClassVar[int] = 0

    def build(self, cfg: WorldConfig, rng_for: RngFor, next_oid: NextId,
              earlier: Sequence[PartData]) -> PartData:
        """Draw the part's data; ``earlier`` holds what the parts of lower order built."""
        raise NotImplementedError(f"{type(self).__name__} builds nothing")

    def generator_params(self) -> dict[str, Any]:
        """Generator settings outside :class:`WorldConfig` (they key the cached world)."""
        return {}
