"""Selecting runs: ``key=value`` filters and the display form of grouping keys."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from vlbench.errors import ConfigError
from vlbench.results.records import Run, lookup

# Keys a run always answers (beyond dotted paths into run.json).
KNOWN_KEYS = ("task", "model", "variant", "seed", "objectives", "fingerprint", "source",
              "synthetic", "status", "run_id", "inputs")


def display_value(value: Any) -> str:
    """How a run field is shown in tables and matched by filters.

    Lists join with ',' (an empty list reads 'none'), booleans read 'true'/'false'.
    """
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(display_value(v) for v in value) if value else "none"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def run_value(run: Run, key: str) -> Any:
    """The value of ``key`` for ``run``: a known key, an alias or a dotted path."""
    if key == "variant":
        return run.variant
    if key == "objectives":
        return list(run.objectives)
    if key == "synthetic":
        return run.synthetic
    if key == "fingerprint":
        return run.fingerprint
    if key == "inputs":
        return run.inputs
    return lookup(run.record, key)


def _same(actual: Any, wanted: str) -> bool:
    shown = display_value(actual)
    if shown == wanted or (isinstance(actual, bool) and shown == wanted.lower()):
        return True
    try:  # 1e-4 matches 0.0001
        return math.isclose(float(shown), float(wanted), rel_tol=1e-12)
    except ValueError:
        return False


@dataclass(frozen=True)
class Filter:
    """One ``key=value`` (or ``key!=value``) condition on a run."""

    key: str
    value: str
    negate: bool = False

    def matches(self, run: Run) -> bool:
        return self.matches_value(run_value(run, self.key))

    def matches_value(self, actual: Any) -> bool:
        return _same(actual, self.value) != self.negate

    def __str__(self) -> str:
        return f"{self.key}{'!=' if self.negate else '='}{self.value}"


def parse_filters(specs: Iterable[str], option: str = "--filter") -> list[Filter]:
    """Parse ``key=value`` / ``key!=value`` strings; a malformed one raises :class:`ConfigError`."""
    filters = []
    for spec in specs:
        negate = "!=" in spec
        key, sep, value = spec.partition("!=" if negate else "=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ConfigError(
                f"{option} {spec!r}: expected key=value (e.g. model=lxmert, config.train.lr=1e-4)"
            )
        filters.append(Filter(key, value, negate))
    return filters


def apply_filters(runs: Sequence[Run], filters: Sequence[Filter]) -> list[Run]:
    """Runs matching every filter. A key that no run has is a typo and raises ConfigError."""
    for flt in filters:
        if flt.key in KNOWN_KEYS or flt.key == "split":
            continue
        if runs and all(run_value(run, flt.key) is None for run in runs):
            raise ConfigError(
                f"filter {flt}: no run has key {flt.key!r}; use one of {', '.join(KNOWN_KEYS)} "
                "or a dotted path into run.json such as config.train.lr"
            )
    return [r for r in runs if all(f.matches(r) for f in filters if f.key != "split")]
