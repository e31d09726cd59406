"""ViLT (Kim et al. 2021): importing this package registers the family and its formats."""

from . import formats as _formats  # noqa: F401
from . import spec as _spec  # noqa: F401
