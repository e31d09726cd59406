"""GQA (Hudson & Manning 2019): compositional questions over scenes, scored like ``eval.py``.

Reads the official balanced-questions JSON (dict by question id) with its choices
file, or LXMERT's preprocessed split JSON; writes ``[{"questionId", "prediction"}]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlbench.data.jsonio import read_json
from vlbench.data.lxmert_json import read_lxmert_gqa
from vlbench.errors import DataError
from vlbench.registry import register_task
from vlbench.tasks.gqa.scoring import check_questions
from vlbench.tasks.gqa.synth import GQA_PART
from vlbench.tasks.qa import QAExample, QATask

#: LXMERT's preprocessed files name the validation split "valid"
LXMERT_SPLIT_NAMES = {"val": "valid"}


@dataclass
class GQAConfig:
    train_split: str = "train"
    eval_splits: list[str] = field(default_factory=lambda: ["val", "testdev"])
    format: str = "auto"  # "official" questions JSON, "lxmert" preprocessed JSON, or "auto"
    min_answer_count: int = 1


@register_task("gqa", description="GQA: compositional question answering over real-world scenes")
class GQATask(QATask):
    """GQA question answering; metrics from the official GQA evaluation."""

    config_class = GQAConfig
    synthetic_part = GQA_PART
    task_name = "gqa"
    image_folders = ("gqa/images", "images")  # where GQA's images.zip unpacks
    # The official binary/open split: "query" questions are open, every other structural type
    # binary; all three count balanced questions only (rows carry "counted").
    metric_units = {"accuracy": {}, "binary": {"where": {"structural": ["!query"]}},
                    "open": {"where": {"structural": ["query"]}}}
    category_kinds = ("structural", "semantic")

    @property
    def train_split(self) -> str:
        return self.config.train_split

    @property
    def eval_splits(self) -> list[str]:
        return list(self.config.eval_splits)

    def _official_path(self, split: str) -> Path | None:
        for rel in (f"gqa/{split}_balanced_questions.json", f"{split}_balanced_questions.json"):
            if (self.data.root / rel).is_file():
                return self.data.root / rel
        return None

    def _lxmert_path(self, split: str) -> Path | None:
        name = LXMERT_SPLIT_NAMES.get(split, split)
        for rel in (f"gqa/lxmert/{name}.json", f"lxmert/{name}.json", f"{name}.json"):
            if (self.data.root / rel).is_file():
                return self.data.root / rel
        return None

    def questions(self, split: str) -> dict[str, dict[str, Any]]:
        """The official questions of ``split`` (dict by question id), read and checked once."""
        cache = self.__dict__.setdefault("_questions", {})
        if split not in cache:
            path = self._official_path(split)
            if path is None:
                raise DataError(f"GQA split '{split}': no {split}_balanced_questions.json under {self.data.root}")
            data = read_json(path)
            if not isinstance(data, dict):
                raise DataError(f"{path}: expected a JSON object of questions keyed by id (official GQA format)")
            check_questions(data, str(path))
            for qid, q in data.items():
                for key in ("imageId", "question"):  # what every split, test ones too, holds
                    if key not in q:
                        raise DataError(f"{path}: question {qid!r}: key '{key}' is missing; "
                                        "expected official GQA fields")
            cache[split] = data
        return cache[split]

    def choices(self, split: str) -> dict[str, Any] | None:
        for rel in (f"gqa/{split}_choices.json", f"{split}_choices.json"):
            if (self.data.root / rel).is_file():
                return read_json(self.data.root / rel)
        return None

    def _format(self, split: str) -> str:
        fmt = self.config.format
        if fmt == "auto":
            fmt = "official" if self._official_path(split) else "lxmert" if self._lxmert_path(split) else ""
        if fmt not in ("official", "lxmert"):
            raise DataError(
                f"GQA split '{split}': found neither {split}_balanced_questions.json nor LXMERT's "
                f"{LXMERT_SPLIT_NAMES.get(split, split)}.json under {self.data.root} (or its gqa/ folder)"
            )
        return fmt

    def read_split(self, split: str) -> list[QAExample]:
        if self._format(split) == "lxmert":
            return read_lxmert_split(self._lxmert_path(split) or self.data.root / f"{split}.json")
        # questions() checked every field read here
        return [
            QAExample(
                qid=str(qid), img_id=str(q["imageId"]), question=q["question"],
                label={q["answer"]: 1.0} if q.get("answer") is not None else {},
                qtype=q.get("types", {}).get("detailed", ""),
                extra={"types": q.get("types", {})},
            )
            for qid, q in self.questions(split).items()
        ]

    score_inputs = {"questions": (True, "the GQA questions JSON"),
                    "choices": (False, "the GQA choices JSON, for validity and plausibility")}

    @classmethod
    def score_files(cls, predictions: Path, **inputs: Path | None) -> dict[str, Any]:
        from vlbench.tasks.gqa.scoring import score_gqa_files

        return score_gqa_files(inputs["questions"], predictions, inputs.get("choices"))

    def score(self, split: str, predictions: dict[str, str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        records = []
        by_id = {ex.qid: ex for ex in self.examples(split)}
        official = self._format(split) == "official"
        for qid, pred in predictions.items():
            ex = by_id[qid]
            gold = next(iter(ex.label), "")
            records.append({
                "id": qid, "score": float(ex.label.get(pred, 0.0)), "prediction": pred, "answer": gold,
                "question": ex.question, "types": {k: v for k, v in ex.extra.get("types", {}).items()
                                                   if k in ("structural", "semantic")},
                # the official metrics count balanced questions only: paired statistics must too
                "counted": bool(self.questions(split)[qid].get("isBalanced", True)) if official else True,
            })
        if not official:
            acc = 100.0 * sum(r["score"] for r in records) / max(len(records), 1)
            return {"accuracy": acc}, records
        from vlbench.tasks.gqa.scoring import score_gqa

        questions = self.questions(split)
        subset = {qid: questions[qid] for qid in predictions}
        preds = [{"questionId": qid, "prediction": p} for qid, p in predictions.items()]
        choices = self.choices(split)
        if choices is not None:
            choices = {qid: choices[qid] for qid in predictions if qid in choices}
        return score_gqa(subset, preds, choices), records

    @classmethod
    def scene_objects(cls, data: Any, img_ids: Any, limit: int) -> dict[str, Any]:
        """Objects of GQA's scene graphs (the synthetic worlds write them too)."""
        from vlbench.tasks.gqa.scene_graphs import scene_objects

        return scene_objects(data.root, img_ids, limit)

    def write_predictions(self, predictions: dict[str, str], path: Path) -> Path:
        path = path.with_suffix(".json")
        rows = [{"questionId": qid, "prediction": p} for qid, p in predictions.items()]
        path.write_text(json.dumps(rows))
        return path

    def read_predictions(self, path: Path) -> dict[str, str]:
        path = path.with_suffix(".json")
        rows = read_json(path)
        if not isinstance(rows, list):
            raise DataError(f'{path}: expected a JSON list of {{"questionId", "prediction"}} rows')
        out = {}
        for i, r in enumerate(rows):
            if not isinstance(r, dict) or "questionId" not in r or "prediction" not in r:
                raise DataError(f'{path}: row {i}: expected an object with "questionId" and "prediction"')
            if not isinstance(r["prediction"], str):  # the official scorer compares strings
                raise DataError(f"{path}: row {i} (questionId {r['questionId']!r}): 'prediction' "
                                f"is {r['prediction']!r}, expected an answer string")
            out[str(r["questionId"])] = r["prediction"]
        return out


def read_lxmert_split(path: Path) -> list[QAExample]:
    """LXMERT's preprocessed GQA JSON: ``[{"img_id", "label": {answer: score}, "question_id", "sent"}]``."""
    return [
        QAExample(qid=d["question_id"], img_id=d["img_id"], question=d["sent"], label=d.get("label", {}),
                  qtype=" ".join(d["sent"].lower().split()[:2]))  # no types here: condition on opening words
        for d in read_lxmert_gqa(path)
    ]
