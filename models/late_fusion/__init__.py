"""Late fusion: LXMERT's single-modality encoders, fused only in the pooled state.
Importing this package registers the family."""

from . import spec as _spec  # noqa: F401
