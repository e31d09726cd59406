"""Built-in task plugins: every sub-package is one, and its ``task`` module registers it when
this package is imported (no list to keep: a new task folder is found)."""

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    if _info.ispkg:
        importlib.import_module(f"{__name__}.{_info.name}.task")
