"""VQA v2 (Goyal et al. 2017): open-ended questions about COCO images, scored like ``vqaEval.py``.

Reads the official questions + annotations JSON (``v2_OpenEnded_mscoco_{subtype}_questions.json``
and ``v2_mscoco_{subtype}_annotations.json``) or LXMERT's preprocessed split JSON
(``lxmert/{split}.json``), and writes the official results ``[{"question_id", "answer"}]``.

Split names are LXMERT's: ``train`` (train2014), ``val`` (val2014), ``minival`` and
``nominival`` (LXMERT's 5k-image validation subset of val2014 and the rest of it);
``train+nominival`` joins splits, as LXMERT trains on both.

The answer vocabulary follows bottom-up-attention-vqa / LXMERT: an answer is kept when at
least ``min_answer_count`` questions have it (normalised) as their ``multiple_choice_answer``.
LXMERT's 3129 answers are ``min_answer_count=9`` counted over train2014 + val2014
(``answer_splits=train,val``); the default here counts over the training split only, so no
evaluation question shapes the label space. ``answer_vocab`` reads a fixed table instead
(LXMERT's ``trainval_ans2label.json``).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlbench.data.jsonio import read_json
from vlbench.data.source import DataSource
from vlbench.errors import ConfigError, DataError
from vlbench.registry import register_task
from vlbench.tasks.qa import QAExample, QATask
from vlbench.tasks.vqa.normalize import preprocess_answer
from vlbench.tasks.vqa.scoring import (
    PRECISION,
    annotation_problem,
    score_vqa,
    vqa_soft_targets,
)
from vlbench.tasks.vqa.synth import VQA_PART

#: task split -> official file subtype (a split with no entry uses its own name, e.g. minival)
OFFICIAL_SUBTYPES = {
    "train": "train2014",
    "val": "val2014",
    "test": "test2015",
    "testdev": "test-dev2015",
}

#: file subtype -> COCO image folder; LXMERT's minival/nominival are carved out of val2014
COCO_IMAGE_SPLIT = {
    "train2014": "train2014",
    "val2014": "val2014",
    "minival": "val2014",
    "nominival": "val2014",
    "test2015": "test2015",
    "test-dev2015": "test2015",
}

#: VQA answers keyed for training and prediction (official normalisation, commas dropped)
normalise = preprocess_answer


@dataclass
class VQAConfig:
    train_split: str = "train"  # "a+b" joins splits (LXMERT: train+nominival)
    eval_splits: list[str] = field(default_factory=lambda: ["minival"])
    # "official" questions + annotations JSON, "lxmert" preprocessed JSON, or "auto"
    format: str = "auto"
    min_answer_count: int = 9  # LXMERT's 3129 answers: >= 9 questions' multiple_choice_answer
    # splits whose questions are counted for the vocabulary ([] = the training split)
    answer_splits: list[str] = field(default_factory=list)
    answer_vocab: str = ""  # ans2label JSON (LXMERT's trainval_ans2label.json) instead of counting
    # Feature-store id of an image; fields: image_id (int), coco_split (train2014/val2014/test2015),
    # subtype (file subtype), split (task split). Ids missing from the store fall back to
    # str(image_id).
    image_id_format: str = "COCO_{coco_split}_{image_id:012d}"


@register_task(
    "vqa", description="VQA v2: open-ended questions about COCO images (official accuracy)"
)
class VQATask(QATask):
    """VQA v2 question answering with soft targets; metrics from the official ``vqaEval.py``."""

    config_class = VQAConfig
    synthetic_part = VQA_PART
    task_name = "vqa"
    image_folders = ("vqa/images", "images")  # COCO's train2014/, val2014/ inside
    #: VQA's official answer normalisation (importers key soft labels by it, as LXMERT does)
    normalise_answer = staticmethod(preprocess_answer)
    metric_units = {"accuracy": {}}  # the mean soft score of every question
    category_kinds = ("answer_type",)

    def __init__(self, config: VQAConfig, data: DataSource):
        super().__init__(config, data)
        self.features: Any = None  # set by setup(); until then image ids are not checked
        self._annotations: dict[str, list[dict[str, Any]]] = {}

    @classmethod
    def default_overrides(cls, data: DataSource) -> dict[str, Any]:
        return {"train.lr": 5e-5}  # LXMERT's VQA fine-tuning (batch 32, 4 epochs: the defaults)

    @property
    def train_split(self) -> str:
        return self.config.train_split

    @property
    def eval_splits(self) -> list[str]:
        return list(self.config.eval_splits)

    # -- files -------------------------------------------------------------------------------
    def _find(self, *names: str) -> Path | None:
        for name in names:
            for folder in ("vqa/", ""):
                if (self.data.root / folder / name).is_file():
                    return self.data.root / folder / name
        return None

    def _subtype(self, split: str) -> str:
        return OFFICIAL_SUBTYPES.get(split, split)

    def _official_paths(self, split: str) -> tuple[Path, Path] | None:
        """The questions and annotations files of ``split``, or None when either is missing."""
        sub = self._subtype(split)
        questions = self._find(f"v2_OpenEnded_mscoco_{sub}_questions.json")
        annotations = self._find(f"v2_mscoco_{sub}_annotations.json")
        return (questions, annotations) if questions and annotations else None

    def _lxmert_path(self, split: str) -> Path | None:
        return self._find(f"lxmert/{split}.json")

    def _format(self, split: str) -> str:
        parts = split.split("+")
        if len(parts) > 1:
            formats = {self._format(p) for p in parts}
            return "official" if formats == {"official"} else "lxmert"
        fmt = self.config.format
        if fmt == "auto":
            fmt = "official" if self._official_paths(split) else "lxmert"
        elif fmt not in ("official", "lxmert"):
            raise ConfigError(f"task.format={fmt!r}: use auto, official or lxmert")
        if fmt == "official" and not self._official_paths(split):
            fmt = ""
        if fmt == "lxmert" and not self._lxmert_path(split):
            fmt = ""
        if not fmt:
            sub = self._subtype(split)
            raise DataError(
                f"VQA split '{split}': found neither v2_OpenEnded_mscoco_{sub}_questions.json with "
                f"v2_mscoco_{sub}_annotations.json nor LXMERT's lxmert/{split}.json under "
                f"{self.data.root} (or its vqa/ folder); check --data and task.eval_splits"
            )
        return fmt

    # -- reading -----------------------------------------------------------------------------
    def read_split(self, split: str) -> list[QAExample]:
        parts = split.split("+")
        if len(parts) > 1:
            return [ex for part in parts for ex in self.read_split(part)]
        if self._format(split) == "lxmert":
            return read_lxmert_split(self._lxmert_path(split))  # type: ignore[arg-type]
        questions_path, annotations_path = self._official_paths(split)  # type: ignore[misc]
        questions = read_json(questions_path)
        annotations = _official_list(read_json(annotations_path), "annotations", annotations_path)
        by_qid = _index_annotations(annotations, annotations_path)
        if split in self.eval_splits:  # kept for scoring; the training split's are not needed again
            self._annotations[split] = annotations
        subtype = (
            questions.get("data_subtype", self._subtype(split))
            if isinstance(questions, dict)
            else ""
        )
        out = []
        for i, q in enumerate(_official_list(questions, "questions", questions_path)):
            try:
                qid, image_id, text = q["question_id"], q["image_id"], q["question"]
            except (KeyError, TypeError) as exc:
                raise DataError(
                    f"{questions_path}: questions[{i}] lacks {exc}; expected "
                    "image_id, question, question_id"
                ) from None
            for key, value, kinds in (("question_id", qid, (int, str)),
                                      ("image_id", image_id, (int, str)), ("question", text, (str,))):
                if not isinstance(value, kinds) or isinstance(value, bool):
                    raise DataError(
                        f"{questions_path}: questions[{i}] key '{key}' is {value!r}; expected "
                        f"{'a string' if kinds == (str,) else 'a number'}"
                    )
            ann = by_qid.get(qid)
            if ann is None:
                raise DataError(
                    f"{annotations_path}: no annotation for question_id {qid} of "
                    f"{questions_path.name}; use the matching questions/annotations pair"
                )
            out.append(
                QAExample(
                    qid=str(qid),
                    img_id=self.image_key(image_id, subtype, split),
                    question=text,
                    label=vqa_soft_targets(a["answer"] for a in ann["answers"]),
                    qtype=ann["question_type"],
                    extra={
                        "question_id": qid,
                        "answer_type": ann["answer_type"],
                        "question_type": ann["question_type"],
                        "majority": normalise(ann["multiple_choice_answer"]),
                    },
                )
            )
        return out

    def image_key(self, image_id: Any, subtype: str, split: str) -> str:
        """Feature-store id of an official ``image_id``: ``image_id_format``, else ``str(id)``."""
        try:
            key = self.config.image_id_format.format(
                image_id=image_id,
                coco_split=COCO_IMAGE_SPLIT.get(subtype, subtype),
                subtype=subtype,
                split=split,
            )
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"task.image_id_format={self.config.image_id_format!r} cannot format image_id "
                f"{image_id!r} ({exc}); use the fields image_id, coco_split, subtype, split"
            ) from None
        if (
            self.features is not None
            and key not in self.features
            and str(image_id) in self.features
        ):
            return str(image_id)
        return key

    def annotations(self, split: str) -> list[dict[str, Any]]:
        """The official annotations of ``split`` in file order (``a+b`` splits concatenated)."""
        out = []
        for part in split.split("+"):
            if part not in self._annotations:
                path = self._official_paths(part)
                if path is None:
                    raise DataError(
                        f"VQA split '{part}': no official annotations file to score against"
                    )
                self._annotations[part] = _official_list(read_json(path[1]), "annotations", path[1])
            out += self._annotations[part]
        return out

    # -- answers -----------------------------------------------------------------------------
    def setup(
        self, tokenizer: Any, features: Any, *, max_boxes: int, state: dict[str, Any] | None = None
    ) -> None:
        self.tokenizer, self.features, self.max_boxes = tokenizer, features, max_boxes
        self._splits: dict[str, list[QAExample]] = {}
        train = self.examples(self.train_split)
        if state and "answers" in state:
            self.answers = list(state["answers"])
        elif self.config.answer_vocab:
            self.answers = read_answer_table(self._resolve(self.config.answer_vocab))
        else:
            counted = (
                [ex for s in self.config.answer_splits for ex in self.examples(s)]
                if self.config.answer_splits
                else train
            )
            self.answers = vqa_answer_vocab(counted, self.config.min_answer_count)
        if not self.answers:
            raise DataError(
                f"VQA split '{self.train_split}': no answer is given by >= "
                f"{self.config.min_answer_count} questions; lower task.min_answer_count"
            )
        self.answer_index = {a: i for i, a in enumerate(self.answers)}

    def _resolve(self, name: str) -> Path:
        path = Path(name).expanduser()
        path = path if path.is_absolute() else self.data.root / path
        if not path.is_file():
            raise DataError(
                f"task.answer_vocab: {path} not found; give an ans2label JSON or leave it empty"
            )
        return path

    # -- scoring -----------------------------------------------------------------------------
    score_inputs = {"annotations": (True, "the VQA annotations JSON"),
                    "questions": (False, "the VQA questions JSON")}

    @classmethod
    def score_files(cls, predictions: Path, **inputs: Path | None) -> dict[str, Any]:
        from vlbench.tasks.vqa.scoring import score_vqa_files

        metrics = score_vqa_files(inputs["annotations"], inputs.get("questions"), predictions)
        metrics.pop("per_question")  # one entry per question: not a table row
        return metrics

    def score(
        self, split: str, predictions: dict[str, str]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        by_id = {ex.qid: ex for ex in self.examples(split)}
        unknown = [qid for qid in predictions if qid not in by_id]
        if unknown:
            raise DataError(
                f"VQA split '{split}': {len(unknown)} predicted question id(s) are not in "
                f"the split (e.g. {unknown[:3]}); score predictions against their own split"
            )
        if self._format(split) == "lxmert":
            return score_lxmert(predictions, by_id)
        anns = [a for a in self.annotations(split) if str(a["question_id"]) in predictions]
        results = [
            {"question_id": a["question_id"], "answer": predictions[str(a["question_id"])]}
            for a in anns
        ]
        metrics = score_vqa({"annotations": anns}, None, results)
        per_question = metrics.pop("per_question")
        records = [
            {
                "id": str(a["question_id"]),
                "score": per_question[a["question_id"]] / 100.0,
                "prediction": predictions[str(a["question_id"])],
                "answers": [x["answer"] for x in a["answers"]],
                "question": by_id[str(a["question_id"])].question,
                "types": {"answer_type": a["answer_type"], "question_type": a["question_type"]},
            }
            for a in anns
        ]
        return metrics, records

    def write_predictions(self, predictions: dict[str, str], path: Path) -> Path:
        path = path.with_suffix(".json")
        rows = [
            {"question_id": int(qid) if qid.isdigit() else qid, "answer": answer}
            for qid, answer in predictions.items()
        ]
        path.write_text(json.dumps(rows))
        return path

    def read_predictions(self, path: Path) -> dict[str, str]:
        path = path.with_suffix(".json")
        rows = read_json(path)
        if not isinstance(rows, list):
            raise DataError(
                f'{path}: expected a JSON list of {{"question_id", "answer"}} '
                "(official VQA results)"
            )
        out = {}
        for i, r in enumerate(rows):
            if not isinstance(r, dict) or "question_id" not in r or "answer" not in r:
                raise DataError(f"{path}: results[{i}]: expected an object with question_id and answer")
            if not isinstance(r["answer"], str):  # the official evaluation compares strings
                raise DataError(f"{path}: results[{i}] (question_id {r['question_id']!r}): 'answer' "
                                f"is {r['answer']!r}, expected an answer string")
            out[str(r["question_id"])] = r["answer"]
        return out


def vqa_answer_vocab(examples: Iterable[QAExample], min_count: int = 9) -> list[str]:
    """Answers that are the (normalised) majority answer of >= ``min_count`` questions.

    bottom-up-attention-vqa's ``filter_answers``, which LXMERT's answer table comes from:
    the count is over questions' ``multiple_choice_answer``; for LXMERT-format examples,
    which lack it, over their best-scored label. Most frequent first, ties alphabetical.
    """
    counts: Counter[str] = Counter()
    for ex in examples:
        majority = ex.extra.get("majority")
        if majority is None and ex.label:
            majority = max(ex.label.items(), key=lambda kv: (kv[1], kv[0]))[0]
        if majority is not None:
            counts[majority] += 1
    return [a for a, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]


def read_answer_table(path: Path) -> list[str]:
    """LXMERT's ``ans2label`` (``{answer: index}``) or ``label2ans`` (``[answer, ...]``) JSON."""
    table = read_json(path)
    if isinstance(table, list) and all(isinstance(a, str) for a in table):
        return list(table)
    if isinstance(table, dict) and all(isinstance(i, int) for i in table.values()):
        answers = sorted(table, key=table.__getitem__)
        if [table[a] for a in answers] == list(range(len(answers))):
            return answers
    raise DataError(
        f"{path}: expected LXMERT's ans2label {{answer: index 0..N-1}} or label2ans [answer, ...]"
    )


def read_lxmert_split(path: Path) -> list[QAExample]:
    """LXMERT's VQA JSON.

    ``[{"answer_type", "img_id", "label": {answer: score}, "question_id", "question_type",
    "sent"}]``.
    """
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list (LXMERT's preprocessed VQA format)")
    out = []
    for i, d in enumerate(data):
        label = d.get("label", {}) if isinstance(d, dict) else None
        if isinstance(d, dict) and not isinstance(d.get("sent"), str):
            raise DataError(f"{path}: entry {i} key 'sent' is {d.get('sent')!r}; expected the question text")
        if isinstance(label, dict) and not all(_finite_number(v) for v in label.values()):
            raise DataError(f"{path}: entry {i} key 'label' must map answers to finite numeric scores")
        try:
            qtype = d.get("question_type", "")
            out.append(
                QAExample(
                    qid=str(d["question_id"]),
                    img_id=str(d["img_id"]),
                    question=d["sent"],
                    label={str(k): float(v) for k, v in d.get("label", {}).items()},
                    qtype=qtype,
                    extra={
                        "question_id": d["question_id"],
                        "answer_type": d.get("answer_type", ""),
                        "question_type": qtype,
                    },
                )
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise DataError(
                f"{path}: entry {i} lacks or mistypes {exc}; expected img_id, sent, "
                "question_id, label {answer: score}"
            ) from None
    return out


def score_lxmert(
    predictions: dict[str, str], by_id: dict[str, QAExample]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """LXMERT's evaluator (the soft label of the predicted answer), for splits without annotations.

    With the 10 answers gone, the label scores (0.3/0.6/0.9/1.0) stand in for the official
    leave-one-out accuracy, which they equal for 10 normalised, not all identical answers.
    """
    records, per_atype, per_qtype = [], {}, {}
    for qid, pred in predictions.items():
        ex = by_id[qid]
        score = float(ex.label.get(pred, 0.0))
        atype, qtype = ex.extra.get("answer_type", ""), ex.extra.get("question_type", "")
        per_atype.setdefault(atype, []).append(score)
        per_qtype.setdefault(qtype, []).append(score)
        records.append(
            {
                "id": qid,
                "score": score,
                "prediction": pred,
                "answers": sorted(
                    ex.label, key=lambda a: (-ex.label[a], a)
                ),  # label answers, best first
                "question": ex.question,
                "types": {"answer_type": atype, "question_type": qtype},
            }
        )
    scores = [r["score"] for r in records]
    metrics = {
        "accuracy": _percent(scores),
        "per_answer_type": {t: _percent(v) for t, v in per_atype.items()},
        "per_question_type": {t: _percent(v) for t, v in per_qtype.items()},
    }
    return metrics, records


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _percent(values: Sequence[float]) -> float:
    return round(100.0 * sum(values) / max(len(values), 1), PRECISION)


def _official_list(data: Any, key: str, path: Path) -> list[dict[str, Any]]:
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise DataError(
            f"{path}: expected a JSON object with a '{key}' list (official VQA v2 format)"
        )
    return data[key]


def _index_annotations(annotations: list[dict[str, Any]], path: Path) -> dict[Any, dict[str, Any]]:
    """question_id -> annotation, checking the fields the task reads."""
    by_qid = {}
    for i, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise DataError(f"{path}: annotations[{i}] is not an object")
        for key in (
            "question_id",
            "question_type",
            "answer_type",
            "multiple_choice_answer",
            "answers",
        ):
            if key not in ann:
                raise DataError(
                    f"{path}: annotations[{i}] lacks '{key}'; expected official VQA v2 fields"
                )
        answers = ann["answers"]
        if (
            not isinstance(answers, list)
            or not answers
            or not all(isinstance(a, dict) and isinstance(a.get("answer"), str) for a in answers)
        ):
            raise DataError(
                f"{path}: annotations[{i}] (question_id {ann['question_id']}): 'answers' "
                'must be a non-empty list of {"answer": str, ...}'
            )
        problem = annotation_problem(ann)
        if problem is not None:
            raise DataError(f"{path}: annotations[{i}] (question_id {ann['question_id']!r}): {problem}")
        by_qid[ann["question_id"]] = ann
    return by_qid
