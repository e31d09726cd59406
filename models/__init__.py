"""Built-in model plugins (importing this package registers them)."""

from vlbench.models.lxmert import formats as _lxmert_formats  # noqa: F401
from vlbench.models.lxmert import modeling as _lxmert  # noqa: F401
