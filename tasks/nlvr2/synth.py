"""NLVR2's part of the synthetic world: statements over image pairs, in NLVR2's files.

The files (``nlvr2/...``, listed in :mod:`vlbench.tasks.nlvr2.synth_writer`) go under the
manifest key ``nlvr2``; rendered images go in NLVR2's layout,
``nlvr2/images/train/{directory}/{pair}-img{0,1}.png`` and ``nlvr2/images/{dev,test1}/...``.
Nothing is offered to the pre-training corpus (LXMERT pre-trains on COCO and Visual Genome
images, never NLVR2's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vlbench.data.synth.config import WorldConfig
from vlbench.data.synth.parts import NextId, PartData, RngFor, WorldPart
from vlbench.data.synth.scene import Scene
from vlbench.tasks.nlvr2.synth_writer import NLVR2Data, build_nlvr2, nlvr2_stats, write_nlvr2


@dataclass
class NLVR2PartData(PartData):
    """The built NLVR2 splits, seen through the world-part protocol."""

    data: NLVR2Data
    image_folder = "nlvr2/images"

    def scenes(self) -> list[Scene]:
        return self.data.all_scenes()

    def image_files(self) -> dict[str, Scene]:
        out = {}
        for split, examples in self.data.examples.items():
            for e in examples:
                folder = split if e.directory is None else f"{split}/{e.directory}"
                for scene in (e.left, e.right):
                    out[f"{folder}/{scene.image_id}.png"] = scene
        return out

    def write(self, out_dir: Path) -> dict:
        return write_nlvr2(out_dir, self.data)

    def split_counts(self) -> dict:
        return self.data.split_counts()

    def stats(self) -> dict:
        return nlvr2_stats(self.data)


class NLVR2Part(WorldPart):
    """NLVR2's scenes come after GQA's and VQA's in the detector's order."""

    name = "nlvr2"
    order = 2
    streams = {"examples": 7}
    first_object_id = 8_000_000

    def build(self, cfg: WorldConfig, rng_for: RngFor, next_oid: NextId,
              earlier: Sequence[PartData]) -> NLVR2PartData:
        return NLVR2PartData(build_nlvr2(cfg, rng_for("examples"), next_oid))


NLVR2_PART = NLVR2Part()
