"""The training loop: AdamW, warmup + linear decay, clipping, accumulation, bf16, resume.

State is small and explicit (model, optimizer, scheduler, epoch, batch within the
epoch, step, best score, RNG) and a checkpoint saves and restores all of it, so a
resumed run ends with the same weights as an uninterrupted one. Each epoch visits the
training set in an order drawn from ``(seed, epoch)`` alone.

SIGTERM and Ctrl-C ask the loop to stop; it stops at the next optimizer-step boundary,
where model, optimizer and counters agree, and saves there. A second signal stops at
once and keeps the last checkpoint on disk.

Under torchrun (see :mod:`vlbench.engine.distributed`) every rank computes the same epoch
order and takes its interleaved share of each global batch of ``train.batch_size``
examples; DistributedDataParallel averages the gradients, weighted so that they equal the
one-process gradients of the whole batch. Rank 0 writes every file; evaluation is sharded
by whole batches and gathered. The saved state counts global batches and steps, so a run
resumes with any number of processes. With one process there is no process group and the
loop is the plain one.

The loop does not wait on the device between steps: losses stay on it until a log line, a
checkpoint or the end of an epoch reads them (one transfer for all of them; a non-finite loss
is reported there, with the step it came from, before anything is saved). Batches come from
:mod:`vlbench.engine.loader` (built ahead in worker processes on CUDA); fused AdamW, TF32 and
MFU logging on CUDA are in :mod:`vlbench.engine.speed`; ``train.compile`` runs the training
forward and backward through ``torch.compile``. On CPU none of this changes a result.
"""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from vlbench.engine import distributed, loader, speed
from vlbench.engine.checkpoint import load_training_state, load_weights, save_checkpoint
from vlbench.engine.evaluate import autocast, eval_examples, predict, to_device, write_outputs
from vlbench.engine.session import Session, seed_everything
from vlbench.errors import TrainingError
from vlbench.results.records import write_json_atomic

LAST, BEST = "checkpoints/last", "checkpoints/best"

#: torchrun forwards a stop signal to its workers, and a terminal's Ctrl-C reaches them as
#: well: a repeat this soon after the first (seconds) is the same request, not a second one.
SAME_SIGNAL_S = 2.0


def optimizer_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """BERT convention: no weight decay on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_linear(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    warmup = max(1, int(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def epoch_order(n: int, seed: int, epoch: int, groups: Sequence[str] | None = None) -> list[int]:
    """Example indices for one epoch, drawn from ``(seed, epoch)`` alone.

    With ``groups`` (one key per example) the groups are shuffled and each group's examples
    follow one another, so a group lands in one batch unless it straddles a batch boundary.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    if groups is None:
        return torch.randperm(n, generator=g).tolist()
    members: dict[str, list[int]] = {}
    for i, key in enumerate(groups):
        members.setdefault(key, []).append(i)
    blocks = list(members.values())
    return [i for j in torch.randperm(len(blocks), generator=g).tolist() for i in blocks[j]]


class Trainer:
    """Fine-tunes ``session.model`` on the task's training split, evaluating every epoch."""

    def __init__(self, session: Session, console: Console | None = None,
                 on_record: Callable[[dict[str, Any]], dict[str, Any]] | None = None):
        self.s = session
        self.cfg = session.cfg.train
        self.console = console or Console(stderr=True)
        self.on_record = on_record  # builds run.json from the trainer's summary
        self.rank, self.world = distributed.rank(), distributed.world_size()
        session.device = distributed.device_for(session.device)
        self.model = session.model.to(session.device)
        # What the loop calls: DistributedDataParallel over ``model`` with several ranks (made in
        # ``fit``: rank 0 builds its trainer while the others wait), else ``model``;
        # checkpoints and evaluation use ``model`` itself.
        self.net: nn.Module = self.model
        self.train_examples = eval_examples(session.task, session.task.train_split, self.cfg.train_limit)
        if not self.train_examples:
            raise ValueError(f"split '{session.task.train_split}' has no training examples")
        self.groups = session.task.batch_groups(self.train_examples)
        if self.groups is not None and len(self.groups) != len(self.train_examples):
            raise ValueError(f"{session.task_name}: batch_groups gave {len(self.groups)} keys for "
                             f"{len(self.train_examples)} training examples")
        self.batches_per_epoch = math.ceil(len(self.train_examples) / self.cfg.batch_size)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / self.cfg.grad_accum)
        self.total_steps = self.steps_per_epoch * self.cfg.epochs
        speed.setup_device(session.device)
        self.optimizer = speed.adamw(optimizer_groups(self.model, self.cfg.weight_decay), self.cfg.lr,
                                     session.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_linear(self.total_steps, self.cfg.warmup_ratio))
        # ``batch`` (the position in the epoch) and ``step`` count global batches and optimizer
        # steps, the same whatever the world size, so any number of processes can resume.
        self.state: dict[str, Any] = {
            "epoch": 0, "batch": 0, "step": 0, "best_score": None, "best_epoch": None,
            "best_metrics": {}, "train_seconds": 0.0, "train_examples": 0, "eval_seconds": 0.0,
            "eval_examples": 0, "wall_seconds": 0.0, "history_bytes": 0,
        }
        self._stop_requested = False
        self._stop_time = 0.0
        self.workers = loader.worker_count(self.cfg.loader_workers, session.device)
        self.peak_flops = speed.peak_flops(session.device)  # None on CPU: no MFU
        self.flops_per_example: float | None = None  # measured on the first batch (see speed)

    # -- checkpoints ---------------------------------------------------------------
    def checkpoint_config(self) -> dict[str, Any]:
        """The checkpoint's config.json (and answer table): see ``vlbench.engine.layout``."""
        # The answer table of a QA head (a fine-tuned "qa" head, or the pre-training QA head).
        answers = self.s.task.state().get("answers")
        return {"family": self.s.entry.family, "model": self.s.model_name, "task": self.s.task_name,
                "config": self.s.cfg.to_dict(), "heads": dict(self.model.heads.items()),
                "answers": answers}

    def save_last(self) -> None:
        """Save the resumable state (rank 0; the others wait for it)."""
        if distributed.is_main():
            self.state["history_bytes"] = self._history_path.stat().st_size if self._history_path.exists() else 0
            # The state is the same on every rank but for the RNG: rank 0's is saved (the
            # others draw fresh streams on resuming; see ``resume``).
            save_checkpoint(self.s.run_dir / LAST, self.model, self.checkpoint_config(), self.optimizer,
                            self.scheduler, dict(self.state, world_size=self.world))
        distributed.barrier()

    def resume(self) -> None:
        """Continue from ``checkpoints/last`` exactly where it left off."""
        last = self.s.run_dir / LAST
        load_weights(self.model, last / "model.safetensors")
        self.state.update(load_training_state(last, self.optimizer, self.scheduler))
        saved_world = self.state.pop("world_size", 1)
        if self.rank > 0:
            # Every rank restored rank 0's RNG; the others take streams of their own again. So
            # with dropout (or pre-training's random masks) a resumed run of several processes
            # is statistically, not bitwise, the uninterrupted one; so is any run resumed with
            # another world size, whose ranks draw other masks for other shares of the batch.
            seed_everything(distributed.rank_seed(self.s.seed, self.state["step"]), self.cfg.deterministic)
        if distributed.is_main():
            self._history_path.touch()  # stopped before the first log line: there is none yet
            with open(self._history_path, "r+b") as f:  # drop log lines written after the checkpoint
                f.truncate(self.state["history_bytes"])
        processes = f" ({saved_world} process(es) then, {self.world} now)" if saved_world != self.world else ""
        self.console.print(f"Resuming {self.s.run_dir} at epoch {self.state['epoch']}, "
                           f"step {self.state['step']}{processes}")

    @property
    def _history_path(self) -> Path:
        return self.s.run_dir / "history.jsonl"

    def log(self, entry: dict[str, Any]) -> None:
        if not distributed.is_main():
            return
        with open(self._history_path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    # -- the loop ------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to the last epoch (or a stop request); returns the run record."""
        if self.net is self.model:
            self.net = distributed.wrap(self.model, self.s.device)  # broadcasts rank 0's weights
            if self.cfg.compile:
                self.net = torch.compile(self.net)
        started = time.perf_counter() - self.state["wall_seconds"]
        previous = {sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            with self._progress() as progress:
                bar = progress.add_task("train", total=self.total_steps, completed=self.state["step"],
                                        loss=float("nan"), eps=0.0)
                while self.state["epoch"] < self.cfg.epochs:
                    self._train_epoch(progress, bar, started)
                    self._end_epoch(started)
                    self._stop_if_requested(started)
        except KeyboardInterrupt:
            self._write_record("interrupted")
            raise
        except Exception as exc:
            # Whatever stops the loop, the record must not say "running" forever.
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if not isinstance(exc, TrainingError):
                reason = f"{type(exc).__name__} at epoch {self.state['epoch']}, step {self.state['step']}: {reason}"
            self.state["failure"] = reason
            self._write_record("failed")
            raise TrainingError(f"{self.s.run_dir}: {reason}; the run is recorded as failed") from exc
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.state["wall_seconds"] = time.perf_counter() - started
        return self._write_record("finished")

    def _train_epoch(self, progress: Progress, bar: Any, started: float) -> None:
        epoch, cfg, task = self.state["epoch"], self.cfg, self.s.task
        order = epoch_order(len(self.train_examples), self.s.seed, epoch, self.groups)
        self.model.train()
        task.set_epoch(epoch)
        t0, seen, window = time.perf_counter(), 0, LossWindow(self.world)
        progress.update(bar, description=f"epoch {epoch + 1}/{cfg.epochs}")
        data = loader.EpochBatches(task, self.train_examples, order, cfg.batch_size, self.s.seed, epoch)
        shares = loader.epoch_batches(data, self.state["batch"], self.workers, self.s.device.type == "cuda")
        for b, (cpu_batch, n_mine, n_global) in enumerate(shares, start=self.state["batch"]):
            batch = to_device(cpu_batch, self.s.device)
            if self.peak_flops and self.flops_per_example is None:
                self.flops_per_example = speed.train_flops_per_example(self.model, batch, max(1, n_mine))
            sync = (b + 1) % cfg.grad_accum == 0 or b + 1 == self.batches_per_epoch
            with self._no_sync(not sync):
                with autocast(self.s.device, cfg.precision):
                    logits = self.net(batch)
                loss, parts = split_loss(task.loss(logits, batch))
                share = n_mine / n_global
                window.add(loss, parts, share, f"epoch {epoch + 1}, step {self.state['step'] + 1}")
                if self.world == 1:
                    (loss / cfg.grad_accum).backward()
                else:
                    # Task losses are means over the examples of a batch (QA: summed over answers,
                    # averaged over questions; NLVR2: averaged over pairs), so the global batch's
                    # loss is sum_r share_r * loss_r; DDP divides the summed gradients by the
                    # world size, hence the factor. Shares differ by at most one example where
                    # the batch does not divide by the world size: the weights make that exact,
                    # with no further accumulation. Pre-training's terms are ratios of sums
                    # (e.g. over masked words): weighting by examples approximates their mean.
                    (loss * (share * self.world / cfg.grad_accum)).backward()
            seen += n_global
            if not sync:
                continue
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.state["step"] += 1
            self.state["batch"] = b + 1
            elapsed = time.perf_counter() - t0
            eps = seen / elapsed if elapsed > 0 else 0.0
            progress.update(bar, advance=1, eps=eps)
            if self.state["step"] % cfg.log_every == 0:
                mean_loss, means = window.read_means()  # the one host sync of a log interval
                progress.update(bar, loss=mean_loss)
                self.log({"step": self.state["step"], "epoch": epoch, "loss": mean_loss, "losses": means,
                          "lr": self.scheduler.get_last_lr()[0], "examples_per_s": eps, **self._mfu(eps)})
            if cfg.save_every and self.state["step"] % cfg.save_every == 0 and b + 1 < self.batches_per_epoch:
                window.read()  # a non-finite loss fails the run before it is saved
                self._account(t0, seen)
                t0, seen = time.perf_counter(), 0
                self.state["wall_seconds"] = time.perf_counter() - started
                self.save_last()
            if b + 1 < self.batches_per_epoch and self._should_stop():
                window.read()
                self._account(t0, seen)
                self._stop_if_requested(started)
        window.read()  # before the epoch's evaluation and checkpoints
        self._account(t0, seen)

    def _mfu(self, examples_per_s: float) -> dict[str, float]:
        """``{"mfu": ...}`` for the history on a GPU of known peak; nothing otherwise."""
        if not self.peak_flops or not self.flops_per_example:
            return {}
        return {"mfu": speed.mfu(examples_per_s, self.flops_per_example, self.peak_flops, self.world)}

    def _no_sync(self, skip: bool) -> Any:
        """DDP's ``no_sync`` between accumulated micro-batches (the all-reduce waits for the last)."""
        return self.net.no_sync() if skip and self.world > 1 else nullcontext()

    def _request_stop(self, signum: int, frame: Any) -> None:
        if self._stop_requested:
            if distributed.launched() and time.monotonic() - self._stop_time < SAME_SIGNAL_S:
                return
            raise KeyboardInterrupt  # asked twice: stop now, keep the last checkpoint on disk
        self._stop_requested, self._stop_time = True, time.monotonic()
        self.console.print(f"{signal.Signals(signum).name}: stopping after this step "
                           "(send again to stop at once)")

    def _should_stop(self) -> bool:
        """Whether a stop was asked for (on any rank: every rank stops at the same step)."""
        return distributed.any_rank(self._stop_requested) if self.world > 1 else self._stop_requested

    def _stop_if_requested(self, started: float) -> None:
        """At a step boundary: save where the run stands and stop."""
        if not self._should_stop():
            return
        self.state["wall_seconds"] = time.perf_counter() - started
        self.save_last()
        self.console.print(f"Saved at epoch {self.state['epoch']}, step {self.state['step']}; "
                           f"continue with: vlbench train --resume {self.s.run_dir}")
        raise KeyboardInterrupt

    def _account(self, t0: float, seen: int) -> None:
        self.state["train_seconds"] += time.perf_counter() - t0
        self.state["train_examples"] += seen

    def _end_epoch(self, started: float) -> None:
        self.state["epoch"] += 1
        self.state["batch"] = 0
        metrics, outputs = self.evaluate_all()
        for split, m in metrics.items():
            self.log({"step": self.state["step"], "epoch": self.state["epoch"] - 1, "split": split,
                      "metrics": {k: v for k, v in m.items() if isinstance(v, int | float)}})
        select = self.cfg.select_split or self.s.task.eval_splits[0]
        score = metrics[select][self.s.task.primary_metric]
        if self.state["best_score"] is None or score > self.state["best_score"]:
            self.state.update(best_score=score, best_epoch=self.state["epoch"], best_metrics=metrics)
            if distributed.is_main():
                for split, (preds, records) in outputs.items():
                    write_outputs(self.s.run_dir, self.s.task, split, preds, records)
                save_checkpoint(self.s.run_dir / BEST, self.model, self.checkpoint_config())
        summary = "  ".join(f"{split} {m[self.s.task.primary_metric]:.2f}" for split, m in metrics.items())
        self.console.print(f"epoch {self.state['epoch']}: {summary}"
                           f"{'  (best)' if self.state['best_epoch'] == self.state['epoch'] else ''}")
        self.state["wall_seconds"] = time.perf_counter() - started
        self.save_last()
        self._write_record("running")

    def evaluate_all(self) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[dict, list]]]:
        """Official metrics and outputs of every evaluation split (sharded over ranks by
        ``predict``; every rank gets all predictions and scores them)."""
        metrics, outputs = {}, {}
        for split in self.s.task.eval_splits:
            examples = eval_examples(self.s.task, split, self.cfg.eval_limit)
            preds, seconds = predict(self.model, self.s.task, examples, batch_size=self.cfg.batch_size * 2,
                                     device=self.s.device, precision=self.cfg.precision)
            self.state["eval_seconds"] += seconds
            self.state["eval_examples"] += len(examples)
            metrics[split], records = self.s.task.score(split, preds)
            outputs[split] = (preds, records)
        return metrics, outputs

    def _write_record(self, status: str) -> dict[str, Any]:
        record = self.on_record(dict(self.state, status=status)) if self.on_record else dict(self.state)
        if distributed.is_main():
            write_json_atomic(self.s.run_dir / "run.json", record)
        return record

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[eps]:.0f} ex/s"),
            TimeRemainingColumn(), console=self.console, transient=False, disable=not distributed.is_main(),
        )


def split_loss(out: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A task's loss is a tensor, or a dict of named (already weighted) losses to be summed.
    Returns the total and the named terms (detached, still on the device)."""
    if isinstance(out, dict):
        total = sum(out.values())
        return total, {k: v.detach() for k, v in out.items()}
    return out, {"task": out.detach()}


class LossWindow:
    """The losses of the micro-batches since the last log line.

    ``add`` keeps them on the device (no host sync); ``read`` fetches everything added since the
    last read in one transfer (under torchrun: then sums the share-weighted values over ranks,
    so every rank reads the global batch's losses) and raises TrainingError at the first
    non-finite total. ``read_means`` reads, averages the window and starts a new one. The
    averages are those of a loop that reads each loss as it comes: the same values (stacking
    only widens float types, which is exact), summed in the same order as Python floats.
    """

    def __init__(self, world: int = 1):
        self.world = world
        self.pending: list[tuple[torch.Tensor, list[str], str]] = []  # (values, names, where)
        self.totals: list[float] = []
        self.named: dict[str, list[float]] = {}

    def add(self, loss: torch.Tensor, parts: dict[str, torch.Tensor], share: float, where: str) -> None:
        row = torch.stack([loss.detach(), *parts.values()])
        if self.world > 1:  # this rank's term of the global batch's loss, sum_r share_r * loss_r
            row = row.to(torch.float64) * share if share else torch.zeros_like(row, dtype=torch.float64)
        self.pending.append((row, list(parts), where))

    def read(self) -> None:
        if not self.pending:  # the same on every rank: they add and read at the same steps
            return
        rows = torch.cat([row for row, _, _ in self.pending])
        if self.world > 1:
            rows = distributed.all_sum(rows.cpu())  # over gloo, as the CPU values always were
        values, at = rows.tolist(), 0
        for _, names, where in self.pending:
            total, parts = values[at], dict(zip(names, values[at + 1:at + 1 + len(names)], strict=True))
            at += 1 + len(names)
            if not math.isfinite(total):
                bad = [k for k, v in parts.items() if not math.isfinite(v)]
                raise TrainingError(
                    f"the loss is {total} at {where}{f' ({bad[0]})' if len(parts) > 1 and bad else ''}; "
                    "check the inputs for non-finite values and lower train.lr")
            self.totals.append(total)
            for name, value in parts.items():
                self.named.setdefault(name, []).append(value)
        self.pending = []

    def read_means(self) -> tuple[float, dict[str, float]]:
        self.read()
        mean = sum(self.totals) / len(self.totals)
        means = {k: sum(v) / len(v) for k, v in self.named.items()}
        self.totals, self.named = [], {}
        return mean, means
