"""Where a run's data comes from: a user's directory, or the embedded synthetic benchmark.

With no ``--data`` the embedded benchmark is generated once into the user cache
directory and reused. A directory written by ``vlbench data synth`` is recognised by its
manifest and gets the same CPU-sized defaults as the embedded one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlbench.errors import DataError

#: the embedded benchmark's world seed (the training seed is separate: ``--seed``)
EMBEDDED_WORLD_SEED = 0

#: CPU-sized recipe for synthetic worlds, trained in minutes on 2 cores (the model family adds
#: its own part, e.g. a tiny preset without dropout: ``ModelSpec.synthetic_overrides``)
SYNTHETIC_DEFAULTS: dict[str, Any] = {
    # Learning from scratch on ~10k questions: a long warmup, a moderate rate.
    "train.epochs": 9,
    "train.batch_size": 64,
    "train.lr": 7e-4,
    "train.warmup_ratio": 0.2,
    "train.max_grad_norm": 1.0,
    "data.vocab_size": 1000,
}


def cache_root() -> Path:
    """``$VLBENCH_CACHE``, else ``$XDG_CACHE_HOME/vlbench``, else ``~/.cache/vlbench``."""
    if os.environ.get("VLBENCH_CACHE"):
        return Path(os.environ["VLBENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vlbench"


@dataclass
class DataSource:
    """A resolved data directory and what is known about it."""

    root: Path
    synthetic: bool
    embedded: bool = False
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``"synthetic"`` for the embedded world, else the directory (run.json ``data.source``)."""
        return "synthetic" if self.embedded else str(self.root)

    def defaults(self) -> dict[str, Any]:
        """The data-source layer of the config."""
        if not self.synthetic:
            return {}
        out = dict(SYNTHETIC_DEFAULTS)
        if "max_boxes" in self.manifest:
            out["data.max_boxes"] = int(self.manifest["max_boxes"])
        return out

    def feature_files(self, spec: str = "") -> list[Path]:
        """Feature TSVs: ``spec`` (comma-separated paths) or every ``*.tsv`` under ``features/``."""
        if spec:
            paths = [Path(p).expanduser() for p in spec.split(",") if p.strip()]
        else:
            paths = sorted((self.root / "features").glob("*.tsv")) or sorted(self.root.glob("*.tsv"))
        if not paths:
            raise DataError(
                f"no feature TSV under {self.root}/features; put LXMERT-format *.tsv files there "
                "or pass --set data.features=PATH[,PATH]"
            )
        for p in paths:
            if not p.is_file():
                raise DataError(f"feature file {p} not found; check --set data.features")
        return paths

    def find(self, *candidates: str) -> Path:
        """The first existing file among ``candidates`` (relative to the root)."""
        for c in candidates:
            if (self.root / c).is_file():
                return self.root / c
        raise DataError(f"none of {', '.join(candidates)} found under {self.root}; is --data the right directory?")


def generator_stamp() -> str:
    """Short hash of the generator version and parameters: a changed generator gets a new cache."""
    from vlbench.data.synth.config import WorldConfig
    from vlbench.data.synth.world import VERSION, part_params

    # The parts' own settings (e.g. GQA's question-family shares) key the cache too.
    params = json.dumps({"version": VERSION, **part_params(), **WorldConfig().to_dict()}, sort_keys=True)
    return hashlib.sha256(params.encode()).hexdigest()[:10]


def resolve_data(data_dir: str | Path | None, *, quiet: bool = False, say: Any = print) -> DataSource:
    """Resolve ``--data`` (``None`` = the embedded synthetic benchmark, generated on first use)."""
    from vlbench.data.synth.world import MANIFEST, generate, is_synthetic, read_manifest

    if data_dir is None:
        root = cache_root() / "synthetic" / f"world-seed{EMBEDDED_WORLD_SEED}-{generator_stamp()}"
        if not is_synthetic(root):
            if not quiet:
                say(f"Generating the embedded synthetic benchmark into {root} (once) ...")
            tmp = root.with_name(root.name + f".tmp{os.getpid()}")
            generate(tmp, seed=EMBEDDED_WORLD_SEED)
            root.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(tmp, root)
            except OSError:  # another process finished first: keep theirs
                if not is_synthetic(root):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        if not quiet:
            say(f"Data: embedded synthetic benchmark at {root} (results are on SYNTHETIC data)")
        return DataSource(root, synthetic=True, embedded=True, manifest=read_manifest(root).to_json())
    root = Path(data_dir).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"--data {data_dir}: no such directory; point it at a data directory or omit it")
    if (root / MANIFEST).is_file():  # a world's manifest that does not read is an error, not real data
        read_manifest(root)
    if is_synthetic(root):
        if not quiet:
            say(f"Data: synthetic world at {root} (results are on SYNTHETIC data)")
        return DataSource(root, synthetic=True, manifest=read_manifest(root).to_json())
    return DataSource(root, synthetic=False)


def fingerprint_files(paths: list[Path], extra: list[str] = ()) -> str:
    """A content fingerprint: sha256 over file contents (and ``extra`` strings, e.g. store hashes)."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    for e in extra:
        h.update(e.encode())
    return "sha256:" + h.hexdigest()
