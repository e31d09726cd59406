"""The synthetic NLVR2: true/false statements about pairs of images.

As in NLVR2, one sentence is written for a set and paired with several image pairs, some
making it true and some false (labels balanced within each set). Identifiers follow
``{split}-{set}-{pair}-{sentence}`` and the two images of a pair are
``{split}-{set}-{pair}-img0`` / ``-img1`` in the feature TSV, LXMERT's convention.
Statements need both images ("Both images contain a red cube.", "There are exactly two
spheres in total.", "The left image contains more cubes than the right image.").

Pairs are drawn by first choosing how often the statement's concept appears in each
image (0-3 times, among the count pairs that give the wanted label), then planting it
exactly that often; labels are balanced within each set, so the sentence alone says
nothing about the label. NLVR2's photographs were found by searching for one kind of
object, so its scenes are smaller than GQA's (``nlvr2_min_boxes``-``nlvr2_max_boxes``
objects, 2-4 by default).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlbench.data.synth.jsonio import write_json, write_jsonl
from vlbench.data.synth.scene import Scene, sample_scene
from vlbench.data.synth.vocab import (
    CATEGORIES,
    COLORS,
    MATERIALS,
    NUMBER_WORDS,
    PLURALS,
    article,
)

SPLITS = ("train", "dev", "test1")
LXMERT_SPLITS = {"train": "train", "dev": "valid", "test1": "test"}


@dataclass
class Statement:
    """A sentence template filled in, with the predicate that decides its truth."""

    template: str
    sentence: str
    concept: dict[str, str]  # properties an object must have to count
    synset: str
    truth: Callable[[int, int], bool]  # (count in left image, count in right image) -> label


@dataclass
class NLVR2Example:
    identifier: str
    sentence: str
    label: bool
    left: Scene
    right: Scene
    statement: Statement
    directory: int | None


@dataclass
class NLVR2Data:
    examples: dict[str, list[NLVR2Example]]

    def all_scenes(self) -> list[Scene]:
        return [s for split in SPLITS for e in self.examples[split] for s in (e.left, e.right)]

    def split_counts(self) -> dict:
        return {s: {"examples": len(v), "images": 2 * len(v),
                    "sentences": len({_sentence_key(e.identifier) for e in v})}
                for s, v in self.examples.items()}


def _sentence_key(identifier: str) -> str:
    """'dev-850-2-0' -> 'dev-850-0': split, set and sentence index, without the pair."""
    split, set_id, _pair, sent = identifier.split("-")
    return f"{split}-{set_id}-{sent}"


# Shares of the statement templates and of the kinds of concept they count. Statements about
# whether a kind of object is present dominate, so a small model learns to find objects by
# name; counts, comparisons and attribute-bound concepts keep the harder end.
TEMPLATE_SHARES: dict[str, float] = {
    "both": 0.25, "exactly_one": 0.2, "at_least_one": 0.25, "total": 0.15, "more": 0.15,
}
CONCEPT_SHARES: dict[str, float] = {"category": 0.7, "color": 0.2, "material": 0.1}


def _share(rng: np.random.Generator, shares: dict[str, float]) -> str:
    u, total = rng.random() * sum(shares.values()), 0.0
    for name, share in shares.items():
        total += share
        if u < total:
            return name
    return name


def _concept(rng: np.random.Generator) -> tuple[dict[str, str], str, str]:
    """A concept to count: (properties, singular phrase, plural phrase)."""
    cat = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
    kind = _share(rng, CONCEPT_SHARES)
    if kind == "category":
        return {"category": cat}, cat, PLURALS[cat]
    values = COLORS if kind == "color" else MATERIALS
    v = values[int(rng.integers(len(values)))]
    return {"category": cat, kind: v}, f"{v} {cat}", f"{v} {PLURALS[cat]}"


def make_statement(rng: np.random.Generator) -> Statement:
    """Draw one statement template and fill it in."""
    props, one, many = _concept(rng)
    a = f"{article(one)} {one}"
    kind = _share(rng, TEMPLATE_SHARES)
    if kind == "both":
        return Statement("both", f"Both images contain {a}.", props, props["category"],
                         lambda left, right: left > 0 and right > 0)
    if kind == "exactly_one":
        return Statement("exactly_one", f"Exactly one image contains {a}.", props,
                         props["category"], lambda left, right: (left > 0) != (right > 0))
    if kind == "total":
        k = int(rng.integers(1, 4))
        noun = one if k == 1 else many
        verb = "is" if k == 1 else "are"
        return Statement("total", f"There {verb} exactly {NUMBER_WORDS[k]} {noun} in total.",
                         props, props["category"], lambda left, right, k=k: left + right == k)
    if kind == "more":
        return Statement("more", f"The left image contains more {many} than the right image.",
                         props, props["category"], lambda left, right: left > right)
    return Statement("at_least_one", f"At least one image contains {a}.", props,
                     props["category"], lambda left, right: left + right > 0)


_MAX_PLANTED = 3


def _draw_pair(rng: np.random.Generator, st: Statement, want: bool, image_ids: tuple[str, str],
               next_oid: Callable[[], str], cfg) -> tuple[Scene, Scene] | None:
    """Two scenes whose concept counts make the statement ``want``.

    The counts are drawn first among those giving the wanted label, then each scene gets
    exactly that many objects with the concept (no other object matches it).
    """
    options = [(a, b) for a in range(_MAX_PLANTED + 1) for b in range(_MAX_PLANTED + 1)
               if st.truth(a, b) is want]
    for _ in range(5):
        counts = options[int(rng.integers(len(options)))]
        scenes = [
            sample_scene(rng, image_ids[side], next_oid,
                         min_objects=max(cfg.nlvr2_min_boxes, counts[side]),
                         max_objects=max(cfg.nlvr2_max_boxes, counts[side]),
                         size_range=(cfg.min_image_side, cfg.max_image_side),
                         plant=[st.concept] * counts[side], avoid=st.concept)
            for side in (0, 1)
        ]
        got = tuple(len(s.matching(**st.concept)) for s in scenes)
        if st.truth(*got) is want:  # placement can drop a planted object, very rarely
            return scenes[0], scenes[1]
    return None


def build_nlvr2(cfg, rng: np.random.Generator, next_oid: Callable[[], str]) -> NLVR2Data:
    """Draw sets (one sentence, several image pairs with balanced labels) for every split."""
    sets = {"train": cfg.nlvr2_train_sets, "dev": cfg.nlvr2_dev_sets,
            "test1": cfg.nlvr2_test1_sets}
    examples: dict[str, list[NLVR2Example]] = {}
    for split, n_sets in sets.items():
        examples[split] = []
        for set_id in range(n_sets):
            st = make_statement(rng)
            n = cfg.nlvr2_pairs_per_set
            wants = [i < (n + int(rng.integers(2))) // 2 for i in range(n)]
            wants = [wants[i] for i in rng.permutation(n)]
            for pair, want in enumerate(wants):
                stem = f"{split}-{set_id}-{pair}"
                drawn = _draw_pair(rng, st, want, (f"{stem}-img0", f"{stem}-img1"), next_oid, cfg)
                if drawn is None:
                    continue
                examples[split].append(NLVR2Example(
                    identifier=f"{stem}-0", sentence=st.sentence, label=want, left=drawn[0],
                    right=drawn[1], statement=st,
                    directory=set_id % 100 if split == "train" else None))
    return NLVR2Data(examples)


def _url(image_id: str) -> str:
    return f"https://synthetic.invalid/nlvr2/{image_id}.png"


def example_entry(e: NLVR2Example) -> dict:
    """One line of NLVR2's JSONL."""
    row = {
        "validation": {},
        "sentence": e.sentence,
        "left_url": _url(e.left.image_id),
        "writer": "synthetic",
        "label": "True" if e.label else "False",
        "right_url": _url(e.right.image_id),
        "synset": e.statement.synset,
        "query": f"{e.statement.synset} {e.identifier.split('-')[1]}",
        "identifier": e.identifier,
        "extra_validations": {},
    }
    if e.directory is not None:
        row["directory"] = e.directory
    return row


def write_nlvr2(out_dir: Path, data: NLVR2Data) -> dict:
    """Write ``nlvr2/{split}.json`` (JSONL) and LXMERT's ``nlvr2/lxmert/*.json``."""
    files: dict[str, dict[str, str] | str] = {}
    for split in SPLITS:
        rel = f"nlvr2/{split}.json"
        write_jsonl(out_dir / rel, (example_entry(e) for e in data.examples[split]))
        lx = f"nlvr2/lxmert/{LXMERT_SPLITS[split]}.json"
        write_json(out_dir / lx, [
            {"identifier": e.identifier, "img0": e.left.image_id, "img1": e.right.image_id,
             "label": int(e.label), "sent": e.sentence,
             "uid": f"nlvr2_{LXMERT_SPLITS[split]}_{i}"}
            for i, e in enumerate(data.examples[split])
        ])
        files[split] = {"statements": rel, "lxmert": lx}
    return files


def nlvr2_stats(data: NLVR2Data) -> dict:
    """Label balance, a sentence-template prior and the scene oracle, in percent."""
    train = data.examples["train"]
    by_template: dict[str, Counter] = defaultdict(Counter)
    for e in train:
        by_template[e.statement.template][e.label] += 1
    best = {t: c[True] >= c[False] for t, c in by_template.items()}
    majority = Counter(e.label for e in train)
    stats: dict = {"prior": {}, "oracle": {}, "true_fraction": {}}
    for split in ("dev", "test1"):
        exs = data.examples[split]
        if not exs:
            continue
        prior = sum(best.get(e.statement.template, majority[True] >= majority[False]) == e.label
                    for e in exs)
        oracle = sum(e.statement.truth(len(e.left.matching(**e.statement.concept)),
                                       len(e.right.matching(**e.statement.concept))) == e.label
                     for e in exs)
        stats["prior"][split] = round(100.0 * prior / len(exs), 2)
        stats["oracle"][split] = round(100.0 * oracle / len(exs), 2)
    for split, exs in data.examples.items():
        stats["true_fraction"][split] = round(sum(e.label for e in exs) / max(1, len(exs)), 3)
    return stats
