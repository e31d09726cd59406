"""vlbench: train, ablate and score LXMERT-style vision-and-language encoders."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    import torch


def load_model(path: str, **kwargs: Any) -> torch.nn.Module:
    """Load a backbone from a run directory or checkpoint (format detected).

    The returned module is called with ``input_ids``, ``attention_mask``,
    ``token_type_ids``, ``visual_feats``, ``visual_pos`` (and optionally
    ``visual_attention_mask``) and returns an object with ``.language``,
    ``.vision`` and ``.pooled``, like HF's ``LxmertModel``. ``overrides={"model.num_attention_heads":
    "8"}`` tells a released ``.pth`` (which stores no config) its head count.
    """
    from vlbench.engine.loading import load_backbone

    return load_backbone(path, **kwargs)
