"""The pre-training corpus's part of the synthetic world: ``pretrain/{train,val}.json``.

Built after the other parts, from what they offer (see :mod:`vlbench.data.synth.parts`):
each offered scene gets true captions plus the QA pairs offered for its image, in
LXMERT's pre-training JSON (:mod:`vlbench.tasks.pretrain.synth_corpus`). The files go
under the manifest key ``pretrain``; the part draws no scenes of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vlbench.data.synth.config import WorldConfig
from vlbench.data.synth.parts import NextId, PartData, QAPair, RngFor, WorldPart
from vlbench.tasks.pretrain.synth_corpus import captions, pretrain_entry, write_pretrain

SPLITS = ("train", "val")


@dataclass
class CorpusData(PartData):
    """The corpus records per split."""

    corpus: dict[str, list[dict]]

    def write(self, out_dir: Path) -> dict:
        return write_pretrain(out_dir, self.corpus)

    def split_counts(self) -> dict:
        return {s: {"images": len(v),
                    "sentences": sum(len(x) for e in v for x in e["sentf"].values())}
                for s, v in self.corpus.items()}


class PretrainPart(WorldPart):
    """Last in order, so every other part has offered its scenes and QA pairs."""

    name = "pretrain"
    order = 100
    streams = {"captions": 4}

    def build(self, cfg: WorldConfig, rng_for: RngFor, next_oid: NextId,
              earlier: Sequence[PartData]) -> CorpusData:
        rng = rng_for("captions")  # one stream, drawn split by split, part by part
        corpus: dict[str, list[dict]] = {}
        for split in SPLITS:
            qa_by_image: dict[str, dict[str, list[QAPair]]] = {}
            for data in earlier:
                for image_id, sources in data.pretraining_pairs(split).items():
                    qa_by_image.setdefault(image_id, {}).update(sources)
            corpus[split] = [
                pretrain_entry(scene, captions(scene, rng, cfg.captions_per_image),
                               qa_by_image.get(scene.image_id, {}))
                for data in earlier for scene in data.pretraining_scenes(split)
            ]
        return CorpusData(corpus)


PRETRAIN_PART = PretrainPart()
