"""The synthetic world: a small benchmark generated on the spot, in the real file formats.

``generate(DIR, seed)`` writes (relative to DIR)::

    manifest.json                                   contents, parameters, baselines
    features/synthetic_obj36.tsv                    LXMERT feature TSV, every image
    gqa/{train,val,testdev}_balanced_questions.json GQA questions (dict by question id)
    gqa/{train,val,testdev}_choices.json            GQA valid / plausible answers
    gqa/{train,val}_sceneGraphs.json                GQA scene graphs
    gqa/lxmert/{train,valid,testdev}.json           LXMERT's preprocessed GQA splits
    gqa/lxmert/trainval_{ans2label,label2ans}.json  LXMERT's GQA answer table
    vqa/v2_OpenEnded_mscoco_{train2014,val2014,minival}_questions.json
    vqa/v2_mscoco_{train2014,val2014,minival}_annotations.json
    vqa/lxmert/{train,nominival,minival}.json       LXMERT's preprocessed VQA splits
    vqa/lxmert/trainval_{ans2label,label2ans}.json  LXMERT's VQA answer table
    nlvr2/{train,dev,test1}.json                    NLVR2 JSONL statements over image pairs
    nlvr2/lxmert/{train,valid,test}.json            LXMERT's preprocessed NLVR2 splits
    pretrain/{train,val}.json                       LXMERT pre-training corpus

With ``image_size`` (``vlbench data synth`` passes it), the scenes are also drawn as
images, in each task's own image layout (``gqa/images/``, ``vqa/images/train2014/``,
``nlvr2/images/train/{directory}/`` ...; :mod:`vlbench.data.synth.images`), listed under the
manifest's ``images`` with their own fingerprint: the world's ``fingerprint`` covers
``files`` only, so drawing the pictures (now or later, when a model first reads pixels)
leaves the fingerprint of everything a region-feature run reads unchanged.

Each task contributes its files through its world part (``synthetic_part`` on the task
class, protocol in :mod:`vlbench.data.synth.parts`); the list above is what the built-in
tasks write. This module itself draws only the detector's features.

The same seed and parameters give byte-identical files. Everything a scene holds can be
read off its regions (features are a noisy projection of the object properties), and the
questions are balanced per type, so a question-only prior scores far below a model that
reads the image; ``manifest.json`` records both numbers.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlbench.data.synth.config import WorldConfig
from vlbench.data.synth.parts import PartData, RngFor, WorldPart
from vlbench.data.synth.scene import Detector, Scene
from vlbench.data.tsv import write_tsv
from vlbench.errors import DataError
from vlbench.registry import TASKS

FORMAT = "vlbench-synthetic"
VERSION = 2  # 2: features summed in a fixed order (identical bytes on every machine)
MANIFEST = "manifest.json"
FEATURES = "features/synthetic_obj36.tsv"

# Independent random streams, so changing one part (e.g. NLVR2 sizes) leaves the others'
# questions and scenes unchanged: the world owns the two below, each part numbers its own
# (``WorldPart.streams``; the built-in ones: GQA 1-2, captions 4, VQA 5-6, NLVR2 7). The
# detector draws its noise in chunks of scenes taken in part order (GQA, VQA, NLVR2), so
# the feature rows of the VQA scenes sharing a chunk with the first NLVR2 scenes do change
# with NLVR2.
_STREAM = {"projection": 0, "detector": 3}


@dataclass
class Manifest:
    """What ``manifest.json`` says about a generated world (paths relative to ``root``)."""

    root: Path
    seed: int
    feat_dim: int
    max_boxes: int
    n_images: int
    files: dict
    splits: dict
    generator: dict
    stats: dict
    fingerprint: str
    format: str = FORMAT
    version: int = VERSION
    generation_seconds: float | None = field(default=None, compare=False)
    #: rendered images per part (``vlbench.data.synth.images``): folder, size, fingerprint
    images: dict = field(default_factory=dict)

    def path(self, *keys: str) -> Path:
        """Absolute path of a file listed in ``files``: ``path("gqa", "train", "questions")``."""
        node = self.files
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                raise DataError(
                    f"{self.root / MANIFEST}: no file entry {'/'.join(keys)}; "
                    f"known top-level entries: {', '.join(self.files)}"
                )
            node = node[k]
        if not isinstance(node, str):
            raise DataError(f"{self.root / MANIFEST}: {'/'.join(keys)} names several files")
        return self.root / node

    def to_json(self) -> dict:
        """The manifest.json content."""
        return {"format": self.format, "version": self.version, "seed": self.seed,
                "feat_dim": self.feat_dim, "max_boxes": self.max_boxes,
                "n_images": self.n_images, "fingerprint": self.fingerprint,
                "files": self.files, "splits": self.splits, "generator": self.generator,
                "stats": self.stats, **({"images": self.images} if self.images else {})}


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def _counter(start: int):
    it = itertools.count(start)
    return lambda: str(next(it))


def world_parts() -> list[WorldPart]:
    """The registered tasks' world parts, in build order (a part shared by tasks counts once)."""
    parts: dict[int, WorldPart] = {}
    for entry in TASKS:
        part = getattr(entry.obj, "synthetic_part", None)
        if part is not None:
            parts.setdefault(id(part), part)
    ordered = sorted(parts.values(), key=lambda p: (p.order, p.name))
    names: set[str] = {"features"}  # the manifest's files entry of the world itself
    streams = {number: f"the world's {name!r}" for name, number in _STREAM.items()}
    for part in ordered:
        if part.name in names:
            raise DataError(f"synthetic world: two parts are named {part.name!r}; rename one "
                            "(the name keys the manifest)")
        names.add(part.name)
        for stream, number in part.streams.items():
            owner = f"part {part.name!r} stream {stream!r}"
            if number in streams:
                raise DataError(f"synthetic world: {owner} takes random stream {number}, already "
                                f"{streams[number]}; give it a free number")
            streams[number] = owner
    return ordered


def part_params() -> dict:
    """The parts' generator settings outside :class:`WorldConfig`, merged (a cache-key input)."""
    out: dict = {}
    config_keys = set(WorldConfig().to_dict())
    for part in world_parts():
        for key, value in part.generator_params().items():
            if key in out or key in config_keys:
                raise DataError(f"synthetic world: generator parameter {key!r} of part "
                                f"{part.name!r} is also another part's or WorldConfig's; rename it")
            out[key] = value
    return out


def _stream_of(seed: int, part: WorldPart) -> RngFor:
    def rng_for(stream: str) -> np.random.Generator:
        if stream not in part.streams:
            raise DataError(f"synthetic world: part {part.name!r} asks for random stream "
                            f"{stream!r}, not in its streams ({', '.join(part.streams) or 'none'})")
        return _rng(seed, part.streams[stream])
    return rng_for


def build_parts(cfg: WorldConfig, seed: int) -> list[tuple[WorldPart, PartData]]:
    """Every part's data for ``cfg`` and ``seed``, in build order (scenes, questions; no file
    is written): the same draws as :func:`generate`'s."""
    built: list[tuple[WorldPart, PartData]] = []
    for part in world_parts():
        built.append((part, part.build(cfg, _stream_of(seed, part), _counter(part.first_object_id),
                                       [data for _, data in built])))
    return built


def generate(out_dir: str | os.PathLike, seed: int = 0, *, image_size: int | None = None,
             **params) -> Manifest:
    """Write the synthetic world into ``out_dir`` and return its manifest.

    ``params`` override :class:`~vlbench.data.synth.config.WorldConfig` fields
    (``n_images``, ``feat_dim``, ``max_boxes``, ``questions_per_image`` ...). ``image_size``
    also draws every scene as an image, its longer side that many pixels (None: no images;
    they are drawn when first needed).
    """
    start = time.perf_counter()
    cfg = WorldConfig.from_overrides(**params)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # a half-written world must not look complete

    pairs = build_parts(cfg, seed)
    parts = [part for part, _ in pairs]
    built = [data for _, data in pairs]

    scenes: list[Scene] = [s for data in built for s in data.scenes()]
    detector = Detector(_rng(seed, _STREAM["projection"]), cfg.feat_dim,
                        noise_std=cfg.noise_std, label_noise=cfg.label_noise)
    det_rng = _rng(seed, _STREAM["detector"])
    write_tsv(out / FEATURES, detector.detect_many(det_rng, scenes))

    files: dict = {"features": FEATURES}
    splits: dict = {}
    stats: dict = {}
    for part, data in zip(parts, built, strict=True):
        files[part.name] = data.write(out)
        splits[part.name] = data.split_counts()
        part_stats = data.stats()
        if part_stats is not None:
            stats[part.name] = part_stats
    manifest = Manifest(
        root=out, seed=seed, feat_dim=cfg.feat_dim, max_boxes=cfg.max_boxes,
        n_images=len(scenes), files=files, splits=splits, generator=cfg.to_dict(),
        stats=stats, fingerprint=_fingerprint(out, files),
    )
    if image_size is not None:
        from vlbench.data.synth.images import render_part

        for part, data in pairs:
            if data.image_folder is not None:
                manifest.images[part.name] = render_part(out, data, image_size)
    write_manifest(manifest)
    manifest.generation_seconds = round(time.perf_counter() - start, 3)
    return manifest


def write_manifest(manifest: Manifest) -> None:
    """Write ``manifest.json`` atomically (a reader sees the old or the new one, whole)."""
    out = manifest.root
    tmp = out / f"{MANIFEST}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest.to_json(), f, indent=2)
        f.write("\n")
    os.replace(tmp, out / MANIFEST)


def _fingerprint(root: Path, files: dict) -> str:
    """sha256 over every listed file (path and bytes), in a fixed order."""
    paths: list[str] = []

    def walk(node) -> None:
        if isinstance(node, str):
            paths.append(node)
        elif isinstance(node, dict):
            for v in node.values():
                walk(v)

    walk(files)
    h = hashlib.sha256()
    for rel in sorted(set(paths)):
        h.update(rel.encode() + b"\0")
        with open(root / rel, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


def read_manifest(data_dir: str | os.PathLike) -> Manifest:
    """Load ``DIR/manifest.json`` of a generated world; :class:`DataError` if it is not one."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise DataError(
            f"{path}: no synthetic-world manifest; generate one with `vlbench data synth --out "
            f"{data_dir}` or point --data at a directory of real data"
        )
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg}); regenerate the world") from None
    if raw.get("format") != FORMAT:
        raise DataError(f"{path}: key 'format' is {raw.get('format')!r}, expected '{FORMAT}'")
    if raw.get("version") != VERSION:
        raise DataError(
            f"{path}: key 'version' is {raw.get('version')!r}, this vlbench reads version "
            f"{VERSION}; regenerate the world with `vlbench data synth`"
        )
    try:
        return Manifest(root=Path(data_dir), seed=raw["seed"], feat_dim=raw["feat_dim"],
                        max_boxes=raw["max_boxes"], n_images=raw["n_images"],
                        files=raw["files"], splits=raw["splits"], generator=raw["generator"],
                        stats=raw["stats"], fingerprint=raw["fingerprint"],
                        images=raw.get("images", {}))
    except KeyError as e:
        raise DataError(f"{path}: missing key {e}; regenerate the world") from None


def is_synthetic(data_dir: str | os.PathLike) -> bool:
    """True when ``data_dir`` holds a complete generated world (its manifest is readable)."""
    try:
        read_manifest(data_dir)
    except DataError:
        return False
    return True


def load_or_generate(out_dir: str | os.PathLike, seed: int = 0, **params) -> Manifest:
    """Reuse the world in ``out_dir`` when its seed and parameters match, else generate it."""
    cfg = WorldConfig.from_overrides(**params)
    if is_synthetic(out_dir):
        manifest = read_manifest(out_dir)
        if manifest.seed == seed and manifest.generator == cfg.to_dict():
            return manifest
    return generate(out_dir, seed, **params)
