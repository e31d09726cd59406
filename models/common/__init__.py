"""Parts shared by the model families: BERT layers, initialisation, the bf16-aware linear
layer, pre-training heads and the generic pieces of checkpoint conversion.

Not a model family itself (``models/__init__.py`` skips it). Modules here are imported one by
one (``from ..common.layers import SingleModalityLayer``); this file imports nothing so that a
family can import any one part without pulling in the rest.
"""
