"""Re-scoring stored predictions with the current scorer (no model, no features needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlbench.config import config_from_dict
from vlbench.data.jsonio import read_json
from vlbench.data.source import resolve_data
from vlbench.engine.backbone import model_entry
from vlbench.engine.evaluate import write_outputs
from vlbench.errors import DataError
from vlbench.registry import TASKS


def rescore_run(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Metrics per split recomputed from ``predictions/``; per-question records are rewritten."""
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
    return out
