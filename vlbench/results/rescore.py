"""Rescoring: recompute every metric of stored runs from their predictions.

When a scorer is fixed, ``--rescore`` brings the whole history up to date without running
any model: each finished run's predictions go through the task's current scorer and the run
record is rewritten (atomically) with the new metrics, keeping the old ones in
``rescored[*].previous_metrics`` so the change stays traceable.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vlbench.errors import VLBenchError
from vlbench.results.records import RUN_FILE, Problem, Run, read_run, write_json_atomic

Rescorer = Callable[[Path], dict[str, dict[str, Any]]]


def _default_rescorer() -> Rescorer:
    # Imported late: the scoring engine pulls in the task plugins, which tables do not need.
    try:
        return importlib.import_module("vlbench.engine.scoring").rescore_run
    except (ImportError, AttributeError) as err:
        raise VLBenchError(f"--rescore: the scoring engine is unavailable ({err}); "
                           "reinstall vlbench") from None


def rescore_runs(
    runs: Sequence[Run], rescorer: Rescorer | None = None
) -> tuple[list[Run], list[Problem], list[str]]:
    """Rescore ``runs``; returns (runs with current metrics, problems, one line per change).

    Unfinished runs are left alone (their trainer still owns run.json). A run that cannot be
    rescored keeps its stored metrics and is reported as a problem.
    """
    rescore = rescorer or _default_rescorer()
    out: list[Run] = []
    problems: list[Problem] = []
    changes: list[str] = []
    for run in runs:
        if run.status != "finished":
            out.append(run)
            continue
        try:
            fresh = rescore(run.path)
        except (VLBenchError, OSError, ValueError, KeyError) as err:
            problems.append(Problem(run.path, f"not rescored, stored metrics kept ({err})"))
            out.append(run)
            continue
        current = read_run(run.path)  # re-read: another process may have updated it
        merged = {**current.metrics, **fresh}
        if merged == current.metrics:
            out.append(current)
            continue
        record = dict(current.record)
        record["metrics"] = merged
        record["rescored"] = [*record.get("rescored", []), {
            "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "vlbench": _version(),
            "previous_metrics": current.metrics,
        }]
        write_json_atomic(run.path / RUN_FILE, record)
        changed = sorted(s for s in fresh if fresh[s] != current.metrics.get(s))
        changes.append(f"{run.path}: rescored {', '.join(changed)}")
        out.append(Run(run.path, record))
    return out, problems, changes


def _version() -> str:
    from vlbench import __version__

    return __version__
