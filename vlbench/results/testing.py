"""Build run directories in the run-directory contract's format, for tests and examples.

Nothing here trains a model: scores are given, and the metrics written to run.json are
computed from them the way the official scripts would, so records and per-question files
agree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlbench.results.records import RUN_FORMAT_VERSION, write_json_atomic

GQA_STRUCTURAL = ("query", "verify", "logical", "choose", "compare")
GQA_SEMANTIC = ("obj", "attr", "rel", "cat", "global")
VQA_ANSWER_TYPES = ("yes/no", "number", "other")


def question_rows(task: str, scores: Sequence[float], wrong: str = "wrong") -> list[dict[str, Any]]:
    """Per-question rows (``per_question/{split}.jsonl``) for ``scores``, in the task's shape.

    Question ``i`` has a fixed id, text, gold answer and type, so rows built for two runs
    line up; a score of 1 predicts the gold answer, anything else predicts ``wrong``.
    """
    rows = []
    for i, score in enumerate(scores):
        gold = f"answer{i % 7}"
        row: dict[str, Any] = {"score": float(score), "question": f"question {i}?",
                               "prediction": gold if score >= 1.0 else f"{wrong}{i % 3}"}
        if task == "vqa":
            row.update(id=str(1000 + i), answers=[gold] * 10,
                       types={"answer_type": VQA_ANSWER_TYPES[i % 3], "question_type": "what"})
        elif task == "gqa":
            row.update(id=f"q{i:05d}", answer=gold,
                       types={"structural": GQA_STRUCTURAL[i % 5], "semantic": GQA_SEMANTIC[i % 5]})
        else:  # nlvr2: each sentence is written for two image pairs, its group
            row.update(id=f"dev-{i // 4}-{i % 2}-{(i // 2) % 2}", answer="True", types={},
                       group=f"dev-{i // 4}--{(i // 2) % 2}")
        rows.append(row)
    return rows


def metrics_for(task: str, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The task's metrics (percent) computed from per-question rows."""
    scores = np.array([r["score"] for r in rows])
    out: dict[str, Any] = {"accuracy": 100.0 * float(scores.mean())}

    def by(kind: str) -> dict[str, float]:
        labels = np.array([r["types"][kind] for r in rows])
        return {c: 100.0 * float(scores[labels == c].mean()) for c in sorted(set(labels))}

    if task == "gqa":
        is_open = np.array([r["types"]["structural"] == "query" for r in rows])
        out["binary"] = 100.0 * float(scores[~is_open].mean())
        out["open"] = 100.0 * float(scores[is_open].mean())
        out["validity"] = 96.0
        out["per_structural"] = by("structural")
        out["per_semantic"] = by("semantic")
    elif task == "vqa":
        out["per_answer_type"] = by("answer_type")
    else:
        ok: dict[str, bool] = {}
        for key, score in zip([r["group"] for r in rows], scores, strict=True):
            ok[key] = ok.get(key, True) and score >= 1.0
        out["consistency"] = 100.0 * float(np.mean(list(ok.values())))
    return out


def write_run(
    root: str | Path,
    name: str,
    *,
    task: str = "gqa",
    model: str = "lxmert",
    variant: str | None = None,
    seed: int = 0,
    objectives: Sequence[str] = (),
    scores: dict[str, Sequence[float]] | None = None,
    metrics: dict[str, dict[str, Any]] | None = None,
    synthetic: bool = True,
    fingerprint: str = "sha256:" + "a" * 64,
    questions: str | None = None,
    params: int = 1_000_000,
    train_examples_per_s: float = 800.0,
    wall_seconds: float = 120.0,
    status: str = "finished",
    history: Sequence[dict[str, Any]] | None = None,
    baselines: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    metric_units: dict[str, dict[str, Any]] | None = None,
    category_kinds: Sequence[str] | None = None,
) -> Path:
    """Write ``root/name`` as a run directory and return its path.

    ``scores`` maps split -> per-question scores: per-question files are written and, unless
    ``metrics`` is given, the record's metrics are computed from them. ``metric_units`` and
    ``category_kinds`` default to what the registered task declares, as the engine writes
    them (none for a task that is not registered). ``questions`` (the benchmark's
    fingerprint) is left out unless given, as in records made before runs carried it.
    """
    run_dir = Path(root) / name
    described = _description(task)
    if metric_units is not None:
        described["metric_units"] = dict(metric_units)
    if category_kinds is not None:
        described["category_kinds"] = list(category_kinds)
    metrics = dict(metrics or {})
    for split, values in (scores or {}).items():
        rows = question_rows(task, values)
        path = run_dir / "per_question" / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        metrics.setdefault(split, metrics_for(task, rows))
    if history is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "history.jsonl").write_text(
            "".join(json.dumps(h) + "\n" for h in history), encoding="utf-8")
    record = {
        "vlbench_run": RUN_FORMAT_VERSION,
        "run_id": f"{task}-{name}",
        "status": status,
        "model": model,
        "variant": variant or model,
        "task": task,
        "seed": seed,
        "objectives": list(objectives),
        "config": config or {"model": {}, "task": {}, "train": {"lr": 1e-4}, "data": {}},
        "data": {"source": "synthetic" if synthetic else "/data/real", "synthetic": synthetic,
                 "fingerprint": fingerprint, "splits": {},
                 **({"questions": questions} if questions else {})},
        "metrics": metrics,
        "primary_metric": "accuracy",
        **described,
        "eval_splits": list(metrics),
        "baselines": baselines or {},
        "params": params,
        "throughput": {"train_examples_per_s": train_examples_per_s,
                       "eval_examples_per_s": 2000.0},
        "wall_seconds": wall_seconds,
        "provenance": {"vlbench": "0.1.0", "git_commit": "0" * 40, "git_dirty": False,
                       "python": "3.11", "torch": "2.4", "device": "cpu", "platform": "linux",
                       "command": "vlbench train", "started": "2026-01-01T00:00:00Z"},
        "checkpoint": "checkpoints/best",
        "init": None,
    }
    write_json_atomic(run_dir / "run.json", record)
    return run_dir


def _description(task: str) -> dict[str, Any]:
    """``metric_units`` and ``category_kinds`` of a registered task, as run.json holds them."""
    # Imported late: the registry loads the task plugins, which most of this module skips.
    from vlbench.engine.scoring import metric_description
    from vlbench.registry import TASKS

    return metric_description(TASKS.get(task)) if task in TASKS else {}
