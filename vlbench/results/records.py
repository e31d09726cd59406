"""Run records: write run.json atomically, find and read run directories.

A run directory is any folder holding a ``run.json`` (see the run-directory contract).
Readers never see a half-written record because writers go through
:func:`write_json_atomic` (temporary file in the same folder, fsync, ``os.replace``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlbench.data.jsonio import iter_lines
from vlbench.errors import DataError

RUN_FILE = "run.json"
RUN_FORMAT_VERSION = 1
REQUIRED_KEYS = ("run_id", "task", "model", "metrics")
# Folders inside a run that never hold other runs; skipping them keeps the walk fast.
_RUN_SUBDIRS = {"checkpoints", "predictions", "per_question", "__pycache__"}
# Short names for the fields people group and filter by; anything else is a dotted path.
ALIASES = {
    "fingerprint": "data.fingerprint",
    "data": "data.fingerprint",
    "source": "data.source",
    "synthetic": "data.synthetic",
    "run": "run_id",
    "train_examples_per_s": "throughput.train_examples_per_s",
    "eval_examples_per_s": "throughput.eval_examples_per_s",
    "git_commit": "provenance.git_commit",
    "device": "provenance.device",
}
_MISSING = object()


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, indent: int = 2) -> None:
    """Write ``obj`` as JSON to ``path`` so that readers see the old or the new file, never a
    mix (see :func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never a mix.

    The text goes to a temporary file in the same folder, is flushed to disk, then renamed
    over ``path`` (``os.replace`` is atomic on POSIX and Windows), so a full disk or a kill
    leaves the previous file. Concurrent writers of the same path each leave a complete file;
    the last rename wins.
    """
    with replaced_when_done(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def replaced_when_done(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` when the block ends
    without an error, and is removed otherwise (for writers that take a file name, such as
    safetensors' ``save_file``)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates the file private (0600); a results record should be readable.
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (best effort: not every platform can open a folder)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def lookup(record: dict[str, Any], key: str, default: Any = None) -> Any:
    """Value of a dotted ``key`` (``config.train.lr``) or an alias (``fingerprint``) in a record."""
    node: Any = record
    for part in ALIASES.get(key, key).split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


@dataclass(frozen=True)
class Run:
    """One run directory and its parsed ``run.json``."""

    path: Path
    record: dict[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        """Field by dotted path or alias; see :data:`ALIASES`."""
        return lookup(self.record, key, default)

    @property
    def run_id(self) -> str:
        return str(self.record.get("run_id") or self.path.name)

    @property
    def task(self) -> str:
        return str(self.record["task"])

    @property
    def model(self) -> str:
        return str(self.record["model"])

    @property
    def variant(self) -> str:
        return str(self.record.get("variant") or self.record["model"])

    @property
    def seed(self) -> int | None:
        return self.record.get("seed")

    @property
    def status(self) -> str:
        return str(self.record.get("status", "finished"))

    @property
    def objectives(self) -> tuple[str, ...]:
        return tuple(str(o) for o in self.record.get("objectives") or ())

    @property
    def fingerprint(self) -> str:
        """Everything the run read: examples, region features or images."""
        return str(self.get("data.fingerprint") or "unknown")

    @property
    def inputs(self) -> str:
        """The visual input the run read: ``pixels``, ``grid <backbone> (<weights>)`` for grid
        features from ``vlbench features extract``, else ``regions`` (a detector's)."""
        if self.get("data.images"):
            return "pixels"
        per_file = self.get("data.features_meta")  # feature file -> its extraction metadata
        grids = sorted({f"{m['backbone']} ({m.get('weights', 'unknown')})"
                        for m in (per_file.values() if isinstance(per_file, dict) else ())
                        if isinstance(m, dict) and m.get("backbone")})
        return f"grid {', '.join(grids)}" if grids else "regions"

    @property
    def benchmark(self) -> str:
        """The questions the run is scored on (``data.questions``; a record made before runs
        carried it falls back to :attr:`fingerprint` until ``--rescore`` adds it)."""
        return str(self.get("data.questions") or self.fingerprint)

    @property
    def synthetic(self) -> bool:
        return bool(self.get("data.synthetic", self.get("data.source") == "synthetic"))

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        return self.record.get("metrics") or {}

    @property
    def primary_metric(self) -> str:
        return str(self.record.get("primary_metric") or "accuracy")

    @property
    def metric_units(self) -> Any:
        """How the metrics are means over per-question rows (see ``results.questions``);
        None for a record written before runs said so."""
        return self.record.get("metric_units")

    @property
    def category_kinds(self) -> Any:
        """The ``types`` kinds compared category by category; None when the record does not
        say (every kind then is)."""
        return self.record.get("category_kinds")

    @property
    def params(self) -> float | None:
        return _number(self.record.get("params"))

    @property
    def train_examples_per_s(self) -> float | None:
        return _number(self.get("throughput.train_examples_per_s"))

    @property
    def wall_seconds(self) -> float | None:
        return _number(self.record.get("wall_seconds"))

    def default_split(self) -> str | None:
        """The split a table reports by default: the last of ``eval_splits`` that has metrics.

        Trainers list the held-out split they report last (e.g. ``["val", "testdev"]``).
        """
        for split in reversed(self.record.get("eval_splits") or []):
            if split in self.metrics:
                return str(split)
        return next(reversed(self.metrics), None) if self.metrics else None

    def per_question_path(self, split: str) -> Path:
        return self.path / "per_question" / f"{split}.jsonl"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Problem:
    """A run record that could not be used, and why (reported, then skipped)."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def read_run(run_dir: str | os.PathLike[str]) -> Run:
    """Read ``RUN/run.json``; raise :class:`DataError` naming the file and what is wrong.

    Besides the JSON itself, the fields tables are built from are checked: a NaN or infinite
    metric, or a seed that is not an integer, would silently blank or split a leaderboard row.
    """
    folder = Path(run_dir)
    file = folder / RUN_FILE if folder.name != RUN_FILE else folder
    folder = file.parent
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{file}: no run record here; point at a run directory") from None
    except OSError as err:
        raise DataError(f"{file}: cannot read run record ({err.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{file}: line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x}); the record is "
            "damaged: fix or delete the file"
        ) from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{file}: line {err.lineno}, column {err.colno}: invalid JSON ({err.msg}); "
            "fix or delete the file"
        ) from None
    if not isinstance(record, dict):
        raise DataError(f"{file}: a run record must be a JSON object, got {type(record).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise DataError(f"{file}: missing key(s) {', '.join(missing)}; not a vlbench run record")
    if not isinstance(record["metrics"], dict):
        raise DataError(f"{file}: key 'metrics' must map split -> metrics")
    version = record.get("vlbench_run", RUN_FORMAT_VERSION)
    if version != RUN_FORMAT_VERSION:
        raise DataError(
            f"{file}: key 'vlbench_run' is {version!r}, this vlbench reads format "
            f"{RUN_FORMAT_VERSION}; upgrade vlbench"
        )
    _check_fields(record, file)
    return Run(folder, record)


def _check_fields(record: dict[str, Any], file: Path) -> None:
    """The values tables group and average by: integer seeds, finite numbers."""
    seed = record.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise DataError(f"{file}: key 'seed' is {seed!r}, expected an integer; fix the record")
    for key in ("metrics", "baselines", "params", "throughput", "wall_seconds"):
        where = _non_finite(record.get(key), key)
        if where is not None:
            raise DataError(
                f"{file}: key '{where}' is not a finite number (NaN or infinite); the run "
                "diverged or the record is damaged: fix or delete it"
            )


def _non_finite(value: Any, path: str) -> str | None:
    """Dotted path of the first NaN/infinite float inside ``value``, or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        found = _non_finite(v, f"{path}.{k}")
        if found is not None:
            return found
    return None


def iter_run_dirs(root: Path) -> Iterator[Path]:
    """Folders under ``root`` (itself included) that hold a run.json, in sorted order."""
    for current, dirs, files in os.walk(root):
        if RUN_FILE in files:
            dirs.clear()  # a run does not nest other runs
            yield Path(current)
            continue
        dirs[:] = sorted(d for d in dirs if d not in _RUN_SUBDIRS and not d.startswith("."))


def find_runs(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Run], list[Problem]]:
    """Every run under ``paths`` (run directories, run.json files or results roots).

    Returns the readable runs (each once, in path order) and the problems found: corrupt or
    foreign ``run.json`` files and paths with no run at all. A path that does not exist is a
    user error and raises :class:`DataError`.
    """
    runs: list[Run] = []
    problems: list[Problem] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise DataError(f"{path}: no such file or directory; pass run directories or roots")
        root = path.parent if path.is_file() and path.name == RUN_FILE else path
        found = False
        for run_dir in iter_run_dirs(root):
            found = True
            key = run_dir.resolve()
            if key in seen:
                continue
            seen.add(key)
            try:
                runs.append(read_run(run_dir))
            except DataError as err:
                file = run_dir / RUN_FILE
                problems.append(Problem(file, str(err).removeprefix(f"{file}: ")))
        if not found:
            problems.append(Problem(path, "no run.json found here or below"))
    return runs, problems


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Objects of a JSON-lines file; a bad line raises :class:`DataError` naming file and line."""
    file = Path(path)
    rows: list[dict[str, Any]] = []
    for lineno, line in iter_lines(file):  # a byte that is not UTF-8: reported at its line
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{file}: line {lineno}: invalid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{file}: line {lineno}: expected a JSON object")
        rows.append(row)
    return rows


def read_history(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of ``RUN/history.jsonl`` (training logs and evaluations), in file order."""
    return read_jsonl(Path(run_dir) / "history.jsonl")
