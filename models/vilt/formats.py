"""ViLT checkpoint layouts (HF directories, vlbench) as a registry plugin.

The engine's ``vlbench.load_model`` and ``vlbench convert`` reach these through
``CHECKPOINT_FORMATS``; the conversion itself lives in ``convert.py``. ``detect`` claims HF
ViLT directories only (``model_type: vilt``): vlbench checkpoints are the engine's to read.
"""

from __future__ import annotations

from vlbench.registry import register_checkpoint_format

from ..common.formats import CheckpointFormats
from . import convert

ViltCheckpoints = register_checkpoint_format("vilt")(CheckpointFormats(
    convert, "ViLT weights: HF transformers directories (model_type vilt), vlbench.",
    claims=("hf",)))
