"""The synthetic world's scenes as image files, drawn with the world or on first need.

Each part whose scenes are pictured (``PartData.image_folder``) gets its folder of PNG files
in its task's layout, and an entry under the manifest's ``images``::

    "images": {"gqa": {"folder": "gqa/images", "size": 128, "renderer": 1, "count": 1500,
                       "fingerprint": "sha256:..."}, ...}

The entry's fingerprint covers the decoded pixels (path, width, height, RGB bytes), not the
PNG bytes, so it names the pictures whatever zlib compressed them. It is separate from the
world's ``fingerprint``, which covers ``files`` only: a world keeps its fingerprint, its
cache directory and its region features when its images are drawn later.

A world written without images (the embedded one, or ``generate`` without ``image_size``)
is pictured by :func:`ensure_images` when a run first needs pixels: the scenes are drawn
again from the world's seed and parameters (the same draws as ``generate``; a few seconds),
checked against the feature TSV's image sizes, and rendered.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

from vlbench.data.synth.config import WorldConfig
from vlbench.data.synth.parts import PartData
from vlbench.data.synth.render import draw_scene
from vlbench.data.synth.world import (
    FEATURES,
    MANIFEST,
    Manifest,
    build_parts,
    read_manifest,
    write_manifest,
)
from vlbench.errors import DataError

#: the pictures' longer side in pixels unless asked otherwise (ViLT tiny reads 128 px)
DEFAULT_IMAGE_SIZE = 128
#: bump when the drawing changes: a world's images of an older renderer are drawn again
RENDERER = 1


def render_part(root: Path, data: PartData, size: int) -> dict:
    """Draw every scene of ``data`` into its folder under ``root``; returns its manifest entry.

    The folder is written under a temporary name and renamed, so a reader never sees it half
    written; a folder already there (older pictures) is replaced.
    """
    if size < 16:
        raise DataError(f"image size {size}: pictures need at least 16 pixels per side")
    folder = data.image_folder
    assert folder is not None
    final = root / folder
    tmp = final.with_name(f"{final.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    digest = hashlib.sha256()
    files = data.image_files()
    for rel in sorted(files):
        image = draw_scene(files[rel], size)
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="PNG")
        digest.update(f"{rel}\0{image.width}x{image.height}\0".encode())
        digest.update(image.tobytes())
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
    return {"folder": folder, "size": size, "renderer": RENDERER, "count": len(files),
            "fingerprint": "sha256:" + digest.hexdigest()}


def is_current(entry: dict | None, size: int | None) -> bool:
    """Whether a manifest entry names pictures of this renderer (and of ``size``, if given)."""
    return bool(entry) and entry.get("renderer") == RENDERER and (
        size is None or entry.get("size") == size)


def ensure_images(root: str | os.PathLike, parts: Iterable[str] | None = None,
                  size: int | None = None, say=None) -> Manifest:
    """The world's manifest, after drawing the images of ``parts`` (None: every pictured part)
    that it lacks, that an older renderer drew, or, when ``size`` is given, of another size
    (otherwise :data:`DEFAULT_IMAGE_SIZE` for new pictures)."""
    root = Path(root)
    manifest = read_manifest(root)
    wanted = None if parts is None else set(parts)
    if wanted is not None and all(is_current(manifest.images.get(p), size) for p in wanted):
        return manifest  # the common case: nothing to draw, nothing rebuilt
    with _locked(root):
        manifest = read_manifest(root)  # another process may have drawn them meanwhile
        built = build_parts(WorldConfig.from_overrides(**manifest.generator), manifest.seed)
        todo = [(part, data) for part, data in built if data.image_folder is not None
                and (wanted is None or part.name in wanted)
                and not is_current(manifest.images.get(part.name), size)]
        if wanted is not None and (missing := wanted - {p.name for p, _ in built}):
            raise DataError(f"{root / MANIFEST}: no world part {sorted(missing)[0]!r} to draw")
        if not todo:
            return manifest
        _check_sizes(root, manifest, [data for _, data in built])
        for part, data in todo:
            if say is not None:
                say(f"Drawing the {part.name} images of the synthetic world at {root} (once) ...")
            manifest.images[part.name] = render_part(root, data, size or DEFAULT_IMAGE_SIZE)
        write_manifest(manifest)
    return manifest


def _check_sizes(root: Path, manifest: Manifest, built: list[PartData]) -> None:
    """The scenes drawn again must be the world's: same images, same sizes as its TSV rows."""
    scenes = {s.image_id: (s.height, s.width) for data in built for s in data.scenes()}
    if len(scenes) != manifest.n_images:
        raise DataError(f"{root / MANIFEST}: the generator now draws {len(scenes)} scenes for "
                        f"this world, which has {manifest.n_images}; regenerate it with "
                        "`vlbench data synth`")
    with open(root / FEATURES, encoding="utf-8") as f:
        for line in f:
            img_id, h, w = line.split("\t", 3)[:3]
            if scenes.get(img_id) != (int(h), int(w)):
                raise DataError(f"{root / FEATURES}: image {img_id} is not the scene the generator "
                                "now draws; regenerate the world with `vlbench data synth`")


@contextmanager
def _locked(root: Path):
    """One process at a time draws a world's images and rewrites its manifest."""
    with open(root / f"{MANIFEST}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
