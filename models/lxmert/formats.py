"""LXMERT checkpoint layouts (original release, HF directories, vlbench) as a registry plugin.

The engine's ``vlbench.load_model`` and ``vlbench convert`` reach these through
``CHECKPOINT_FORMATS``; the conversion itself lives in ``convert.py``.
"""

from __future__ import annotations

from vlbench.registry import register_checkpoint_format

from ..common.formats import CheckpointFormats
from . import convert

LxmertCheckpoints = register_checkpoint_format("lxmert")(CheckpointFormats(
    convert, "LXMERT weights: the original release (.pth), HF directories, vlbench checkpoints."))
