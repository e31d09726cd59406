"""VisualBERT checkpoint layouts (HF directories, vlbench) as a registry plugin.

The engine's ``vlbench.load_model`` and ``vlbench convert`` reach these through
``CHECKPOINT_FORMATS``; the conversion itself lives in ``convert.py``. ``detect`` claims HF
VisualBERT directories only: vlbench checkpoints are the engine's to read, and LXMERT
directories are LXMERT's.
"""

from __future__ import annotations

from vlbench.registry import register_checkpoint_format

from ..common.formats import CheckpointFormats
from . import convert

VisualBertCheckpoints = register_checkpoint_format("visualbert")(CheckpointFormats(
    convert, "VisualBERT weights: HF transformers directories (model_type visual_bert), vlbench.",
    claims=("hf",)))
