"""Start ViLT's trunk from a timm Vision Transformer, as ViLT's own recipe starts from timm's
ViT-B/32.

A timm ``VisionTransformer`` state dict fills the patch projection (``patch_embed.proj``), the
image [CLS] token, the patch position embeddings (resized to the config's grid), every encoder
layer (``blocks.N``; the fused ``attn.qkv`` is split into query, key and value) and the final
LayerNorm (``norm``). The text embeddings, the modality-type table and the pooler have no ViT
counterpart and keep their initialisation. Pickle files are read only with
``torch.load(weights_only=True)`` (``models/common/safe_load.py``).

ViLT's layers use ``layer_norm_eps`` (HF's 1e-12) where timm's ViT uses 1e-6; set
``--set model.layer_norm_eps=1e-6`` to run the ViT trunk exactly as timm does.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from vlbench.errors import CheckpointError

from ..common.checkpoint import LoadReport, compare_state, preview
from ..common.safe_load import read_state_dict

#: timm block parameter -> ViLT layer parameter (both under their layer's prefix)
BLOCK_KEYS = {
    "norm1": "layernorm_before",
    "attn.proj": "attention.output.dense",
    "norm2": "layernorm_after",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
#: timm's fused projection, split in this order into ViLT's query, key and value
QKV = ("query", "key", "value")
#: backbone parts a ViT has no counterpart for: kept as initialised, not reported missing
NOT_IN_VIT = ("embeddings.text_embeddings.", "embeddings.token_type_embeddings.", "pooler.")


def vit_to_vilt(state: Mapping[str, Tensor], grid: int
                ) -> tuple[dict[str, tuple[str, Tensor]], list[str]]:
    """ViLT names for a timm ViT state dict, each with the timm key it came from (position
    embeddings resized to ``grid`` x ``grid`` patches), and the timm keys with no place in
    ViLT."""
    out: dict[str, tuple[str, Tensor]] = {}
    unused: list[str] = []
    for key, value in state.items():
        if key == "cls_token":
            out["embeddings.cls_token"] = (key, value)
        elif key == "pos_embed":
            out["embeddings.position_embeddings"] = (key, resize_positions(value, grid))
        elif key.startswith("patch_embed.proj."):
            out["embeddings.patch_embeddings.projection." + key.rsplit(".", 1)[1]] = (key, value)
        elif key.startswith("norm."):
            out["layernorm." + key.removeprefix("norm.")] = (key, value)
        elif key.startswith("blocks."):
            _, index, rest = key.split(".", 2)
            layer = f"encoder.layer.{index}."
            module, _, param = rest.rpartition(".")
            if module == "attn.qkv":
                for name, part in zip(QKV, value.chunk(3, dim=0), strict=True):
                    out[f"{layer}attention.attention.{name}.{param}"] = (key, part)
            elif module in BLOCK_KEYS:
                out[f"{layer}{BLOCK_KEYS[module]}.{param}"] = (key, value)
            else:  # layer scale, q/k norms, ...: parts ViLT's block does not have
                unused.append(key)
        else:  # the classifier head, fc_norm, register tokens, ...
            unused.append(key)
    return out, unused


def resize_positions(pos_embed: Tensor, grid: int) -> Tensor:
    """(1, 1 + n*n, D) ViT position embeddings (class token first) as (1, 1 + grid^2, D):
    the patch grid resized with timm's ``resample_abs_pos_embed`` (bicubic)."""
    patches = pos_embed.shape[1] - 1
    side = math.isqrt(patches)
    if side * side != patches:
        raise CheckpointError(f"pos_embed holds {patches} patch positions, not a square grid "
                              "behind one class token; this ViT cannot start ViLT's trunk")
    if side == grid:
        return pos_embed
    from timm.layers import resample_abs_pos_embed

    return resample_abs_pos_embed(pos_embed, [grid, grid], [side, side], num_prefix_tokens=1)


def load_timm_vit(model: nn.Module, state_dict: Mapping[str, Tensor],
                  source: str = "<memory>") -> LoadReport:
    """Fill ``model``'s (a ``ViltModel``) trunk from a timm ViT ``state_dict``.

    Returns a report: ``missing`` the trunk keys the ViT did not fill, ``unexpected`` the ViT
    keys with no place in ViLT (its classifier ``head.*``, blocks beyond
    ``num_hidden_layers``, ...), and a note on the parts a ViT has no counterpart for.
    CheckpointError, naming the key and both shapes, when a ViT tensor does not fit (another
    width or patch size).
    """
    state = {k.removeprefix("module."): v for k, v in state_dict.items()}
    renamed, unused = vit_to_vilt(state, model.config.grid_size)
    own = model.state_dict()
    missing, unexpected = compare_state(own, {k: v for k, (_, v) in renamed.items()}, source)
    with torch.no_grad():
        for key, (_, value) in renamed.items():
            if key in own:
                own[key].copy_(value)
    report = LoadReport(source, "timm ViT")
    report.missing = [k for k in missing if not k.startswith(NOT_IN_VIT)]
    # a block beyond num_hidden_layers, a qkv bias where qkv_bias is off: named as timm does
    order = {k: i for i, k in enumerate(state)}
    report.unexpected = unused + sorted({renamed[k][0] for k in unexpected}, key=order.__getitem__)
    report.notes.append("text embeddings, modality types and pooler keep their initialisation "
                        "(a ViT has none)")
    return report


def load_timm_vit_file(model: nn.Module, path: str | Path) -> LoadReport:
    """:func:`load_timm_vit` from a file: safetensors, or a ``torch.save``'d state dict read
    with ``weights_only=True``."""
    return load_timm_vit(model, read_state_dict(path), str(path))


def init_from_config(model: nn.Module) -> LoadReport | None:
    """Start a freshly built backbone's trunk from ``model.config.init_vit``; a warning (and
    no load) when the file has gone (see ``ViltModel``)."""
    path = Path(model.config.init_vit).expanduser()
    if not path.is_file():
        warnings.warn(f"model.init_vit={model.config.init_vit}: no such file; the ViLT trunk "
                      "keeps its random initialisation", stacklevel=3)
        return None
    report = load_timm_vit_file(model, path)
    if report.missing:
        raise CheckpointError(f"model.init_vit={path}: the ViT leaves {len(report.missing)} "
                              f"trunk keys unset ({preview(report.missing)}); fit the config "
                              "to the ViT (num_hidden_layers, qkv_bias)")
    return report
