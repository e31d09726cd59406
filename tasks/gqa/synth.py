"""GQA's part of the synthetic world: scenes, balanced questions and the official GQA files.

The files (``gqa/...``, listed in :mod:`vlbench.tasks.gqa.synth_writer`) go under the
manifest key ``gqa``; rendered images go where GQA's ``images.zip`` puts them,
``gqa/images/{imageId}.png``. The train and val scenes, with their questions as QA pairs, are
offered to the pre-training corpus of the same split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlbench.data.synth.config import WorldConfig
from vlbench.data.synth.parts import NextId, PartData, QAPair, RngFor, WorldPart
from vlbench.data.synth.scene import Scene
from vlbench.tasks.gqa.synth_questions import FAMILIES
from vlbench.tasks.gqa.synth_writer import GQA_SPLITS, GQAData, build_gqa, gqa_stats, write_gqa

#: the source name of GQA's questions in the pre-training corpus
PRETRAINING_SOURCE = "synth_gqa"
_PRETRAINING_SPLITS = ("train", "val")


@dataclass
class GQAPartData(PartData):
    """The built GQA splits, seen through the world-part protocol."""

    data: GQAData
    image_folder = "gqa/images"

    def scenes(self) -> list[Scene]:
        return [s for split in GQA_SPLITS for s in self.data.scenes[split]]

    def image_files(self) -> dict[str, Scene]:
        return {f"{s.image_id}.png": s for s in self.scenes()}

    def write(self, out_dir: Path) -> dict:
        return write_gqa(out_dir, self.data)

    def split_counts(self) -> dict:
        return {s: {"images": len(self.data.scenes[s]), "questions": len(self.data.questions[s])}
                for s in GQA_SPLITS}

    def stats(self) -> dict:
        return gqa_stats(self.data)

    def pretraining_scenes(self, split: str) -> list[Scene]:
        return list(self.data.scenes[split]) if split in _PRETRAINING_SPLITS else []

    def pretraining_pairs(self, split: str) -> dict[str, dict[str, list[QAPair]]]:
        out: dict[str, dict[str, list[QAPair]]] = {}
        if split not in _PRETRAINING_SPLITS:
            return out
        for q in self.data.questions[split]:
            out.setdefault(q.image_id, {}).setdefault(PRETRAINING_SOURCE, []).append(
                (q.question, {q.answer: 1.0}))
        return out


class GQAPart(WorldPart):
    """GQA's scenes come first: the detector sees them before every other part's."""

    name = "gqa"
    order = 0
    streams = {"scenes": 1, "questions": 2}
    first_object_id = 1_000_000

    def build(self, cfg: WorldConfig, rng_for: RngFor, next_oid: NextId,
              earlier: Sequence[PartData]) -> GQAPartData:
        return GQAPartData(build_gqa(cfg, rng_for("scenes"), rng_for("questions"), next_oid))

    def generator_params(self) -> dict[str, Any]:
        # The family shares shape every question, yet live outside WorldConfig.
        return {"families": {name: share for name, (_, share) in FAMILIES.items()}}


GQA_PART = GQAPart()
