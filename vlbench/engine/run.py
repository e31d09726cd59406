"""Library entry points behind ``vlbench train`` and ``vlbench evaluate``, and the run record."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from vlbench.engine import distributed
from vlbench.engine.checkpoint import load_weights, recover
from vlbench.engine.evaluate import eval_examples, predict, write_outputs
from vlbench.engine.provenance import provenance
from vlbench.engine.reuse import find_run, remove_stale
from vlbench.engine.session import (
    Session,
    new_session,
    open_session,
    planned_inputs,
    seed_everything,
)
from vlbench.engine.task import hash_examples, questions_fingerprint
from vlbench.engine.trainer import BEST, LAST, Trainer
from vlbench.errors import CheckpointError, ConfigError, DataError
from vlbench.results.records import write_json_atomic


def data_fingerprint(session: Session) -> str:
    """Content hash of every example the run reads, plus the feature store's own fingerprint
    and what the task records about other data it reads (e.g. the images' fingerprint)."""
    h = hashlib.sha256(session.features.fingerprint.encode())
    task = session.task
    hash_examples(h, task)
    extra = task.data_record()
    if extra:  # nothing added for region-feature runs: their fingerprints stay as they were
        h.update(json.dumps(extra, sort_keys=True).encode())
    return "sha256:" + h.hexdigest()


def base_record(session: Session) -> dict[str, Any]:
    """The parts of run.json fixed when the run starts."""
    from vlbench.engine.scoring import metric_description, task_baselines

    task = session.task
    splits = {s: len(task.examples(s)) for s in [task.train_split, *task.eval_splits]}
    return {
        "vlbench_run": 1,
        "run_id": session.run_dir.name,
        "model": session.model_name,
        "variant": session.variant,
        "task": session.task_name,
        "seed": session.seed,
        "objectives": list(session.extra.get("objectives", [])),
        "config": session.cfg.to_dict(),
        "data": {"source": session.data.label, "synthetic": session.data.synthetic,
                 "fingerprint": data_fingerprint(session),
                 "questions": questions_fingerprint(task), "splits": splits,
                 # grid features from `vlbench features extract`: which backbone, which weights
                 "features_meta": getattr(session.features, "meta", {}) or None,
                 **task.data_record()},  # e.g. the images a pixel model reads
        "primary_metric": task.primary_metric,
        # How the metrics are means over per-question rows ("metric_units", "category_kinds"):
        # the results layer reads them, so it needs no knowledge of any task.
        **metric_description(task),
        "eval_splits": list(task.eval_splits),
        "baselines": task_baselines(task),
        "params": sum(p.numel() for p in session.model.parameters()),
        "provenance": provenance(session.device),
        "init": session.extra.get("init"),
        "inputs": session.extra.get("inputs"),
    }


def finish_record(base: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    record = dict(base)
    record.update({
        "status": state["status"],
        "metrics": state["best_metrics"],
        "best_epoch": state["best_epoch"],
        "epochs_done": state["epoch"],
        "steps": state["step"],
        "throughput": {
            "train_examples_per_s": state["train_examples"] / state["train_seconds"] if state["train_seconds"] else None,
            "eval_examples_per_s": state["eval_examples"] / state["eval_seconds"] if state["eval_seconds"] else None,
        },
        "wall_seconds": round(state["wall_seconds"], 3),
        "checkpoint": BEST,
    })
    if state.get("failure"):
        record["failure"] = state["failure"]
    return record


def train(model: str, task: str, *, data_dir: str | None = None, seed: int = 0, out: str | Path = "runs",
          overrides: dict[str, str] | None = None, init: str | Path | None = None,
          console: Console | None = None, reuse: bool = False) -> Path:
    """Train a new run (from scratch, or from the pre-trained checkpoint ``init``); returns its directory.

    With ``reuse``, a run under ``out`` with the same inputs (see ``vlbench.engine.reuse``) is
    returned if finished or resumed if interrupted, and runs it replaces are removed.

    Under torchrun every process calls this: rank 0 prepares the run (data, run directory,
    run.json) while the others wait, then they rebuild its session from the run directory.
    """
    distributed.setup()
    console = distributed.console_for_rank(console or Console(stderr=True))
    overrides = dict(overrides or {})
    check_out(Path(out))
    if reuse:
        if init is not None:
            raise ConfigError("--reuse keys a run by its config, data and seed; it does not cover "
                              "--init, so use one or the other")

        def lookup() -> tuple[Path, str] | None:
            key = planned_inputs(model, task, data_dir=data_dir, seed=seed, overrides=overrides,
                                 say=lambda _: None)["key"]
            found = find_run(Path(out), key)
            return None if found is None else (found[0], str(found[1].get("status")))

        found = distributed.broadcast(distributed.main_first(lookup))
        if found is not None and found[1] == "finished":
            console.print(f"Reusing {found[0]} (same config, data, code revision and seed)")
            return found[0]
        if found is not None:
            try:
                run_dir = resume(found[0], console=console)
                distributed.main_first(lambda: remove_stale(Path(out), run_dir, model, task, seed))
                return run_dir
            except CheckpointError:  # stopped before its first checkpoint: start again
                distributed.main_first(lambda: shutil.rmtree(found[0]))

    def start() -> tuple[Session, Trainer]:
        session = new_session(model, task, data_dir=data_dir, seed=seed, out=out, overrides=overrides,
                              say=console.print)
        if init is not None:
            from vlbench.engine.init import apply_init

            try:
                session.extra["init"] = apply_init(session, init, say=console.print)
            except BaseException:
                shutil.rmtree(session.run_dir)  # nothing was trained: leave no half-made run behind
                raise
            session.extra["objectives"] = session.extra["init"].get("objectives", [])
        console.print(f"Run directory: {session.run_dir}")
        base = base_record(session)
        trainer = Trainer(session, console, on_record=lambda st: finish_record(base, st))
        write_json_atomic(session.run_dir / "run.json", finish_record(base, dict(trainer.state, status="running")))
        return session, trainer

    started = distributed.main_first(start)
    run_dir = distributed.broadcast(None if started is None else started[0].run_dir)
    if started is not None:
        session, trainer = started
    else:
        # The other ranks take the session rank 0 wrote down (config, tokenizer, label space),
        # as a resume does; DDP then gives them rank 0's weights.
        session = open_session(run_dir, say=console.print)
        seed_everything(distributed.rank_seed(seed), session.cfg.train.deterministic)
        trainer = Trainer(session, console)  # only rank 0 writes the record
    trainer.fit()
    if reuse:
        for stale in distributed.main_first(lambda: remove_stale(Path(out), session.run_dir, model, task, seed)) or []:
            console.print(f"Removed {stale} (replaced: its inputs differ)")
    return session.run_dir


def check_out(out: Path) -> None:
    """``--out`` must be a folder this process can write, checked before any work."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; pass a folder for the run directories")
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: {existing} is not writable; pass a folder you can write to")


def resume(run_dir: str | Path, *, console: Console | None = None) -> Path:
    """Continue an interrupted run from its last checkpoint; ends where an uninterrupted run would.

    The checkpoint counts global steps and batches, so any number of processes may resume it.
    """
    distributed.setup()
    console = distributed.console_for_rank(console or Console(stderr=True))
    session = open_session(run_dir, say=console.print)
    record = session.extra["record"]
    if record.get("status") == "finished":
        console.print(f"{run_dir} is already finished; nothing to resume")
        return session.run_dir

    def check() -> None:
        recover(session.run_dir / LAST)
        if not (session.run_dir / LAST / "trainer_state.json").is_file():
            raise CheckpointError(f"{run_dir}: no checkpoint to resume from (it was interrupted before its "
                                  "first save); start it again")
        fingerprint = data_fingerprint(session)
        if fingerprint != record["data"]["fingerprint"]:
            raise DataError(f"{run_dir}: the data changed since the run started (fingerprint "
                            f"{fingerprint[:19]}... now, {record['data']['fingerprint'][:19]}... then); "
                            "resume it on the data it was started with, or start a new run")

    distributed.main_first(check)
    base = {k: v for k, v in record.items() if k not in ("status", "metrics", "throughput", "wall_seconds")}
    now = provenance(session.device)
    base["provenance"] = dict(record["provenance"], resumed=now["started"])
    if now["world_size"] != record["provenance"].get("world_size", 1):
        base["provenance"]["resumed_world_size"] = now["world_size"]
    trainer = Trainer(session, console, on_record=lambda st: finish_record(base, st))
    trainer.resume()
    trainer.fit()
    return session.run_dir


def evaluate(target: str | Path, *, split: str, task: str | None = None, data_dir: str | None = None,
             console: Console | None = None) -> dict[str, Any]:
    """Score a run's best checkpoint (or a given checkpoint directory inside a run) on ``split``."""
    distributed.setup()
    console = distributed.console_for_rank(console or Console(stderr=True))
    target = Path(target)
    run_dir, ckpt = (target, target / BEST) if (target / "run.json").is_file() else (target.parent.parent, target)
    if not (run_dir / "run.json").is_file():
        raise CheckpointError(f"{target}: not a run directory or a checkpoint inside one (no run.json found)")
    session = open_session(run_dir, data_dir=data_dir, say=console.print)
    if task is not None and task != session.task_name:
        raise CheckpointError(f"{run_dir} was trained for task '{session.task_name}', not '{task}'")
    load_weights(session.model, ckpt / "model.safetensors")
    session.device = distributed.device_for(session.device)
    model = session.model.to(session.device)
    examples = eval_examples(session.task, split)
    t0 = time.perf_counter()
    preds, seconds = predict(model, session.task, examples, batch_size=session.cfg.train.batch_size * 2,
                             device=session.device, precision=session.cfg.train.precision)
    metrics, records = session.task.score(split, preds)
    # An evaluation has its own folder: the record's predictions stay those of its metrics.
    out = run_dir / "evaluations" / ckpt.name
    path = out / "predictions" / f"{split}{session.task.prediction_suffix}"
    distributed.main_first(lambda: write_outputs(out, session.task, split, preds, records))
    result = {"run": str(run_dir), "checkpoint": str(ckpt), "split": split, "metrics": metrics,
              "predictions": str(path), "examples": len(examples),
              "examples_per_s": len(examples) / seconds if seconds else None,
              "seconds": time.perf_counter() - t0}
    distributed.main_first(lambda: write_json_atomic(out / f"{split}.json", result))
    return result
