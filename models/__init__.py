"""Built-in model plugins (importing this package registers them)."""

from vlbench.models.lxmert import modeling as _lxmert  # noqa: F401
