"""VQA v2's part of the synthetic world: COCO-style scenes, ten-answer questions, official files.

The files (``vqa/...``, listed in :mod:`vlbench.tasks.vqa.synth_writer`) go under the
manifest key ``vqa``; rendered images go in COCO's layout,
``vqa/images/{train2014,val2014}/COCO_{subtype}_{id:012d}.png``. As in LXMERT, train2014 and
nominival images (with their questions as QA pairs) are offered to the pre-training corpus's
train split and the minival images, without their questions, to its val split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vlbench.data.synth.config import WorldConfig
from vlbench.data.synth.parts import NextId, PartData, QAPair, RngFor, WorldPart
from vlbench.data.synth.scene import Scene
from vlbench.tasks.vqa.synth_writer import VQAData, build_vqa, vqa_stats, write_vqa

#: the source name of VQA's questions in the pre-training corpus
PRETRAINING_SOURCE = "synth_vqa"


@dataclass
class VQAPartData(PartData):
    """The built VQA subtypes, seen through the world-part protocol."""

    data: VQAData
    image_folder = "vqa/images"

    def scenes(self) -> list[Scene]:
        return self.data.all_scenes()

    def image_files(self) -> dict[str, Scene]:
        return {f"{subtype}/{s.image_id}.png": s for subtype in ("train2014", "val2014")
                for s in self.data.scenes[subtype]}

    def write(self, out_dir: Path) -> dict:
        return write_vqa(out_dir, self.data)

    def split_counts(self) -> dict:
        return self.data.split_counts()

    def stats(self) -> dict:
        return vqa_stats(self.data)

    def pretraining_scenes(self, split: str) -> list[Scene]:
        return self.data.pretrain_scenes(split) if split in ("train", "val") else []

    def pretraining_pairs(self, split: str) -> dict[str, dict[str, list[QAPair]]]:
        if split != "train":  # minival's questions stay out: VQA is scored on them
            return {}
        return {image_id: {PRETRAINING_SOURCE: pairs}
                for image_id, pairs in self.data.pretrain_pairs().items()}


class VQAPart(WorldPart):
    """VQA's scenes follow GQA's in the detector's order."""

    name = "vqa"
    order = 1
    streams = {"scenes": 5, "questions": 6}
    first_object_id = 5_000_000

    def build(self, cfg: WorldConfig, rng_for: RngFor, next_oid: NextId,
              earlier: Sequence[PartData]) -> VQAPartData:
        return VQAPartData(build_vqa(cfg, rng_for("scenes"), rng_for("questions"), next_oid))


VQA_PART = VQAPart()
