"""Re-scoring stored predictions with the current scorer (no model, no features needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlbench.config import config_from_dict
from vlbench.data.jsonio import read_json
from vlbench.data.source import resolve_data
from vlbench.engine.backbone import model_entry
from vlbench.engine.evaluate import write_outputs
from vlbench.engine.task import Task, questions_fingerprint
from vlbench.errors import DataError
from vlbench.registry import TASKS
from vlbench.results.records import write_json_atomic


def metric_description(task: type[Task] | Task) -> dict[str, Any]:
    """The run.json keys that say how ``task``'s metrics are built from per-question rows."""
    return {"metric_units": {name: dict(spec) for name, spec in task.metric_units.items()},
            "category_kinds": list(task.category_kinds)}


def task_baselines(task: Task) -> dict[str, dict[str, Any]]:
    """Every baseline the task defines, per evaluation split (run.json ``baselines``). They are
    computed from the data alone, so a rescore can bring an earlier record's up to date."""
    baselines: dict[str, dict[str, Any]] = {}
    for split in task.eval_splits:
        for name, metrics in task.baselines(split).items():
            baselines.setdefault(name, {})[split] = metrics
    return baselines


def rescore_run(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Metrics per split recomputed from ``predictions/``; per-question records are rewritten.

    run.json also gets the task's current ``metric_units``, ``category_kinds`` and baselines,
    and its questions' fingerprint (``data.questions``), so a record of an earlier release
    describes the per-question rows it now has, carries every baseline the task now defines
    and joins the leaderboard section of its benchmark (its metrics are left to the caller,
    which keeps the previous ones).
    """
    run_dir = Path(run_dir)
    record = read_json(run_dir / "run.json")
    task_cls = TASKS.get(record["task"])
    cfg = config_from_dict(model_entry(record["model"]).spec.config_class, task_cls.config_class, record["config"])
    source = record["data"]["source"]
    task = task_cls(cfg.task, resolve_data(None if source == "synthetic" else source, quiet=True))
    out: dict[str, dict[str, Any]] = {}
    for split in record.get("eval_splits", list(record.get("metrics", {}))):
        path = run_dir / "predictions" / f"{split}{task.prediction_suffix}"
        if not path.is_file():
            raise DataError(f"{path}: no stored predictions to re-score for split '{split}'")
        predictions = task.read_predictions(path)
        metrics, records = task.score(split, predictions)
        write_outputs(run_dir, task, split, predictions, records)
        out[split] = metrics
    # Only once every per-question file is rewritten: the description is of the new rows.
    current = read_json(run_dir / "run.json")  # re-read: keep whatever changed meanwhile
    described = {**current, **metric_description(task_cls), "baselines": task_baselines(task),
                 # the benchmark's fingerprint, for records made before runs carried it
                 "data": {**current["data"], "questions": questions_fingerprint(task)}}
    if described != current:
        write_json_atomic(run_dir / "run.json", described)
    return out
