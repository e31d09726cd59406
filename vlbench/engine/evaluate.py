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

from vlbench.engine import distributed
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
    """Predictions keyed by example id, and the seconds it took.

    Under torchrun every rank must call this: rank r predicts batches r, r + N, ... and all
    ranks get every prediction, in the order of one process. Batches are the one-process
    batches (not shares of them), so batch-dependent inputs (padding, seeded masks) and hence
    predictions and metrics are those of one process.
    """
    was_training = model.training
    model.eval()
    rank, world = distributed.rank(), distributed.world_size()
    parts: list[list[tuple[str, Any]]] = []  # one list of (id, prediction) per batch
    start = time.perf_counter()
    for i in range(rank * batch_size, len(examples), batch_size * world):
        batch = to_device(task.collate(examples[i:i + batch_size]), device)
        with autocast(device, precision):
            logits = model(batch)
        parts.append(list(task.predict(logits.float(), batch)))
    if world > 1:
        # shares[r][n] is batch r + n * world: deal them back into one-process order.
        shares = distributed.gather(parts)
        parts = [shares[r][n] for n in range(len(shares[0])) for r in range(world) if n < len(shares[r])]
    preds: dict[str, Any] = {k: v for part in parts for k, v in part}
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
