"""The pre-training corpus: true captions per image plus the image's QA pairs.

Written as LXMERT's pre-training JSON (``data/lxmert/*.json`` in its repository): a list
of ``{"img_id", "sentf": {source: [sentences]}, "labelf": {source: [{answer: score}]}}``
where caption sources have no labels and QA sources have one label dict per sentence.
Captions use the questions' vocabulary (categories, colors, materials, sizes, spatial
relations), so what pre-training learns transfers to the downstream tasks.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from vlbench.data.synth.jsonio import write_json
from vlbench.data.synth.scene import Obj, Scene, hposition, relation
from vlbench.data.synth.vocab import NUMBER_WORDS, RELATIONS, article

CAPTION_SOURCE = "synth_captions"


def describe(o: Obj, rng: np.random.Generator) -> str:
    """'a small red metal cube', with a random subset (at least one) of the adjectives."""
    adjectives = [o.size, o.color, o.material]
    keep = rng.random(3) < 0.6
    if not keep.any():
        keep[int(rng.integers(3))] = True
    words = [a for a, k in zip(adjectives, keep, strict=True) if k] + [o.category]
    return f"{article(words[0])} {' '.join(words)}"


def _number(k: int) -> str:
    return NUMBER_WORDS[k] if k < len(NUMBER_WORDS) else str(k)


def captions(scene: Scene, rng: np.random.Generator, k: int) -> list[str]:
    """Up to ``k`` distinct captions, each true of the scene."""
    out: list[str] = []
    objs = scene.objects
    for _ in range(6 * k):
        if len(out) >= k:
            break
        kind = int(rng.integers(5))
        a = objs[int(rng.integers(len(objs)))]
        if kind <= 1:  # relation between two objects
            b = objs[int(rng.integers(len(objs)))]
            rels = [r for r in RELATIONS if b is not a and relation(scene, a, b, r)]
            if not rels:
                continue
            text = f"{describe(a, rng)} {rels[int(rng.integers(len(rels)))]} {describe(b, rng)}"
        elif kind == 2:  # two objects side by side in the sentence
            b = objs[int(rng.integers(len(objs)))]
            if b is a:
                continue
            text = f"{describe(a, rng)} and {describe(b, rng)}"
        elif kind == 3:  # a count of one color or of all objects
            if rng.random() < 0.5:
                n = len(scene.matching(color=a.color))
                noun = f"{a.color} object" + ("s" if n > 1 else "")
            else:
                n, noun = len(objs), "objects"
            verb = "is" if n == 1 else "are"
            text = f"there {verb} {_number(n)} {noun}"
        else:  # where in the image
            side = hposition(scene, a)
            if side is None:
                continue
            text = f"{describe(a, rng)} on the {side} of the image"
        if text not in out:
            out.append(text)
    return out


def pretrain_entry(scene: Scene, caps: list[str],
                   qa: dict[str, list[tuple[str, dict[str, float]]]]) -> dict:
    """One image's record: captions plus, per QA source, sentences and answer labels."""
    sentf = {CAPTION_SOURCE: caps}
    labelf = {}
    for source, pairs in qa.items():
        if pairs:
            sentf[source] = [s for s, _ in pairs]
            labelf[source] = [label for _, label in pairs]
    return {"img_id": scene.image_id, "sentf": sentf, "labelf": labelf}


def write_pretrain(out_dir: Path, splits: dict[str, Iterable[dict]]) -> dict[str, str]:
    """Write ``pretrain/{split}.json`` for each split; returns {split: relative path}."""
    files = {}
    for split, entries in splits.items():
        rel = f"pretrain/{split}.json"
        write_json(out_dir / rel, list(entries))
        files[split] = rel
    return files
