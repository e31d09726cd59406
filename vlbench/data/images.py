"""Images for models that read pixels (ViLT): find each image's file, decode it, batch it.

A task that feeds pixels builds a :class:`PixelBatcher` for its image folder and calls it
from ``collate``, so decoding runs wherever batches are made (in DataLoader workers when the
trainer uses them). An image goes through ViLT's preprocessing at the model's
``image_size``: resized (bilinear) so that its longer side is ``image_size``, scaled to
[0, 1], normalised with mean 0.5 and std 0.5 per channel (``ViltImageProcessor``'s), and
padded at the bottom and right to ``image_size`` x ``image_size``; ``pixel_mask`` is 1 on the
image and 0 on the padding, and ViLT's patches under padding are masked out. (HF's processor
resizes the shorter side to 384 px and lets the longer reach 640; bounding the longer side
instead keeps a CPU-sized model's sequence within its grid.)

Where images are: in a synthetic world, the folder its manifest names for the task's part
(drawn first if the world has none yet); in a real data directory, the first of the task's
folders that exists (``gqa/images``, ``vqa/images``, ...), searched to any depth by file stem,
since COCO and NLVR2 keep images in subfolders.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vlbench.errors import DataError

#: file suffixes read as images
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: ViLT's pixel normalisation (HF ``ViltImageProcessor``: IMAGENET_STANDARD_MEAN/STD)
MEAN = 0.5
STD = 0.5


def index_images(folder: Path) -> dict[str, Path]:
    """Image id (file stem) -> path for every image under ``folder``, at any depth."""
    out: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()  # a fixed order, so a repeated stem always resolves alike
        for name in sorted(filenames):
            stem, suffix = os.path.splitext(name)
            if suffix.lower() in IMAGE_SUFFIXES:
                out.setdefault(stem, Path(dirpath) / name)
    return out


def load_pixels(path: Path, size: int) -> tuple[torch.Tensor, int, int]:
    """(3, size, size) normalised pixels of the image at ``path`` (zeros beyond it), and the
    height and width it fills."""
    try:
        with Image.open(path) as raw:
            image = raw.convert("RGB")
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None
    w, h = image.size
    scale = size / max(w, h)
    fw, fh = max(1, round(w * scale)), max(1, round(h * scale))
    if (fw, fh) != (w, h):
        image = image.resize((fw, fh), Image.Resampling.BILINEAR)
    pixels = torch.zeros(3, size, size)
    array = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)
    pixels[:, :fh, :fw] = (array / 255.0 - MEAN) / STD
    return pixels, fh, fw


class PixelBatcher:
    """Image ids -> ``pixel_values`` (B, 3, S, S) and ``pixel_mask`` (B, S, S) at size S.

    ``record`` says which images the run reads (folder, size, fingerprint), for run.json.
    """

    def __init__(self, files: dict[str, Path], size: int, record: dict[str, Any]):
        self.files, self.size, self.record = files, size, record

    def missing(self, image_ids: set[str]) -> list[str]:
        """The ids among ``image_ids`` that have no image file, sorted."""
        return sorted(i for i in image_ids if i not in self.files)

    def __call__(self, image_ids: Sequence[str]) -> dict[str, torch.Tensor]:
        values = torch.empty(len(image_ids), 3, self.size, self.size)
        mask = torch.zeros(len(image_ids), self.size, self.size, dtype=torch.long)
        for i, image_id in enumerate(image_ids):
            path = self.files.get(image_id)
            if path is None:
                raise DataError(f"image {image_id!r} has no file under {self.record['folder']}")
            values[i], h, w = load_pixels(path, self.size)
            mask[i, :h, :w] = 1
        return {"pixel_values": values, "pixel_mask": mask}


def task_pixels(data: Any, part: str | Sequence[str] | None, folders: Sequence[str], size: int,
                image_ids: set[str], say: Any = None) -> PixelBatcher:
    """The pixel batcher of a task over ``data`` (a ``DataSource``), at the model's ``size``.

    A synthetic world's images are those of its part ``part``, or of several parts (the
    pre-training corpus pictures the scenes of GQA's and VQA's), drawn now if it has none;
    elsewhere the first of ``folders`` (relative to the data root) that exists. Every id in
    ``image_ids`` must have a file: refused up front, naming a few that have none.
    """
    parts = [part] if isinstance(part, str) else list(part or [])
    if data.synthetic and parts:
        from vlbench.data.synth.images import ensure_images

        manifest = ensure_images(data.root, parts, say=say)
        entries = [manifest.images[p] for p in parts]
        folder = data.root / entries[0]["folder"]
        files = {}
        for entry in entries:
            files.update(index_images(data.root / entry["folder"]))
        record = {key: entries[0][key] for key in ("folder", "size", "count", "fingerprint")}
        if len(entries) > 1:  # one record for the union: folders listed, fingerprints hashed
            record.update(
                folder=",".join(e["folder"] for e in entries),
                count=sum(e["count"] for e in entries),
                fingerprint="sha256:" + hashlib.sha256(
                    "\0".join(e["fingerprint"] for e in entries).encode()).hexdigest())
    else:
        found = [data.root / f for f in folders if (data.root / f).is_dir()]
        if not found:
            raise DataError(f"a model that reads pixels needs the images: none of "
                            f"{', '.join(folders)} is a folder under {data.root}")
        folder = found[0]
        files = index_images(folder)
        record = {"folder": str(folder.relative_to(data.root)), "count": len(image_ids)}
    batcher = PixelBatcher(files, size, record)
    missing = batcher.missing(image_ids)
    if missing:
        raise DataError(f"{len(missing)} image id(s) used by the questions have no image file "
                        f"under {folder} (e.g. {', '.join(missing[:3])})")
    if "fingerprint" not in record:
        record["fingerprint"] = _listing_fingerprint(folder, files, image_ids)
    return batcher


def _listing_fingerprint(folder: Path, files: dict[str, Path], image_ids: set[str]) -> str:
    """``files:sha256`` over the path and byte size of each image read: reading every byte of
    a real image folder (tens of GB) at the start of each run would cost minutes."""
    h = hashlib.sha256()
    for image_id in sorted(image_ids):
        path = files[image_id]
        h.update(f"{path.relative_to(folder)}\0{path.stat().st_size}\0".encode())
    return "files:sha256:" + h.hexdigest()
