"""Grid region features from a ``timm`` backbone: a folder of images -> an LXMERT feature TSV.

Instead of a Faster R-CNN's detected boxes, each image is cut into a ``grid x grid`` lattice
(grid features, as in "In Defense of Grid Features for VQA" and Pixel-BERT): the backbone's
final feature map is average-pooled to ``grid x grid`` cells, each cell is one region, and its
box is the cell's pixel rectangle in the original image. Convolutional backbones give their
last feature map; ViT-style backbones give their patch tokens (class and other prefix tokens
dropped) laid back out on the patch grid.

The output is the LXMERT TSV every vlbench reader takes, plus ``PATH.meta.json`` saying how
it was made (backbone, where the weights came from, grid, input size, preprocessing, a content
fingerprint equal to the :class:`~vlbench.data.features.FeatureStore` fingerprint of the TSV),
so features from random weights never pass for pretrained ones unnoticed.

Extraction is resumable: rows go to ``PATH.part`` as they are computed, with a done-list
(``PATH.done``: image id and end offset of its row) and the settings (``PATH.part.json``);
a rerun with the same settings keeps the rows already written and computes the rest, and the
finished file is renamed into place.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import difflib
import hashlib
import io
import json
import os
import pickle
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vlbench.data.tsv import RegionRecord, format_row, iter_rows
from vlbench.errors import CheckpointError, ConfigError, DataError

#: file name endings read as images (case-insensitive)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: what sits beside the TSV and describes it
META_SUFFIX = ".meta.json"
META_FORMAT = "vlbench-grid-features"
META_VERSION = 1
#: the label a grid cell gets: the pre-training task ignores ids < 0 (and weighs them by a
#: confidence of 0), and the probes drop "-1", so no made-up class is ever a target
NO_LABEL = -1

Say = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


@dataclasses.dataclass
class Extraction:
    """What :func:`extract_features` did."""

    path: Path  # the TSV
    meta_path: Path  # its PATH.meta.json
    meta: dict[str, Any]
    images: int  # rows in the TSV
    computed: int  # images computed by this call (the rest were kept from an interrupted one)
    resumed: int  # images kept from an interrupted extraction
    seconds: float  # wall time of this call
    setup_seconds: float  # of which: listing the images, building the backbone, resuming

    @property
    def images_per_s(self) -> float:
        """Images computed per second once the backbone is ready (decoding included)."""
        busy = self.seconds - self.setup_seconds
        return self.computed / busy if busy > 0 else 0.0


# -- images ------------------------------------------------------------------------------------


def image_id(path: str | os.PathLike) -> str:
    """The image id of a file: its name without the extension.

    ``COCO_val2014_000000000042.jpg`` -> ``COCO_val2014_000000000042`` (the id LXMERT's COCO
    feature files use), GQA's ``n12345.jpg`` -> ``n12345``.
    """
    return Path(path).stem


def list_images(folder: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """Image files under ``folder`` at any depth (by :data:`IMAGE_SUFFIXES`; NLVR2 keeps its
    training images in numbered subfolders), sorted by path; hidden files and folders are
    skipped.

    ``limit`` keeps the first N. Two files with one id (``a.jpg`` and ``sub/a.png``) are an
    error: the TSV holds one row per id.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--images {folder}: no such directory; point it at a folder of image files")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: extract at least one image")
    files = sorted((p for p in folder.rglob("*")
                    if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(folder).parts)),
                   key=lambda p: p.relative_to(folder).parts)
    if not files:
        raise DataError(f"--images {folder}: holds no image files ({', '.join(IMAGE_SUFFIXES)}) "
                        "at any depth; point --images at the folder of your images")
    seen: dict[str, Path] = {}
    for p in files:
        other = seen.setdefault(image_id(p), p)
        if other is not p:
            raise DataError(f"{folder}: {other.relative_to(folder)} and {p.relative_to(folder)} "
                            f"both give image id '{image_id(p)}' (the id is the file name "
                            "without its extension); keep one of them")
    return files[:limit] if limit is not None else files


class _ImageFiles(torch.utils.data.Dataset):
    """Decoded, transformed images by index; runs in the DataLoader workers.

    A file that does not decode comes back as an error string, so the main process can name
    the file in a one-line error (an exception raised in a worker arrives as a traceback).
    """

    def __init__(self, files: list[Path], transform: Callable[[Any], Tensor]):
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from PIL import Image, ImageOps

        try:
            with Image.open(self.files[index]) as img:
                # Orientation as displayed: the questions were written looking at it that way.
                rgb = ImageOps.exif_transpose(img).convert("RGB")
            w, h = rgb.size
            return {"index": index, "pixels": self.transform(rgb), "size": (h, w), "error": None}
        except Exception as exc:  # any decoder failure becomes a per-file error in the main process
            text = str(exc).strip().splitlines()
            return {"index": index, "pixels": None, "size": (0, 0),
                    "error": f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [it for it in items if it["error"] is None]
    return {
        "index": [it["index"] for it in items],
        "size": [it["size"] for it in items],
        "errors": [(it["index"], it["error"]) for it in items if it["error"] is not None],
        "pixels": torch.stack([it["pixels"] for it in ok]) if len(ok) == len(items) else None,
    }


# -- backbones ---------------------------------------------------------------------------------


def list_backbones(pattern: str = "*") -> list[str]:
    """``timm.list_models(pattern)``: model names, wildcards allowed (``"resnet*"``)."""
    import timm

    return list(timm.list_models(pattern or "*"))


def close_backbones(name: str, n: int = 5) -> list[str]:
    """timm model names close to ``name`` (for "did you mean")."""
    import timm

    names = timm.list_models()
    base = name.split(".", 1)[0]
    return difflib.get_close_matches(base, names, n=n, cutoff=0.6)


def check_backbone(name: str) -> None:
    """Raise :class:`ConfigError`, with close matches, when timm has no model ``name``."""
    import timm

    if not timm.is_model(name):
        close = close_backbones(name)
        hint = (f"did you mean {', '.join(close)}?" if close
                else "`vlbench list backbones 'PATTERN*'` lists the names")
        raise ConfigError(f"--backbone {name}: not a timm model; {hint}")


@dataclasses.dataclass
class Backbone:
    """A timm model ready to turn batches into grid features, and how it was made."""

    name: str
    model: nn.Module
    data_config: dict[str, Any]  # what the transform does (input size, resize, mean/std)
    transform: Callable[[Any], Tensor]
    feat_dim: int
    map_size: tuple[int, int]  # the feature map (h, w) at the input size
    weights: str  # "random" | "timm-pretrained" | "sha256:<hex>" of a --weights file
    weights_detail: dict[str, Any]


def build_backbone(name: str, *, image_size: int | None = None, weights: str | os.PathLike | None = None,
                   seed: int = 0, say: Say = _stderr) -> Backbone:
    """Create ``name`` with ``num_classes=0`` and load weights: a file, else timm's pretrained
    weights when they are in the local cache, else a seeded random initialisation (with a
    warning through ``say``). Nothing is downloaded."""
    from timm.data import create_transform, resolve_data_config

    check_backbone(name)
    if image_size is not None and image_size < 32:
        raise ConfigError(f"--image-size {image_size}: too small; use at least 32 pixels")
    kwargs: dict[str, Any] = {}
    if image_size is not None:
        kwargs["img_size"] = image_size  # ViTs build their position table for this size
    # Seeded outside the caller's RNG: a resumed random-weight extraction must get the same
    # weights as the interrupted one.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model, kwargs = _create(name, pretrained=False, **kwargs)
        except Exception as exc:  # timm's own asserts (window or patch sizes) become one line
            at = f" at --image-size {image_size}" if image_size is not None else ""
            raise ConfigError(f"--backbone {name}: cannot be built{at} ({type(exc).__name__}: "
                              f"{_first_line(exc)}); pick another --image-size or backbone") from None

    if weights is not None:
        weights_tag, detail = load_weights_file(model, Path(weights), name)
        say(f"weights: {weights} ({weights_tag[:19]}...)"
            + (f"; {len(detail['missing'])} backbone tensor(s) not in the file stay random: "
               f"{', '.join(detail['missing'][:3])}" if detail["missing"] else "")
            + (f"; {len(detail['unexpected'])} unused tensor(s) in the file: "
               f"{', '.join(detail['unexpected'][:3])}" if detail["unexpected"] else ""))
    else:
        cached = find_cached_pretrained(model)
        pretrained = None
        if cached is not None:
            try:
                with offline_hub():
                    pretrained, _ = _create(name, pretrained=True, **kwargs)
            except Exception as exc:  # a damaged cache entry: say so, and carry on with random weights
                say(f"warning: timm's pretrained weights for {name} are in the local cache ({cached}) "
                    f"but did not load ({type(exc).__name__}: {_first_line(exc)})")
        if pretrained is not None:
            model = pretrained
            cfg = getattr(model, "pretrained_cfg", {}) or {}
            weights_tag = "timm-pretrained"
            detail = {"hf_hub_id": cfg.get("hf_hub_id"), "tag": cfg.get("tag"), "file": str(cached)}
            say(f"weights: timm pretrained {cfg.get('hf_hub_id') or name} from the local cache")
        else:
            weights_tag, detail = "random", {"seed": seed}
            say(f"warning: {name} has RANDOM weights (no --weights FILE, and timm's pretrained weights "
                "are not in the local cache): the features are for testing only; "
                "the metadata records weights: random")

    model.eval()
    data_config = resolve_data_config({}, model=model)
    if image_size is not None:
        data_config["input_size"] = (3, image_size, image_size)
    # Squash the whole image to the input size, never centre-crop: a cell's box must be the
    # part of the original image its features come from.
    data_config.update(crop_pct=1.0, crop_mode="squash")
    transform = create_transform(**data_config)
    _, in_h, in_w = data_config["input_size"]
    try:
        with torch.inference_mode():
            fmap = feature_map(model, torch.zeros(1, 3, in_h, in_w))
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"--backbone {name}: fails on a {in_h}x{in_w} input ({type(exc).__name__}: "
                          f"{_first_line(exc)}); pick another --image-size or backbone") from None
    return Backbone(name=name, model=model, data_config=_jsonable(data_config), transform=transform,
                    feat_dim=int(fmap.shape[1]), map_size=(int(fmap.shape[2]), int(fmap.shape[3])),
                    weights=weights_tag, weights_detail=detail)


def _create(name: str, *, pretrained: bool, **kwargs: Any) -> tuple[nn.Module, dict[str, Any]]:
    """``timm.create_model(name, num_classes=0)`` and the keyword arguments it took: ``img_size``
    is dropped for models that have no such argument (CNNs run at any size)."""
    import timm

    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs), kwargs
    except TypeError as exc:
        if "img_size" not in kwargs or "img_size" not in str(exc):
            raise
    kwargs = {k: v for k, v in kwargs.items() if k != "img_size"}
    return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs), kwargs


def feature_map(model: nn.Module, pixels: Tensor) -> Tensor:
    """The backbone's final feature map as ``(B, C, h, w)``.

    ``forward_features`` gives ``(B, C, h, w)`` for CNNs, ``(B, h, w, C)`` for models whose
    ``output_fmt`` is NHWC (Swin), and ``(B, tokens, C)`` for ViT-style models: their prefix
    tokens (``num_prefix_tokens``: class, distillation, registers) are dropped and the patch
    tokens laid out on the patch grid.
    """
    out = model.forward_features(pixels)
    if isinstance(out, list | tuple):
        out = out[-1]
    width = getattr(model, "num_features", None)
    if out.ndim == 4:
        fmt = str(getattr(model, "output_fmt", "NCHW"))
        if fmt.endswith("NHWC") or (out.shape[1] != width and out.shape[-1] == width):
            out = out.permute(0, 3, 1, 2)
        return out
    if out.ndim == 3:
        tokens = out[:, int(getattr(model, "num_prefix_tokens", 0) or 0):]
        h, w = _token_grid(model, tokens.shape[1], pixels.shape[-2], pixels.shape[-1])
        return tokens.transpose(1, 2).reshape(out.shape[0], out.shape[2], h, w)
    raise ConfigError(f"the backbone's forward_features returns shape {tuple(out.shape)}, not a "
                      "feature map or a token sequence; pick a convolutional or ViT backbone")


def _token_grid(model: nn.Module, n: int, in_h: int, in_w: int) -> tuple[int, int]:
    """(h, w) of ``n`` patch tokens: the patch embedding's grid, else the factorisation of ``n``
    closest to the input's aspect ratio."""
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if grid is not None and int(grid[0]) * int(grid[1]) == n:
        return int(grid[0]), int(grid[1])
    pairs = [(h, n // h) for h in range(1, n + 1) if n % h == 0]
    h, w = min(pairs, key=lambda p: abs(np.log(p[0] / p[1]) - np.log(in_h / in_w)))
    return h, w


def grid_features(model: nn.Module, pixels: Tensor, grid: int) -> Tensor:
    """``(B, grid*grid, C)``: the feature map average-pooled to ``grid x grid``, cells row-major."""
    fmap = feature_map(model, pixels)
    pooled = torch.nn.functional.adaptive_avg_pool2d(fmap.float(), grid)
    return pooled.flatten(2).transpose(1, 2)


def cell_boxes(grid: int, img_w: int, img_h: int) -> np.ndarray:
    """``(grid*grid, 4)`` float32 pixel boxes ``x1, y1, x2, y2`` of the cells, row-major; they
    tile the image exactly (each edge is shared by its neighbours)."""
    xs = np.arange(grid + 1, dtype=np.float64) * img_w / grid
    ys = np.arange(grid + 1, dtype=np.float64) * img_h / grid
    r, c = np.divmod(np.arange(grid * grid), grid)
    return np.stack([xs[c], ys[r], xs[c + 1], ys[r + 1]], axis=1).astype(np.float32)


# -- weights -----------------------------------------------------------------------------------


def read_weights(path: Path) -> dict[str, Tensor]:
    """Tensors of a weights file without running code stored in it.

    ``.safetensors`` holds raw tensors only; anything else is read as a pickle with
    ``torch.load(weights_only=True)``, which refuses every global but tensors and plain
    containers. ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers are unwrapped.
    """
    if not path.is_file():
        raise CheckpointError(f"--weights {path}: no such file; pass a state dict saved with "
                              "torch.save(model.state_dict()) or safetensors")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:
            raise CheckpointError(f"--weights {path}: not a readable safetensors file "
                                  f"({_first_line(exc)})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"it references {found.group(1)}, which" if found else "it holds objects that"
        raise CheckpointError(
            f"--weights {path}: refused to load: {what} only running code from the file could "
            "restore (vlbench reads tensors only); re-save the weights as a plain state dict or "
            "safetensors in an environment you trust") from None
    except Exception as exc:
        raise CheckpointError(f"--weights {path}: not a readable PyTorch file ({type(exc).__name__}: "
                              f"{_first_line(exc)})") from None
    return _state_dict_of(obj, path)


def _state_dict_of(obj: Any, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping) and not all(isinstance(v, Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "model_state_dict", "module"):
            if isinstance(obj.get(key), Mapping):
                return _state_dict_of(obj[key], path)
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"--weights {path}: holds a {type(obj).__name__}, not a state dict of "
                              "named tensors; save model.state_dict()")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"--weights {path}: entry {bad[0]!r} is not a named tensor; "
                              "save model.state_dict()")
    state = dict(obj)
    if all(k.startswith("module.") for k in state):  # saved from a DistributedDataParallel wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_weights_file(model: nn.Module, path: Path, name: str) -> tuple[str, dict[str, Any]]:
    """Load a weights file into ``model``; returns (``"sha256:<hex>"`` of the file, details with
    the ``missing`` and ``unexpected`` keys). The classifier's keys are dropped quietly (the
    model has no head); a file that matches none of the backbone, or a tensor of the wrong
    shape, is an error."""
    state = read_weights(path)
    # Conversions timm applies to its own checkpoints (ViT position tables resampled to
    # the input size, older layouts renamed) live beside each model as checkpoint_filter_fn.
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        with contextlib.suppress(Exception):  # a layout it does not know: load the file as it is
            state = filter_fn(state, model)
    own = model.state_dict()
    classifier = (getattr(model, "pretrained_cfg", {}) or {}).get("classifier") or ()
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    dropped = [k for k in state if k not in own and any(k.startswith(h + ".") for h in heads)]
    state = {k: v for k, v in state.items() if k not in dropped}
    if not set(state) & set(own):
        raise CheckpointError(f"--weights {path}: none of its {len(state)} tensors is a parameter of "
                              f"{name} (e.g. file: {next(iter(state), '-')}, model: {next(iter(own))}); "
                              "is it a state dict of this backbone?")
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise CheckpointError(f"--weights {path}: {key} has shape {tuple(value.shape)}, {name} "
                                  f"expects {tuple(own[key].shape)}; is it a state dict of this backbone "
                                  "at this --image-size?")
    result = model.load_state_dict(state, strict=False)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest(), {
        "file": str(path.resolve()), "missing": list(result.missing_keys),
        "unexpected": list(result.unexpected_keys), "dropped_classifier": dropped,
    }


def find_cached_pretrained(model: nn.Module) -> Path | None:
    """The local file of timm's pretrained weights for ``model``, or None; never downloads.

    Looks where timm would load from: the Hugging Face hub cache for ``hf_hub_id`` weights
    (safetensors first, as timm does), else torch hub's checkpoint folder for URL weights.
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        repo, _, revision = hub_id.partition("@")
        names = ([cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename")
                 else ["model.safetensors", "pytorch_model.bin"])
        for filename in names:
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
        return None
    url = cfg.get("url")
    if url:
        local = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])
        return local if local.is_file() else None
    return None


@contextlib.contextmanager
def offline_hub() -> Iterator[None]:
    """Hugging Face hub calls inside the block read the local cache only.

    ``huggingface_hub`` reads ``HF_HUB_OFFLINE`` when it is imported, so the flag is set in
    the environment and in its constants, and both are restored afterwards.
    """
    old_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = None
    with contextlib.suppress(ImportError):
        from huggingface_hub import constants
    old_const = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env
        if constants is not None:
            constants.HF_HUB_OFFLINE = old_const


# -- the part file -----------------------------------------------------------------------------


class _PartFile:
    """Rows as they are computed, a done-list, and the settings they were computed with.

    ``PATH.done`` holds ``img_id<TAB>end offset of its row in PATH.part`` per line. On resume
    the part is cut back to the last row the done-list vouches for, so a row cut short by a
    crash is computed again and the finished file has the bytes of an uninterrupted run.
    """

    def __init__(self, out: Path):
        self.out = out
        self.part = out.with_name(out.name + ".part")
        self.done_path = out.with_name(out.name + ".done")
        self.settings_path = out.with_name(out.name + ".part.json")
        self.done: set[str] = set()
        self.count = 0
        self.offset = 0
        self.content = hashlib.sha256()  # same value as the feature store's fingerprint
        self._rows: Any = None
        self._log: Any = None

    def paths(self) -> tuple[Path, Path, Path]:
        return self.part, self.done_path, self.settings_path

    def open(self, settings: dict[str, Any], say: Say) -> int:
        """Start, or resume when the settings match; returns the number of rows kept."""
        kept: list[tuple[str, int]] = []
        if self.settings_path.is_file() and self.part.is_file():
            try:
                old = json.loads(self.settings_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = None
            settings = json.loads(json.dumps(settings))  # compare as it reads back
            if old is not None and old != settings:
                diff = next(k for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k))
                raise DataError(
                    f"{self.part}: an interrupted extraction made with other settings ({diff}: "
                    f"{json.dumps(old.get(diff))} there, {json.dumps(settings.get(diff))} now); rerun "
                    "with its options to resume it, or pass --force to start over")
            if old is not None:
                kept = self._vouched()
        if not kept:
            for p in self.paths():
                p.unlink(missing_ok=True)
            _write_json(self.settings_path, settings)
        else:
            self.offset = kept[-1][1]
            with open(self.part, "r+b") as f:
                f.truncate(self.offset)  # drop a row the done-list does not vouch for
            with open(self.done_path, "w", encoding="utf-8") as f:
                f.writelines(f"{img_id}\t{end}\n" for img_id, end in kept)
            for _, row in iter_rows(self.part):
                self._hash(row)
            self.done = {img_id for img_id, _ in kept}
            self.count = len(kept)
            say(f"resuming: {self.count} images already extracted in {self.part}")
        self._rows = open(self.part, "ab")
        self._log = open(self.done_path, "a", encoding="utf-8")
        return self.count

    def _vouched(self) -> list[tuple[str, int]]:
        """Done-list entries whose rows are wholly in the part file (a prefix of the list)."""
        size = self.part.stat().st_size if self.part.is_file() else 0
        kept: list[tuple[str, int]] = []
        if not self.done_path.is_file():
            return kept
        with open(self.done_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                img_id, tab, end = line.rstrip("\n").rpartition("\t")
                if not line.endswith("\n") or not tab or not end.isdigit():
                    break  # the last line, cut short
                if int(end) > size or (kept and int(end) <= kept[-1][1]):
                    break
                kept.append((img_id, int(end)))
        return kept

    def _hash(self, columns: list[str]) -> None:
        self.content.update("\t".join(columns).encode())
        self.content.update(b"\n")

    def add(self, record: RegionRecord) -> None:
        """Append one row and its done-list entry."""
        columns = format_row(record)
        buf = io.StringIO()
        csv.writer(buf, delimiter="\t", lineterminator="\n").writerow(columns)
        data = buf.getvalue().encode("utf-8")
        self._rows.write(data)
        self.offset += len(data)
        self._log.write(f"{record.img_id}\t{self.offset}\n")
        self._hash(columns)
        self.done.add(record.img_id)
        self.count += 1

    def sync(self) -> None:
        """Rows first, then the done-list, each flushed to disk."""
        for f in (self._rows, self._log):
            f.flush()
            os.fsync(f.fileno())

    def close(self) -> None:
        for f in (self._rows, self._log):
            if f is not None and not f.closed:
                f.flush()
                f.close()

    def fingerprint(self) -> str:
        return "sha256:" + self.content.hexdigest()


# -- the extraction ----------------------------------------------------------------------------


def extract_features(
    images: str | os.PathLike,
    out: str | os.PathLike,
    *,
    backbone: str,
    grid: int = 6,
    image_size: int | None = None,
    batch_size: int = 32,
    weights: str | os.PathLike | None = None,
    workers: int | None = None,
    limit: int | None = None,
    device: str = "auto",
    seed: int = 0,
    force: bool = False,
    progress: bool = False,
    say: Say = _stderr,
    after_image: Callable[[int], None] | None = None,
) -> Extraction:
    """Extract ``grid x grid`` region features of every image in ``images`` into the TSV ``out``.

    ``workers`` DataLoader processes decode and transform the images (None: 2 on CPU, up to
    8 on a GPU). An interrupted call leaves ``out.part``; calling again with the same
    settings resumes it, ``force`` starts over (and replaces a finished ``out``).
    ``after_image`` is called with the number of rows written after each row (an exception
    it raises stops the extraction like an interruption). Returns an :class:`Extraction`;
    warnings and notes go through ``say``.
    """
    start = time.perf_counter()
    out = Path(out)
    if grid < 1:
        raise ConfigError(f"--grid {grid}: use at least 1 (one region per image)")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: use at least 1")
    if workers is not None and workers < 0:
        raise ConfigError(f"--workers {workers}: use 0 (decode in this process) or more")
    if out.is_dir():
        raise DataError(f"--out {out}: is a directory; pass the path of the TSV file to write")
    files = list_images(images, limit)
    meta_path = out.with_name(out.name + META_SUFFIX)
    part = _PartFile(out)
    if force:
        for p in (out, meta_path, *part.paths()):
            p.unlink(missing_ok=True)
    elif out.exists():
        raise DataError(f"--out {out}: already exists; pass --force to replace it, or pick another path")
    out.parent.mkdir(parents=True, exist_ok=True)
    run_device = _device(device)

    net = build_backbone(backbone, image_size=image_size, weights=weights, seed=seed, say=say)
    h, w = net.map_size
    if grid > min(h, w):
        size = net.data_config["input_size"][1]
        need = int(np.ceil(size * grid / min(h, w)))
        raise ConfigError(f"--grid {grid}: larger than {backbone}'s {h}x{w} feature map at {size} px; "
                          f"use --grid {min(h, w)} or less, or --image-size {need} or more")
    net.model.to(run_device)
    settings = {
        "format": META_FORMAT, "format_version": META_VERSION, "source": str(Path(images).resolve()),
        "backbone": backbone, "weights": net.weights, "weights_detail": net.weights_detail, "seed": seed,
        "grid": grid, "num_boxes": grid * grid, "feat_dim": net.feat_dim, "feature_map": [h, w],
        "image_size": list(net.data_config["input_size"][1:]), "data_config": net.data_config,
        "pooling": "adaptive average of the final feature map",
        "boxes": "grid cells, pixels of the original image (x1, y1, x2, y2)",
        "labels": f"none: objects_id and attrs_id {NO_LABEL}, confidences 0",
        "image_ids": "file name without its extension",
    }
    resumed = part.open(settings, say)
    todo = [i for i, f in enumerate(files) if image_id(f) not in part.done]
    # Batches are fixed slices of the file list, so a resumed run computes every image in the
    # batch it had before, and gets bit-identical features; rows already written are skipped.
    batches = [list(range(b, min(b + batch_size, len(files))))
               for b in sorted({i - i % batch_size for i in todo})]
    n_workers = (2 if run_device.type == "cpu" else min(8, os.cpu_count() or 1)) if workers is None else workers
    loader = torch.utils.data.DataLoader(
        _ImageFiles(files, net.transform), batch_sampler=batches, num_workers=n_workers,
        collate_fn=_collate, pin_memory=run_device.type == "cuda")
    computed = 0
    setup = time.perf_counter() - start
    try:
        with _progress_bar(progress, len(files), resumed) as advance, torch.inference_mode():
            for batch in loader:
                for index, error in batch["errors"]:
                    raise DataError(f"{files[index]}: cannot be read as an image ({error}); fix or "
                                    "remove the file and rerun to resume")
                feats = grid_features(net.model, batch["pixels"].to(run_device), grid).cpu().numpy()
                for j, index in enumerate(batch["index"]):
                    img_id = image_id(files[index])
                    if img_id in part.done:
                        continue
                    if not np.isfinite(feats[j]).all():
                        raise DataError(f"{files[index]}: {backbone} gave NaN/inf features for this "
                                        "image; check the weights (--weights)")
                    img_h, img_w = batch["size"][j]
                    part.add(_record(img_id, img_h, img_w, grid, feats[j]))
                    computed += 1
                    advance()
                    if after_image is not None:
                        after_image(part.count)
                part.sync()
    except BaseException:
        part.close()
        if part.count:
            say(f"stopped: {part.count} of {len(files)} images are saved in {part.part}; rerun the "
                "same command to resume")
        raise
    part.sync()
    part.close()

    meta = {**settings, "images": part.count, "fingerprint": part.fingerprint(),
            "versions": _versions(), "device": str(run_device),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _write_json(meta_path, meta)  # before the TSV appears: a finished TSV always has its meta
    os.replace(part.part, out)
    part.done_path.unlink(missing_ok=True)
    part.settings_path.unlink(missing_ok=True)
    return Extraction(path=out, meta_path=meta_path, meta=meta, images=part.count, computed=computed,
                      resumed=resumed, seconds=time.perf_counter() - start, setup_seconds=setup)


def _record(img_id: str, img_h: int, img_w: int, grid: int, feats: np.ndarray) -> RegionRecord:
    n = grid * grid
    return RegionRecord(
        img_id=img_id, img_h=img_h, img_w=img_w,
        objects_id=np.full(n, NO_LABEL, dtype=np.int64), objects_conf=np.zeros(n, dtype=np.float32),
        attrs_id=np.full(n, NO_LABEL, dtype=np.int64), attrs_conf=np.zeros(n, dtype=np.float32),
        boxes=cell_boxes(grid, img_w, img_h), features=np.ascontiguousarray(feats, dtype=np.float32),
    )


def read_meta(tsv: str | os.PathLike) -> dict[str, Any] | None:
    """The ``.meta.json`` beside a feature TSV, or None when there is none (or it does not read)."""
    path = Path(str(tsv) + META_SUFFIX)
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


@contextlib.contextmanager
def _progress_bar(show: bool, total: int, done: int) -> Iterator[Callable[[], None]]:
    """A rich progress bar on stderr (images, rate, time left); yields ``advance()``."""
    if not show:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("extracting"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("images", total=total, completed=done, rate="")
        t0, n = time.perf_counter(), 0

        def advance() -> None:
            nonlocal n
            n += 1
            rate = n / max(time.perf_counter() - t0, 1e-9)
            bar.update(task, advance=1, rate=f"{rate:.1f} img/s")

        yield advance


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device here; use --device cpu")
    return device


def _versions() -> dict[str, str]:
    import timm

    import vlbench

    return {"vlbench": vlbench.__version__, "timm": timm.__version__, "torch": torch.__version__}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
