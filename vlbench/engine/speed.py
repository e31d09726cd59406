"""GPU settings, the optimizer, and model FLOP utilisation (MFU).

Nothing here changes a CPU run: TF32 and fused AdamW apply to CUDA devices only, and MFU is
measured only there.

MFU is the model FLOP rate achieved over the devices' peak bf16 rate (dense, no sparsity):
``examples/s * FLOPs per example / (processes * peak)``. FLOPs per example are counted, not
estimated from a parameter count, because LXMERT's streams see different tokens (its language
layers the words, its object layers the regions, its cross layers both): one forward of the
first training batch runs under ``torch.utils.flop_counter.FlopCounterMode`` (matrix products
and attention), and a training step counts three times that (the backward pass costs twice
the forward), i.e. ``6 x parameters x tokens`` summed over each layer's own tokens, plus
attention. The peak comes from :data:`PEAK_BF16_TFLOPS` by device name, or from the
``VLBENCH_PEAK_TFLOPS`` environment variable (TFLOP/s per device) for GPUs not listed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

#: dense bf16 tensor-core peaks (TFLOP/s) by a substring of ``torch.cuda.get_device_name``;
#: the first match wins, so the more specific names come first
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("B200", 2250.0), ("H200", 989.4), ("GH200", 989.4), ("H100 PCIe", 756.5), ("H100 NVL", 835.5),
    ("H100", 989.4), ("H800", 989.4), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.1), ("L40", 181.0),
    ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0),
)


def setup_device(device: torch.device) -> None:
    """On CUDA: TF32 for fp32 matrix products and convolutions (bf16 autocast is
    ``train.precision=bf16``). Nothing on CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def adamw(groups: Iterable[dict[str, Any]], lr: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW; fused into one kernel per step on CUDA. On CPU the plain per-parameter update,
    whose results every earlier run has."""
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=lr, **fused)


def peak_flops(device: torch.device) -> float | None:
    """The device's peak bf16 FLOP/s, or None (CPU, or a GPU not in the table)."""
    if device.type != "cuda":
        return None
    if os.environ.get("VLBENCH_PEAK_TFLOPS"):
        return float(os.environ["VLBENCH_PEAK_TFLOPS"]) * 1e12
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for key, tflops in PEAK_BF16_TFLOPS if key in name), None)


@torch.no_grad()
def train_flops_per_example(model: nn.Module, batch: dict[str, Any], examples: int) -> float:
    """FLOPs of one training step per example: 3x a counted forward of ``batch``.

    The forward runs in eval mode under no_grad, so it draws no dropout masks and leaves the
    model's gradients and random streams as they were.
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(batch)
    finally:
        model.train(was_training)
    return 3.0 * counter.get_total_flops() / max(1, examples)


def mfu(examples_per_s: float, flops_per_example: float, peak: float, devices: int = 1) -> float:
    """Model FLOP utilisation: the achieved FLOP rate over ``devices`` devices' peak."""
    return examples_per_s * flops_per_example / (peak * devices)
