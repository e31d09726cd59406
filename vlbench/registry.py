"""One generic registry for every plugin kind.

A plugin is an object registered under a name: ``@register_task("gqa")`` on a task class; a
model family registers its spec under each of its model names with
``vlbench.engine.backbone.register_family``. Built-in plugins live in ``vlbench.models``
and ``vlbench.tasks`` and are imported
the first time a registry is read; third-party packages add theirs through the
entry-point groups ``vlbench.models``, ``vlbench.tasks`` and ``vlbench.objectives``
(an entry point names a module to import, or a ``"module:attr"`` object to register).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from vlbench.errors import VLBenchError


class RegistryError(VLBenchError):
    """A duplicate or unknown plugin name."""


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    description: str
    source: str  # "builtin" or the distribution/entry point it came from


class Registry:
    """Names -> plugins of one kind, with close-match hints on unknown names."""

    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Entry] = {}
        self._loaded = False
        self._source = "builtin"

    def register(self, name: str, obj: Any = None, *, description: str | None = None):
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""

        def add(o: Any) -> Any:
            if name in self._entries:
                raise RegistryError(
                    f"{self.kind} '{name}' is registered twice "
                    f"({self._entries[name].source} and {self._source}); rename one of them"
                )
            desc = description if description is not None else _first_line(o)
            self._entries[name] = Entry(name, o, desc, self._source)
            return o

        return add if obj is None else add(obj)

    def get(self, name: str) -> Any:
        return self.entry(name).obj

    def entry(self, name: str) -> Entry:
        self._ensure_loaded()
        if name not in self._entries:
            known = sorted(self._entries)
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            listing = f"known: {', '.join(known) or 'none'}"
            raise RegistryError(f"unknown {self.kind} '{name}'; {hint or listing}".rstrip())
        return self._entries[name]

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        self._ensure_loaded()
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        load_builtin_plugins()
        if self.entry_point_group:
            for ep in entry_points(group=self.entry_point_group):
                self._load_entry_point(ep)

    def _load_entry_point(self, ep: Any) -> None:
        dist = getattr(getattr(ep, "dist", None), "name", None) or ep.value
        previous, self._source = self._source, f"entry point {ep.name} ({dist})"
        try:
            obj = ep.load()  # importing the module runs its @register_* decorators
            if ":" in ep.value and ep.name not in self._entries:
                self.register(ep.name, obj)
        except RegistryError:
            raise
        except Exception as exc:  # a broken third-party plugin must not take the tool down
            raise RegistryError(
                f"plugin entry point '{ep.name}' = '{ep.value}' in group "
                f"'{self.entry_point_group}' failed to load: {exc}; fix or uninstall {dist}"
            ) from exc
        finally:
            self._source = previous


def _first_line(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


_BUILTINS = ("vlbench.models", "vlbench.tasks")
_builtins_loaded = False


def load_builtin_plugins() -> None:
    """Import the built-in plugin packages once (their modules register themselves)."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for module in _BUILTINS:
        importlib.import_module(module)


MODELS = Registry("model", "vlbench.models")
TASKS = Registry("task", "vlbench.tasks")
OBJECTIVES = Registry("objective", "vlbench.objectives")
VARIANTS = Registry("variant", "vlbench.variants")
METRICS = Registry("metric", "vlbench.metrics")
FEATURE_STORES = Registry("feature store", "vlbench.feature_stores")
CHECKPOINT_FORMATS = Registry("checkpoint format", "vlbench.checkpoint_formats")

REGISTRIES: dict[str, Registry] = {
    "models": MODELS,
    "tasks": TASKS,
    "objectives": OBJECTIVES,
    "variants": VARIANTS,
    "metrics": METRICS,
    "feature_stores": FEATURE_STORES,
    "checkpoint_formats": CHECKPOINT_FORMATS,
}


def register_task(name: str, *, description: str | None = None) -> Callable[[Any], Any]:
    return TASKS.register(name, description=description)


def register_objective(name: str, *, description: str | None = None) -> Callable[[Any], Any]:
    return OBJECTIVES.register(name, description=description)


def register_variant(name: str, *, description: str | None = None) -> Callable[[Any], Any]:
    return VARIANTS.register(name, description=description)


def register_metric(name: str, *, description: str | None = None) -> Callable[[Any], Any]:
    return METRICS.register(name, description=description)


def register_checkpoint_format(name: str, *, description: str | None = None) -> Callable[[Any], Any]:
    """A reader with ``detect(path) -> bool`` and ``load_backbone(path) -> (module, report)``."""
    return CHECKPOINT_FORMATS.register(name, description=description)


def register_feature_store(name: str, *, description: str | None = None) -> Callable[[Any], Any]:
    return FEATURE_STORES.register(name, description=description)
