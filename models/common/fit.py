"""Fitting a family's config to the data: region feature width and vocabulary size."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vlbench.engine.backbone import DataFacts
from vlbench.errors import ConfigError, DataError


def fit_regions_and_vocab(config: Any, facts: DataFacts, explicit: Mapping[str, Any],
                          feat_key: str = "visual_feat_dim") -> None:
    """Set ``config.<feat_key>`` (the region feature width) from the features and
    ``vocab_size`` to at least the tokenizer's.

    ``explicit`` holds the user's ``--set`` keys (``model.<name>``): an explicit width that
    disagrees with the features, or an explicit vocabulary smaller than the tokenizer's, is
    an error rather than silently replaced.
    """
    width = getattr(config, feat_key)
    if f"model.{feat_key}" in explicit and width != facts.feat_dim:
        raise DataError(
            f"--set model.{feat_key}={width} but the feature files hold "
            f"{facts.feat_dim}-d regions; drop the override or use matching features"
        )
    setattr(config, feat_key, facts.feat_dim)
    fit_vocab(config, facts, explicit)


def fit_vocab(config: Any, facts: DataFacts, explicit: Mapping[str, Any]) -> None:
    """Set ``vocab_size`` to at least the tokenizer's; an explicit ``--set model.vocab_size``
    smaller than the tokenizer's is an error, a larger one is kept."""
    if "model.vocab_size" in explicit and config.vocab_size < facts.vocab_size:
        raise ConfigError(
            f"--set model.vocab_size={config.vocab_size} is smaller than the tokenizer's "
            f"{facts.vocab_size} tokens; drop the override"
        )
    config.vocab_size = max(config.vocab_size if "model.vocab_size" in explicit else 0,
                            facts.vocab_size)
