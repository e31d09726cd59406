"""BERT weight initialisation, shared by every backbone and the task heads."""

from __future__ import annotations

import torch
from torch import nn


def init_bert_weights(module: nn.Module, std: float = 0.02) -> None:
    """Initialise one module as BERT does: N(0, std) weights, zero biases, LayerNorm
    ones/zeros, zero padding rows of embedding tables. Use with ``model.apply``."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
