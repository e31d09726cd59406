"""The synthetic VQA v2: open-ended questions with ten human-like answers each.

Writes the official files (``vqa/v2_OpenEnded_mscoco_{subtype}_questions.json`` and
``vqa/v2_mscoco_{subtype}_annotations.json`` for ``train2014``, ``val2014`` and
``minival``, the latter a subset of val2014 as in LXMERT) and LXMERT's preprocessed
``vqa/lxmert/{train,nominival,minival}.json`` with its answer table. Image ids are COCO
style: an integer in the JSON and ``COCO_{subtype}_%012d`` in the feature TSV.

The ten answers disagree like real annotators (a confusable color, a count off by one,
a flipped yes/no, number words for digits) but the true answer is always given by at
least four of them, so reading the scene scores 100% under the official metric.
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlbench.data.synth.jsonio import write_json
from vlbench.data.synth.scene import Scene, sample_scene
from vlbench.data.synth.vocab import (
    CATEGORIES,
    COLORS,
    CONFUSABLE_COLORS,
    MATERIALS,
    NUMBER_WORDS,
    PLURALS,
)
from vlbench.tasks.gqa.synth_questions import (
    category_attr,
    exist_attr,
    query_attr,
    rel_s,
    verify_attr,
)

SUBTYPES = ("train2014", "val2014", "minival")
LXMERT_SPLITS = {"train2014": "train", "nominival": "nominival", "minival": "minival"}
# Official VQA question types used here (the longest one that prefixes a question wins).
QUESTION_TYPES = ("how many", "is there a", "is the", "are there", "what color is the",
                  "what is the", "what is", "which")
MAX_COUNT = 4


@dataclass
class VQAQuestion:
    """One question with its ten answers (fields map onto the VQA v2 JSON)."""

    image_id: int
    question_id: int
    question: str
    answer: str
    answer_type: str
    question_type: str
    answers: list[dict]
    multiple_choice_answer: str


@dataclass
class VQAData:
    """Scenes and questions of train2014 and val2014 (minival = first val2014 images)."""

    scenes: dict[str, list[Scene]]
    questions: dict[str, list[VQAQuestion]]
    minival_images: int

    def all_scenes(self) -> list[Scene]:
        return self.scenes["train2014"] + self.scenes["val2014"]

    def minival_ids(self) -> set[int]:
        return {_coco_int(s.image_id) for s in self.scenes["val2014"][: self.minival_images]}

    def split_questions(self, subtype: str) -> list[VQAQuestion]:
        """Questions of train2014, val2014, minival or nominival."""
        if subtype in ("train2014", "val2014"):
            return self.questions[subtype]
        keep = self.minival_ids()
        inside = subtype == "minival"
        return [q for q in self.questions["val2014"] if (q.image_id in keep) is inside]

    def split_counts(self) -> dict:
        return {s: {"images": len({q.image_id for q in self.split_questions(s)}),
                    "questions": len(self.split_questions(s))}
                for s in (*SUBTYPES, "nominival")}

    def pretrain_pairs(self) -> dict[str, list]:
        """TSV image id -> [(question, soft label)] for the pre-training corpus (train2014, nominival)."""
        out: dict[str, list] = defaultdict(list)
        for subtype in ("train2014", "nominival"):
            sub = "train2014" if subtype == "train2014" else "val2014"
            for q in self.split_questions(subtype):
                out[tsv_image_id(sub, q.image_id)].append((q.question, soft_label(q.answers)))
        return dict(out)

    def pretrain_scenes(self, split: str) -> list[Scene]:
        """Images in the pre-training corpus: train2014 + nominival for train, minival for val."""
        val = self.scenes["val2014"]
        if split == "train":
            return self.scenes["train2014"] + val[self.minival_images:]
        return val[: self.minival_images]


def tsv_image_id(subtype: str, image_id: int) -> str:
    """COCO file stem used as ``img_id`` in LXMERT's TSV and JSON."""
    return f"COCO_{subtype}_{image_id:012d}"


def _coco_int(tsv_id: str) -> int:
    return int(tsv_id.rsplit("_", 1)[1])


# -- answers ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def normalise_answer(answer: str) -> str:
    """A light version of the official normalisation: case, articles, number words."""
    words = [w for w in answer.lower().strip().rstrip(".").split() if w not in ("a", "an", "the")]
    words = [str(NUMBER_WORDS.index(w)) if w in NUMBER_WORDS else w for w in words]
    return " ".join(words)


def vqa_accuracy(prediction: str, answers: list[dict]) -> float:
    """Official VQA accuracy: mean over the 10 leave-one-out sets of min(1, matches / 3)."""
    gts = [normalise_answer(a["answer"]) for a in answers]
    pred = normalise_answer(prediction)
    scores = []
    for i in range(len(gts)):
        matches = sum(1 for j, g in enumerate(gts) if j != i and g == pred)
        scores.append(min(1.0, matches / 3))
    return sum(scores) / len(scores)


def soft_label(answers: list[dict]) -> dict[str, float]:
    """LXMERT's target: score 0.3 / 0.6 / 0.9 / 1.0 for 1 / 2 / 3 / 4+ annotators."""
    counts = Counter(normalise_answer(a["answer"]) for a in answers)
    return {a: min(1.0, round(0.3 * c, 1)) for a, c in sorted(counts.items())}


def _wrong(answer: str, answer_type: str, rng: np.random.Generator) -> str:
    if answer_type == "yes/no":
        return "no" if answer == "yes" else "yes"
    if answer_type == "number":
        k = int(answer)
        return str(k + 1 if k == 0 or rng.random() < 0.5 else k - 1)
    if answer in CONFUSABLE_COLORS:
        near = CONFUSABLE_COLORS[answer]
        return near[int(rng.integers(len(near)))]
    pool = MATERIALS if answer in MATERIALS else CATEGORIES
    return pool[int(rng.integers(len(pool)))] if len(pool) > 1 else answer


def human_answers(answer: str, answer_type: str, rng: np.random.Generator) -> list[dict]:
    """Ten annotators: most give the true answer, the rest a plausible mistake."""
    n_right = max(4, int(rng.binomial(10, rng.uniform(0.7, 1.0))))
    u = rng.random((10, 3)).tolist()  # word-form number, confidence, confidence if wrong
    order = rng.permutation(10).tolist()
    out = []
    for slot, i in enumerate(order):
        right = i < n_right
        text = answer if right else _wrong(answer, answer_type, rng)
        if answer_type == "number" and u[i][0] < 0.15:
            text = NUMBER_WORDS[int(text)]  # "two" for "2", as people type it
        if right and u[i][1] < 0.9:
            confidence = "yes"
        else:
            confidence = "maybe" if u[i][2] < 0.7 else "no"
        out.append({"answer": text, "answer_confidence": confidence, "answer_id": slot + 1})
    return out


# -- questions ----------------------------------------------------------------------------------


def _count_question(scene: Scene, rng: np.random.Generator) -> tuple[str, str] | None:
    """'How many red objects are there?' with a count drawn uniformly from 0..4 first."""
    want = int(rng.integers(0, MAX_COUNT + 1))
    counts: Counter = Counter()
    for o in scene.objects:
        counts[PLURALS[o.category]] += 1
        counts[f"{o.color} objects"] += 1
        counts[f"{o.material} objects"] += 1
        counts[f"{o.color} {PLURALS[o.category]}"] += 1
    # Phrases with a zero count: every category, color and material not in the scene.
    phrases = [PLURALS[c] for c in CATEGORIES] + [f"{v} objects" for v in COLORS + MATERIALS]
    phrases += [p for p in counts if p not in phrases]
    hits = [p for p in phrases if counts[p] == want]
    if not hits:
        return None
    return f"How many {hits[int(rng.integers(len(hits)))]} are there?", str(want)


def _from_gqa(family: Callable) -> Callable:
    def make(scene: Scene, rng: np.random.Generator) -> tuple[str, str] | None:
        q = family(scene, rng)
        return None if q is None else (q.question, q.answer)
    return make


def _query_color(scene: Scene, rng: np.random.Generator) -> tuple[str, str] | None:
    q = query_attr(scene, rng, kind="color")
    return None if q is None else (q.question, q.answer)


def _query_material(scene: Scene, rng: np.random.Generator) -> tuple[str, str] | None:
    q = query_attr(scene, rng, kind="material")
    return None if q is None else (q.question, q.answer)


# Family -> (maker, share). About 38% yes/no and 12% number, like VQA v2.
_FAMILIES: dict[str, tuple[Callable, float]] = {
    "exist": (_from_gqa(exist_attr), 0.17),
    "verify": (_from_gqa(verify_attr), 0.17),
    "count": (_count_question, 0.14),
    "color": (_query_color, 0.18),
    "material": (_query_material, 0.10),
    "relation": (_from_gqa(rel_s), 0.12),
    "category": (_from_gqa(category_attr), 0.12),
}


def question_type(question: str) -> str:
    """The longest official VQA question type that starts the question ('none of the above' else)."""
    text = question.lower().replace(" an ", " a ")
    hits = [t for t in QUESTION_TYPES if text.startswith(t + " ")]
    return max(hits, key=len) if hits else "none of the above"


def answer_type(answer: str) -> str:
    if answer in ("yes", "no"):
        return "yes/no"
    return "number" if answer.isdigit() else "other"


def build_vqa(cfg, scene_rng: np.random.Generator, q_rng: np.random.Generator,
              next_oid: Callable[[], str]) -> VQAData:
    """Draw the VQA scenes and questions."""
    counts = {"train2014": cfg.vqa_train_images, "val2014": cfg.vqa_val_images}
    first_id = {"train2014": 100_001, "val2014": 600_001}
    names = list(_FAMILIES)
    cum = np.cumsum([_FAMILIES[n][1] for n in names])
    cum /= cum[-1]
    scenes: dict[str, list[Scene]] = {}
    questions: dict[str, list[VQAQuestion]] = {}
    for subtype, n in counts.items():
        scenes[subtype], questions[subtype] = [], []
        for i in range(n):
            image_id = first_id[subtype] + 7 * i  # COCO ids are sparse
            scene = sample_scene(scene_rng, tsv_image_id(subtype, image_id), next_oid,
                                 min_objects=cfg.min_boxes, max_objects=cfg.max_boxes,
                                 size_range=(cfg.min_image_side, cfg.max_image_side))
            scenes[subtype].append(scene)
            asked: set[str] = set()
            for _ in range(4 * cfg.vqa_questions_per_image):
                if len(asked) >= cfg.vqa_questions_per_image:
                    break
                family = names[min(int(np.searchsorted(cum, q_rng.random(), side="right")),
                                   len(names) - 1)]
                made = _FAMILIES[family][0](scene, q_rng)
                if made is None or made[0] in asked:
                    continue
                text, answer = made
                asked.add(text)
                a_type = answer_type(answer)
                answers = human_answers(answer, a_type, q_rng)
                questions[subtype].append(VQAQuestion(
                    image_id=image_id, question_id=image_id * 1000 + len(asked) - 1,
                    question=text, answer=answer, answer_type=a_type,
                    question_type=question_type(text), answers=answers,
                    multiple_choice_answer=_majority(answers, answer)))
    return VQAData(scenes, questions, cfg.vqa_minival_images)


def _majority(answers: list[dict], true: str) -> str:
    counts = Counter(normalise_answer(a["answer"]) for a in answers)
    return min(counts, key=lambda a: (-counts[a], a != true, a))


# -- files --------------------------------------------------------------------------------------

_INFO = {"description": "vlbench synthetic world, VQA v2 format", "version": "2.0",
         "year": 2026, "contributor": "vlbench", "date_created": "synthetic"}
_LICENSE = {"name": "MIT", "url": "https://opensource.org/licenses/MIT"}


def write_vqa(out_dir: Path, data: VQAData) -> dict:
    """Write the official VQA files and LXMERT's splits; returns {subtype: {kind: path}}."""
    files: dict[str, dict[str, str]] = {}
    for subtype in SUBTYPES:
        qs = data.split_questions(subtype)
        entry = {"questions": f"vqa/v2_OpenEnded_mscoco_{subtype}_questions.json",
                 "annotations": f"vqa/v2_mscoco_{subtype}_annotations.json"}
        write_json(out_dir / entry["questions"], {
            "info": _INFO, "task_type": "Open-Ended", "data_type": "mscoco",
            "license": _LICENSE, "data_subtype": subtype,
            "questions": [{"image_id": q.image_id, "question": q.question,
                           "question_id": q.question_id} for q in qs],
        })
        write_json(out_dir / entry["annotations"], {
            "info": _INFO, "license": _LICENSE, "data_subtype": subtype, "data_type": "mscoco",
            "annotations": [{"question_type": q.question_type,
                             "multiple_choice_answer": q.multiple_choice_answer,
                             "answers": q.answers, "image_id": q.image_id,
                             "answer_type": q.answer_type, "question_id": q.question_id}
                            for q in qs],
        })
        files[subtype] = entry
    for subtype, name in LXMERT_SPLITS.items():
        coco = "train2014" if subtype == "train2014" else "val2014"
        rel = f"vqa/lxmert/{name}.json"
        write_json(out_dir / rel, [
            {"answer_type": q.answer_type, "img_id": tsv_image_id(coco, q.image_id),
             "label": soft_label(q.answers), "question_id": q.question_id,
             "question_type": q.question_type, "sent": q.question}
            for q in data.split_questions(subtype)
        ])
        files.setdefault("lxmert", {})[name] = rel
    counts = Counter(q.multiple_choice_answer for s in ("train2014", "val2014")
                     for q in data.questions[s])
    answers = sorted(counts, key=lambda a: (-counts[a], a))
    write_json(out_dir / "vqa/lxmert/trainval_ans2label.json", {a: i for i, a in enumerate(answers)})
    write_json(out_dir / "vqa/lxmert/trainval_label2ans.json", answers)
    files["answers"] = {"ans2label": "vqa/lxmert/trainval_ans2label.json",
                        "label2ans": "vqa/lxmert/trainval_label2ans.json"}
    return files


def vqa_stats(data: VQAData) -> dict:
    """Question-type prior and scene oracle under the official VQA accuracy, in percent."""
    train = data.questions["train2014"]
    by_type: dict[str, Counter] = defaultdict(Counter)
    for q in train:
        by_type[q.question_type][q.multiple_choice_answer] += 1
    best = {t: min(c, key=lambda a: (-c[a], a)) for t, c in by_type.items()}
    stats: dict = {"prior": {}, "oracle": {}, "answer_types": {}}
    for subtype in ("val2014", "minival"):
        qs = data.split_questions(subtype)
        prior = [vqa_accuracy(best.get(q.question_type, "yes"), q.answers) for q in qs]
        oracle = [vqa_accuracy(q.answer, q.answers) for q in qs]
        stats["prior"][subtype] = round(100.0 * sum(prior) / max(1, len(qs)), 2)
        stats["oracle"][subtype] = round(100.0 * sum(oracle) / max(1, len(qs)), 2)
    stats["answer_types"] = dict(sorted(Counter(q.answer_type for q in train).items()))
    return stats
