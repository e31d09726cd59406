"""Training batches of one epoch: in the training process, or built ahead in worker processes.

A batch is this rank's share of one global batch of the epoch's order (see
:func:`vlbench.engine.distributed.shard`), collated by the task. With no workers (the default
on CPU) each batch is collated when the loop asks for it, in the training process, exactly
where and in the order the loop always built them: random draws in ``collate`` (pre-training's
masks) come from the same stream, interleaved with dropout as before, so CPU runs do not
change. With workers (the default on CUDA) a ``DataLoader`` builds batches ahead, pins them for
non-blocking copies and keeps ``prefetch`` batches per worker ready; a worker reseeds its
random generators from (seed, epoch, batch, rank) before each batch, so its draws depend on
neither the number of workers nor where a resumed run starts.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from vlbench.engine import distributed

#: batches each worker keeps ready
PREFETCH = 2
#: most workers per GPU under ``train.loader_workers=-1`` (auto)
AUTO_WORKERS = 4

#: (collated batch, examples of this rank's share, examples of the global batch)
Share = tuple[dict[str, Any], int, int]


def worker_count(setting: int, device: torch.device) -> int:
    """``train.loader_workers``: -1 picks none on CPU (the training threads use the cores, and
    the batch stays where it always was) and up to :data:`AUTO_WORKERS` per GPU on CUDA."""
    if setting >= 0:
        return setting
    if device.type != "cuda":
        return 0
    per_rank = (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(AUTO_WORKERS, per_rank - 1))  # leave one core to the training process


class EpochBatches(Dataset):
    """Global batch ``b`` of an epoch -> this rank's collated share of it (see :data:`Share`)."""

    def __init__(self, task: Any, examples: Sequence[Any], order: Sequence[int], batch_size: int,
                 seed: int, epoch: int):
        self.task, self.examples, self.order, self.batch_size = task, examples, order, batch_size
        self.seed, self.epoch = seed, epoch
        self.rank, self.world = distributed.rank(), distributed.world_size()

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __getitem__(self, b: int) -> Share:
        idx = self.order[b * self.batch_size:(b + 1) * self.batch_size]  # the global batch
        mine = distributed.shard(idx, self.rank, self.world)  # all of it in one process
        if get_worker_info() is not None:
            self._reseed(b)
        # A rank whose share is empty (a last batch smaller than the world) still runs a
        # forward and backward, weighted 0, so that DDP's gradient all-reduce sees every rank.
        batch = self.task.collate([self.examples[i] for i in mine or idx[:1]])
        return batch, len(mine), len(idx)

    def _reseed(self, b: int) -> None:
        seed = hash((self.seed, self.epoch, b, self.rank)) % 2**63  # ints hash the same every run
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)


def _as_is(share: Share) -> Share:
    """The DataLoader's per-item conversion: none (``collate`` made the batch already)."""
    return share


def epoch_batches(data: EpochBatches, start: int, workers: int, pin_memory: bool) -> Iterator[Share]:
    """Batches ``start``, ``start + 1``, ... of the epoch, each with its share sizes."""
    positions = range(start, len(data))
    if workers == 0:
        return (data[b] for b in positions)
    loader = DataLoader(data, batch_size=None, sampler=positions, num_workers=workers,
                        collate_fn=_as_is, pin_memory=pin_memory, prefetch_factor=PREFETCH,
                        # its own generator: the workers' base seed is not drawn from the global one
                        generator=torch.Generator().manual_seed(data.seed * 1_000_003 + data.epoch))
    return iter(loader)
