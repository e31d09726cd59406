"""Image loading vs ViLT's training step: is the model, not the loader, the bottleneck?

Two measurements on the same task, batches and images:

``loader``  Images/s a ``torch.utils.data.DataLoader`` supplies when its workers run the task's
            ``collate`` (reading the rendered PNGs, resizing and normalising them into
            ``pixel_values``/``pixel_mask``, tokenising), for 0, 1, 2 ... workers.
``step``    Images/s one ViLT training step consumes on those batches (forward, task loss,
            backward, clipping, AdamW), median over the timed steps.

The target is a loader that supplies more images/s than the step consumes. On a machine
with few cores the workers take cores from the step; the table says how many there were.

    python benchmarks/image_loader.py                         # GQA, embedded world, tiny ViLT
    python benchmarks/image_loader.py --task nlvr2 --workers 0 2 --batches 30
    python benchmarks/image_loader.py --data DIR --set model.preset=base --set train.batch_size=16
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
from torch.utils.data import DataLoader


def build(args: argparse.Namespace):
    """A ViLT session on the task (its images drawn if the world has none yet)."""
    from vlbench.config import parse_overrides
    from vlbench.engine.session import new_session

    overrides = {"train.batch_size": str(args.batch_size), **parse_overrides(args.set)}
    return new_session(args.model, args.task, data_dir=args.data, out=tempfile.mkdtemp(),
                       overrides=overrides, say=lambda _: None)


def loader_rate(task, examples, batch_size: int, workers: int, batches: int) -> float:
    """Images/s over ``batches`` batches after the first (workers started, caches warm)."""
    loader = DataLoader(examples, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=task.collate, prefetch_factor=4 if workers else None)
    images, start = 0, None
    for i, batch in enumerate(loader):
        if i == 0:
            start = time.perf_counter()
            continue
        images += batch["pixel_values"].shape[0]
        if i == batches:
            break
    return images / (time.perf_counter() - start)


def step_rate(session, examples, batch_size: int, steps: int, warmup: int) -> float:
    """Images/s of one training step (median step time), on batches made beforehand."""
    task, model = session.task, session.model
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = [task.collate(examples[i * batch_size:(i + 1) * batch_size])
               for i in range(steps + warmup)]
    times = []
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        loss = task.loss(model(batch), batch)
        loss = sum(loss.values()) if isinstance(loss, dict) else loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return batches[0]["pixel_values"].shape[0] / statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="gqa", choices=["gqa", "vqa", "nlvr2"])
    parser.add_argument("--model", default="vilt")
    parser.add_argument("--data", default=None, help="data directory (default: the embedded world)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=20, help="timed loader batches")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    args = parser.parse_args(argv)

    session = build(args)
    examples = list(session.task.examples(session.task.train_split))
    per_row = "2 images per example" if args.task == "nlvr2" else "1 image per example"
    print(f"{args.model} on {args.task} ({per_row}), batch {args.batch_size}, "
          f"image_size {session.cfg.model.image_size}, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs", file=sys.stderr)
    step = step_rate(session, examples, args.batch_size, args.steps, args.warmup)
    print("| what | images/s | vs step |\n|---|---:|---:|")
    print(f"| training step ({args.steps} steps, median) | {step:.0f} | 1.00x |")
    for workers in args.workers:
        rate = loader_rate(session.task, examples, args.batch_size, workers, args.batches)
        print(f"| loader, {workers} worker(s) | {rate:.0f} | {rate / step:.2f}x |")


if __name__ == "__main__":
    main()
