"""Data parallelism over ``torch.distributed``, set up from torchrun's environment variables.

One process per device, launched by ``torchrun`` (or ``vlbench train --nproc N``). torchrun
sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; :func:`setup` joins
the process group from them: gloo for CPU tensors and, where CUDA is available, NCCL for
CUDA ones. With a world size of 1 (a plain ``vlbench train``, or torchrun with one process)
no process group is made and every helper here is the identity or a no-op, so the training
code has one path for both.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from rich.console import Console
from torch import nn

T = TypeVar("T")

#: Rank 0 prepares a run (data, baselines, run.json) while the others wait in a collective;
#: on full data that takes minutes, longer than NCCL's 10-minute default.
TIMEOUT = timedelta(minutes=60)


def launched() -> bool:
    """Whether this process was started by torchrun (whatever the world size)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def setup() -> None:
    """Join the process group torchrun describes; nothing for a world size of 1. Idempotent."""
    if dist.is_available() and dist.is_initialized():
        return
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; train with one process")
    backend = "gloo"
    if torch.cuda.is_available():
        # Each process drives the GPU of its local rank; "cuda" without an index means it.
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"  # collectives go by the device of their tensors
    dist.init_process_group(backend=backend, timeout=TIMEOUT)


def teardown() -> None:
    """Leave the process group (at the end of a successful command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 writes the run's files (run.json, history, predictions, checkpoints)."""
    return rank() == 0


def backend() -> str | None:
    return str(dist.get_backend()) if active() else None


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks, in place; returns it."""
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (so every rank takes the same branch)."""
    if not active():
        return flag
    return bool(all_sum(torch.tensor([float(flag)])).item() > 0)


def main_first(fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on rank 0 only while the others wait; an error there is raised on every rank.

    Returns ``fn``'s result on rank 0 and None elsewhere (share it with :func:`broadcast`).
    """
    if not active():
        return fn()
    result, error = None, None
    if is_main():
        try:
            result = fn()
        except Exception as exc:
            error = exc
    shared = broadcast(_picklable(error))
    if error is not None:
        raise error
    if shared is not None:
        raise shared
    return result


def _picklable(exc: Exception | None) -> Exception | None:
    if exc is None:
        return None
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"on rank 0: {type(exc).__name__}: {exc}")


def shard(indices: Sequence[int], rank_: int | None = None, world: int | None = None) -> list[int]:
    """This rank's interleaved share of one global batch (all of it in one process)."""
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    return list(indices[rank_::world])


def device_for(device: torch.device) -> torch.device:
    """The device this rank trains on: its local GPU for a CUDA run, else ``device``."""
    if active() and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel when there are several ranks (it broadcasts rank 0's
    weights to the others), ``model`` itself otherwise."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    # Unused parameters are normal here: a fine-tuning head reads the pooled output only, so
    # the last cross-modality layer's vision branch gets no gradient.
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


def rank_seed(seed: int, step: int = 0) -> int:
    """The RNG seed of a rank other than 0: its own dropout and corruption stream, drawn from
    the run's seed, the rank and the step it starts at (rank 0 keeps the run's own stream)."""
    return (seed * 1_000_003 + 7_919 * rank() + step) % 2**63


def console_for_rank(console: Console) -> Console:
    """``console`` on rank 0; a silent one elsewhere (N copies of every line help nobody)."""
    return console if is_main() else Console(stderr=True, quiet=True)


def command_prefix() -> list[str] | None:
    """How torchrun was called, as far as its environment tells (None outside torchrun)."""
    if not launched():
        return None
    nnodes = int(os.environ.get("GROUP_WORLD_SIZE", "1"))
    return ["torchrun", *(["--nnodes", str(nnodes)] if nnodes > 1 else []),
            "--nproc-per-node", os.environ.get("LOCAL_WORLD_SIZE", "1"), "-m", "vlbench"]
