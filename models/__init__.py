"""Built-in model families: every sub-package but ``common`` is one, and importing it
registers it (its spec, model names and checkpoint formats)."""

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    if _info.ispkg and _info.name != "common":
        importlib.import_module(f"{__name__}.{_info.name}")
