"""Reusing finished runs: what determines a run's result, as one key.

``vlbench train --reuse`` (and ``leaderboards/make.sh`` through it) looks in ``--out`` for a
run with the same key before training: a finished one is reused, an interrupted one resumed,
and runs of the same model, task and seed with another key are replaced once the new run
finishes. So a regeneration that stops half-way resumes where it stopped, in this session or
the next, and only what changed is trained again.

The key covers the fully resolved config, the seed, the data (a synthetic world's content
fingerprint; a real data directory's path), what the run reads besides it (``read``: the
content fingerprint of a feature TSV named by ``data.features``, the images a pixel model
reads), the model family's and the task's ``revision`` (bumped by a plugin when its code
changes results) and the torch version (numerics differ across releases).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from vlbench.data.source import DataSource
from vlbench.engine.backbone import model_entry
from vlbench.registry import TASKS


def inputs_key(model: str, task: str, seed: int, config: dict[str, Any], data: DataSource,
               read: dict[str, str] | None = None) -> dict[str, Any]:
    """What determines a run's result, and its hash (``key``); stored in run.json as ``inputs``.

    ``read`` names the fingerprints of inputs beyond the data directory's own (see
    ``session.inputs_read``); empty for a run on the world's detector features, whose key
    stays what it was before such inputs existed.
    """
    inputs = {
        "model": model, "family": model_entry(model).family, "task": task, "seed": seed,
        "config": config,
        "data": data.manifest.get("fingerprint") or data.label,
        "revisions": {"model": model_entry(model).spec.revision, "task": TASKS.get(task).revision},
        "torch": torch.__version__.split("+")[0],
        **({"read": read} if read else {}),
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()
    return {"key": digest, **{k: inputs[k] for k in ("data", "read", "revisions", "torch")
                              if k in inputs}}


def runs_in(out: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Run directories directly under ``out`` with a readable run.json, oldest first."""
    found = []
    for record_path in sorted(Path(out).glob("*/run.json")):
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict):
            found.append((record_path.parent, record))
    return found


def find_run(out: Path, key: str) -> tuple[Path, dict[str, Any]] | None:
    """The run under ``out`` with inputs ``key`` (a finished one first), if any."""
    same = [(d, r) for d, r in runs_in(out) if (r.get("inputs") or {}).get("key") == key]
    same.sort(key=lambda dr: dr[1].get("status") != "finished")
    return same[0] if same else None


def remove_stale(out: Path, run_dir: Path, model: str, task: str, seed: int) -> list[Path]:
    """Delete the runs under ``out`` of the same model, task and seed as ``run_dir`` but with
    other inputs (what ``run_dir`` replaces); returns them."""
    keep = json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("inputs", {}).get("key")
    stale = [d for d, r in runs_in(out)
             if d != run_dir and (r.get("model"), r.get("task"), r.get("seed")) == (model, task, seed)
             and (r.get("inputs") or {}).get("key") != keep]
    for d in stale:
        shutil.rmtree(d)
    return stale
