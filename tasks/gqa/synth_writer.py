"""The synthetic GQA: scenes per split, balanced questions, and the official files.

Writes, under ``DIR/gqa/``, the files GQA distributes and LXMERT preprocesses:
``{train,val,testdev}_balanced_questions.json`` (dict question id -> question, with
``types``, ``groups``, ``entailed``, ``equivalent``, ``semantic`` ...),
``{train,val,testdev}_choices.json``, ``{train,val}_sceneGraphs.json`` (GQA releases no
testdev scene graphs), and LXMERT's ``lxmert/{train,valid,testdev}.json`` with its
``trainval_ans2label.json`` / ``trainval_label2ans.json`` answer table.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlbench.data.synth.config import WorldConfig
from vlbench.data.synth.jsonio import write_json
from vlbench.data.synth.scene import Scene, relation, sample_scene
from vlbench.tasks.gqa.synth_oracle import execute
from vlbench.tasks.gqa.synth_questions import (
    FAMILIES,
    GQAQuestion,
    entailment_cluster,
    exist_unbalanced,
    semantic_str,
)

GQA_SPLITS = ("train", "val", "testdev")
LXMERT_SPLITS = {"train": "train", "val": "valid", "testdev": "testdev"}
_IMAGE_ID = {"train": lambda i: str(2_000_001 + i), "val": lambda i: str(2_400_001 + i),
             "testdev": lambda i: f"n{100_001 + i}"}
_QID_BASE = {"train": 1_000_000, "val": 5_000_000, "testdev": 9_000_000}


@dataclass
class GQAData:
    """Scenes and final questions of every GQA split."""

    scenes: dict[str, list[Scene]]
    questions: dict[str, list[GQAQuestion]]

    def scene_of(self) -> dict[str, Scene]:
        return {s.image_id: s for scenes in self.scenes.values() for s in scenes}


def image_counts(cfg: WorldConfig) -> dict[str, int]:
    """Images per GQA split: val and testdev each get a twelfth."""
    small = max(2, cfg.n_images // 12)
    return {"train": cfg.n_images - 2 * small, "val": small, "testdev": small}


def build_gqa(cfg: WorldConfig, scene_rng: np.random.Generator, q_rng: np.random.Generator,
              next_oid: Callable[[], str]) -> GQAData:
    """Draw the scenes of every split and their balanced questions."""
    scenes: dict[str, list[Scene]] = {}
    for split, count in image_counts(cfg).items():
        scenes[split] = [
            sample_scene(scene_rng, _IMAGE_ID[split](i), next_oid, min_objects=cfg.min_boxes,
                         max_objects=cfg.max_boxes,
                         size_range=(cfg.min_image_side, cfg.max_image_side))
            for i in range(count)
        ]
    questions = {split: _split_questions(split, scenes[split], q_rng, cfg) for split in GQA_SPLITS}
    return GQAData(scenes, questions)


def _split_questions(split: str, scenes: list[Scene], rng: np.random.Generator,
                     cfg: WorldConfig) -> list[GQAQuestion]:
    names = list(FAMILIES)
    cum = np.cumsum([FAMILIES[n][1] for n in names])
    cum /= cum[-1]
    pool: list[GQAQuestion] = []
    for scene in scenes:
        asked: set[str] = set()
        qs: list[GQAQuestion] = []

        def keep(q: GQAQuestion | None, asked=asked, qs=qs) -> None:
            if q is not None and q.question not in asked:
                asked.add(q.question)
                qs.append(q)

        if rng.random() < cfg.entailment_fraction:
            for q in entailment_cluster(scene, rng):
                keep(q)
        for _ in range(4 * cfg.questions_per_image):
            if len(qs) >= cfg.questions_per_image:
                break
            family = names[min(int(np.searchsorted(cum, rng.random(), side="right")),
                               len(names) - 1)]
            keep(FAMILIES[family][0](scene, rng))
        if rng.random() < cfg.unbalanced_fraction * cfg.questions_per_image:
            keep(exist_unbalanced(scene, rng))
        pool.extend(qs)
    kept = _balance(pool, rng, cfg.balance_slack)
    for k, q in enumerate(kept):
        q.qid = f"{_QID_BASE[split] + k:08d}"
    _link_entailment(kept)
    return kept


def _balance(pool: list[GQAQuestion], rng: np.random.Generator, slack: float) -> list[GQAQuestion]:
    """Drop questions of over-represented answers so each detailed type is near uniform.

    Like GQA's smoothing, but simpler: an answer may occur at most ``slack`` times the
    mean count of its type's answers. Entailment-cluster members are dropped last.
    """
    by_type: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, q in enumerate(pool):
        if q.balanced:
            by_type[(q.detailed, q.answer)].append(i)
    totals: Counter = Counter()
    answers: Counter = Counter()
    for (detailed, _), idx in by_type.items():
        totals[detailed] += len(idx)
        answers[detailed] += 1
    drop: set[int] = set()
    for (detailed, _), idx in sorted(by_type.items()):
        cap = math.ceil(slack * totals[detailed] / answers[detailed])
        if len(idx) <= cap:
            continue
        order = sorted(rng.permutation(idx).tolist(), key=lambda i: pool[i].entail_key is not None)
        drop.update(order[: len(idx) - cap])
    return [q for i, q in enumerate(pool) if i not in drop]


def _link_entailment(questions: list[GQAQuestion]) -> None:
    groups: dict[tuple, list[GQAQuestion]] = defaultdict(list)
    for q in questions:
        if q.entail_key is not None:
            groups[q.entail_key].append(q)
    for members in groups.values():
        for q in members:
            # A "no" to "Is the cube red?" does not tell which color it is.
            if q.entail_role != "verify_no":
                q.entailed = [m.qid for m in members if m is not q]


# -- official JSON ------------------------------------------------------------------------------

_TOKEN = re.compile(r"[\w']+|[^\w\s]")


def _annotate(text: str, mentions: list[tuple[str, str]]) -> dict[str, str]:
    """Word index -> object id, as GQA's ``annotations`` (words split like GQA's tokens)."""
    tokens = [t.lower() for t in _TOKEN.findall(text)]
    out: dict[str, str] = {}
    for word, oid in mentions:
        for i, t in enumerate(tokens):
            if t == word and str(i) not in out:
                out[str(i)] = oid
                break
    return out


def question_entry(q: GQAQuestion) -> dict:
    """One question in GQA's questions-JSON layout."""
    answer_ann = {"0": q.answer_oid} if q.answer_oid else {}
    full_mentions = list(q.mentions)
    if q.answer_oid:
        full_mentions.append((q.answer, q.answer_oid))
    return {
        "semantic": q.program,
        "entailed": q.entailed,
        "equivalent": [q.qid],
        "question": q.question,
        "imageId": q.image_id,
        "isBalanced": q.balanced,
        "groups": {"global": q.global_group, "local": q.local_group},
        "answer": q.answer,
        "semanticStr": semantic_str(q.program),
        "annotations": {
            "answer": answer_ann,
            "question": _annotate(q.question, q.mentions),
            "fullAnswer": _annotate(q.full_answer, full_mentions),
        },
        "types": {"detailed": q.detailed, "semantic": q.semantic, "structural": q.structural},
        "fullAnswer": q.full_answer,
    }


def scene_graph(scene: Scene) -> dict:
    """GQA scene-graph entry: objects with x, y, w, h, attributes and nearest left/right relations."""
    objects = {}
    for o in scene.objects:
        rels = []
        for rel in ("to the left of", "to the right of"):
            others = [x for x in scene.objects if x is not o and relation(scene, o, x, rel)]
            if others:
                nearest = min(others, key=lambda x: abs(x.cx - o.cx))
                rels.append({"name": rel, "object": nearest.oid})
        x1, y1, x2, y2 = o.box
        objects[o.oid] = {"name": o.category, "x": x1, "y": y1, "w": x2 - x1, "h": y2 - y1,
                          "attributes": [o.size, o.color, o.material], "relations": rels}
    return {"width": scene.width, "height": scene.height, "objects": objects}


def answer_table(data: GQAData) -> list[str]:
    """Answers of train+val, most frequent first (ties alphabetical), like LXMERT's table."""
    counts = Counter(q.answer for s in ("train", "val") for q in data.questions[s])
    return sorted(counts, key=lambda a: (-counts[a], a))


def write_gqa(out_dir: Path, data: GQAData) -> dict:
    """Write every GQA file under ``out_dir/gqa``; returns {split: {kind: relative path}}."""
    root = out_dir / "gqa"
    files: dict[str, dict[str, str]] = {}
    for split in GQA_SPLITS:
        qs = data.questions[split]
        entry = {
            "questions": f"gqa/{split}_balanced_questions.json",
            "choices": f"gqa/{split}_choices.json",
            "lxmert": f"gqa/lxmert/{LXMERT_SPLITS[split]}.json",
        }
        write_json(out_dir / entry["questions"], {q.qid: question_entry(q) for q in qs})
        write_json(out_dir / entry["choices"],
                   {q.qid: {"valid": q.valid, "plausible": q.plausible} for q in qs})
        write_json(out_dir / entry["lxmert"], [
            {"img_id": q.image_id, "label": {q.answer: 1.0}, "question_id": q.qid,
             "sent": q.question}
            for q in qs
        ])
        if split != "testdev":
            entry["scene_graphs"] = f"gqa/{split}_sceneGraphs.json"
            write_json(out_dir / entry["scene_graphs"],
                       {s.image_id: scene_graph(s) for s in data.scenes[split]})
        files[split] = entry
    answers = answer_table(data)
    write_json(root / "lxmert" / "trainval_ans2label.json", {a: i for i, a in enumerate(answers)})
    write_json(root / "lxmert" / "trainval_label2ans.json", answers)
    files["answers"] = {"ans2label": "gqa/lxmert/trainval_ans2label.json",
                        "label2ans": "gqa/lxmert/trainval_label2ans.json"}
    return files


# -- baselines ----------------------------------------------------------------------------------


def _first_two_words(question: str) -> str:
    return " ".join(question.lower().rstrip("?").split()[:2])


def _prior_accuracy(train: list[GQAQuestion], test: list[GQAQuestion],
                    key: Callable[[GQAQuestion], str]) -> tuple[float, dict[str, float]]:
    counts: dict[str, Counter] = defaultdict(Counter)
    for q in train:
        counts[key(q)][q.answer] += 1
    overall = Counter(q.answer for q in train)
    top_overall = min(overall, key=lambda a: (-overall[a], a))
    best = {k: min(c, key=lambda a: (-c[a], a)) for k, c in counts.items()}
    hits: dict[str, list[int]] = defaultdict(list)
    for q in test:
        hits[key(q)].append(int(best.get(key(q), top_overall) == q.answer))
    per = {k: round(100.0 * sum(v) / len(v), 2) for k, v in sorted(hits.items())}
    total = sum(sum(v) for v in hits.values()) / max(1, sum(len(v) for v in hits.values()))
    return round(100.0 * total, 2), per


def gqa_stats(data: GQAData) -> dict:
    """Question-only priors and the scene-reading oracle, in percent (balanced questions)."""
    scenes = data.scene_of()
    bal = {s: [q for q in data.questions[s] if q.balanced] for s in GQA_SPLITS}
    stats: dict = {"questions": {s: len(data.questions[s]) for s in GQA_SPLITS},
                   "balanced": {s: len(bal[s]) for s in GQA_SPLITS},
                   "images": {s: len(data.scenes[s]) for s in GQA_SPLITS},
                   "prior": {}, "prior_first_two_words": {}, "majority": {}, "oracle": {}}
    for split in ("val", "testdev"):
        acc, per = _prior_accuracy(bal["train"], bal[split], lambda q: q.detailed)
        stats["prior"][split] = acc
        if split == "testdev":
            stats["prior_per_detailed_type"] = per
        acc2, _ = _prior_accuracy(bal["train"], bal[split], lambda q: _first_two_words(q.question))
        stats["prior_first_two_words"][split] = acc2
        stats["majority"][split] = _prior_accuracy(bal["train"], bal[split], lambda q: "")[0]
    for split in GQA_SPLITS:
        right = sum(execute(q.program, scenes[q.image_id]) == q.answer for q in bal[split])
        stats["oracle"][split] = round(100.0 * right / max(1, len(bal[split])), 2)
    stats["entailing_questions"] = {s: sum(1 for q in data.questions[s] if q.entailed)
                                    for s in GQA_SPLITS}
    return stats
