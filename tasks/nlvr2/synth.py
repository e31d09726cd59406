"""NLVR2's part of the synthetic world: statements over image pairs, in NLVR2's files.

The files (``nlvr2/...``, listed in :mod:`vlbench.tasks.nlvr2.synth_writer`) go under the
manifest key ``nlvr2``. Nothing is offered to the pre-training corpus (LXMERT pre-trains on
COCO and Visual Genome images, never NLVR2's).
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

    def scenes(self) -> list[Scene]:
        return self.data.all_scenes()

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
