"""Blind baselines: ``text_only`` (the question or sentence alone) and ``vision_only`` (the
regions alone), trained with the same loop as every model. Importing this package registers
both families."""

from . import spec as _spec  # noqa: F401
