"""Prediction and official scoring of one split; writing predictions beside the run record."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlbench.engine.task import Task


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def predict(model: nn.Module, task: Task, examples: Sequence[Any], *, batch_size: int,
            device: torch.device, precision: str = "fp32") -> tuple[dict[str, Any], float]:
    """Predictions keyed by example id, and the seconds it took."""
    was_training = model.training
    model.eval()
    preds: dict[str, Any] = {}
    start = time.perf_counter()
    for i in range(0, len(examples), batch_size):
        batch = to_device(task.collate(examples[i:i + batch_size]), device)
        with autocast(device, precision):
            logits = model(batch)
        preds.update(task.predict(logits.float(), batch))
    seconds = time.perf_counter() - start
    model.train(was_training)
    return preds, seconds


def eval_examples(task: Task, split: str, limit: int = 0) -> Sequence[Any]:
    examples = task.examples(split)
    return examples[:limit] if limit else examples


def write_outputs(run_dir: Path, task: Task, split: str, predictions: dict[str, Any],
                  records: list[dict[str, Any]]) -> Path:
    """Official-format predictions and per-question records (see the run contract), each
    written to a temporary name and renamed, so a full disk or a kill never leaves half a file."""
    (run_dir / "predictions").mkdir(parents=True, exist_ok=True)
    (run_dir / "per_question").mkdir(parents=True, exist_ok=True)
    final = run_dir / "predictions" / f"{split}{task.prediction_suffix}"
    # The temporary name keeps the suffix, which tasks may set on the path they are given.
    written = task.write_predictions(predictions, final.with_name(".tmp-" + final.name))
    os.replace(written, final)
    per_question = run_dir / "per_question" / f"{split}.jsonl"
    tmp = per_question.with_name(".tmp-" + per_question.name)
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, per_question)
    return final
