"""Scenes of the synthetic world and what a "detector" reports about them.

A scene is an image size and a few objects, each with a category, color, material, size
and a pixel box. The detector turns each object into one region: a feature vector that is
a fixed random projection of the object's properties (category, color, material, size,
coarse position) plus Gaussian noise, a slightly jittered box, and one object label and
one attribute label with confidences. The projection is drawn once per world seed, like
a detector's weights, and shared by every image of the world.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from vlbench.data.synth.vocab import (
    ATTRIBUTE_IDS,
    CATEGORIES,
    COLORS,
    MATERIALS,
    OBJECT_IDS,
    SIZES,
)
from vlbench.data.tsv import RegionRecord

GRID = 3  # coarse position: which cell of a 3 x 3 grid holds the box centre
CONCEPT_DIM = len(CATEGORIES) + len(COLORS) + len(MATERIALS) + len(SIZES) + GRID * GRID
MARGIN = 0.05  # relations need the centres this far apart (fraction of the image side)
#: the detector's localisation noise: each box side moves by up to this share of the box size
BOX_JITTER = 0.03

_KINDS = (("category", CATEGORIES), ("color", COLORS), ("material", MATERIALS), ("size", SIZES))


def _concept_columns() -> tuple[dict[str, dict[str, int]], int]:
    """Column of each property value in the concept multi-hot, and where positions start."""
    index, offset = {}, 0
    for kind, values in _KINDS:
        index[kind] = {v: offset + i for i, v in enumerate(values)}
        offset += len(values)
    return index, offset


_INDEX, _POSITION_OFFSET = _concept_columns()

# Box side as a fraction of min(image w, h): small and large never overlap in range.
_SIDE = {"small": (0.10, 0.16), "large": (0.22, 0.30)}


@dataclass
class Obj:
    """One object of a scene (box in pixels: x1, y1, x2, y2)."""

    oid: str
    category: str
    color: str
    material: str
    size: str
    box: tuple[int, int, int, int]

    def attr(self, kind: str) -> str:
        """The value of an attribute kind ('color', 'material', 'size') or 'name'."""
        return self.category if kind == "name" else getattr(self, kind)

    @property
    def cx(self) -> float:
        return (self.box[0] + self.box[2]) / 2

    @property
    def cy(self) -> float:
        return (self.box[1] + self.box[3]) / 2


@dataclass
class Scene:
    """An image of the world: its id, size and objects (in region order)."""

    image_id: str
    width: int
    height: int
    objects: list[Obj] = field(default_factory=list)
    # Lookups memoised by question generators (a scene is not changed once drawn).
    memo: dict = field(default_factory=dict, repr=False, compare=False)

    def with_category(self, category: str) -> list[Obj]:
        groups = self.memo.get("by_category")
        if groups is None:
            groups = {}
            for o in self.objects:
                groups.setdefault(o.category, []).append(o)
            self.memo["by_category"] = groups
        return groups.get(category, [])

    def matching(self, **props: str) -> list[Obj]:
        """Objects whose attributes equal every given value (e.g. ``color='red'``)."""
        return [o for o in self.objects if all(o.attr(k) == v for k, v in props.items())]


def relation(scene: Scene, a: Obj, b: Obj, rel: str) -> bool | None:
    """Whether ``a`` is ``rel`` ``b`` (GQA wording); None when too close to call."""
    if rel in ("to the left of", "to the right of"):
        d, m = a.cx - b.cx, MARGIN * scene.width
        if abs(d) < m:
            return None
        return (d < 0) == (rel == "to the left of")
    d, m = a.cy - b.cy, MARGIN * scene.height
    if abs(d) < m:
        return None
    return (d < 0) == (rel == "above")


def hposition(scene: Scene, o: Obj) -> str | None:
    """'left' / 'right' when the object is clearly in that part of the image."""
    if o.cx < 0.4 * scene.width:
        return "left"
    if o.cx > 0.6 * scene.width:
        return "right"
    return None


def sample_scene(rng: np.random.Generator, image_id: str, next_oid, *, min_objects: int,
                 max_objects: int, size_range: tuple[int, int],
                 plant: Sequence[dict] = (), avoid: dict | None = None) -> Scene:
    """Draw a scene: image size, 3..N objects with properties and non-overlapping boxes.

    ``plant`` lists property dicts the first objects must have and ``avoid`` (which must
    name a category) a property set no other object may match, so a statement's count
    can be set exactly. ``next_oid()`` hands out unique object ids.
    """
    w = int(rng.integers(size_range[0], size_range[1] + 1))
    h = int(rng.integers(size_range[0], size_range[1] + 1))
    n = max(int(rng.integers(min_objects, max_objects + 1)), len(plant))
    # One random call for the whole scene (speed): 4 property draws, 1 spare, then
    # _BATCH candidate boxes per object.
    u = rng.random((n, 5 + 4 * _BATCH))
    objects: list[dict] = []
    for i, row in enumerate(u[:, :5].tolist()):
        props = {kind: values[min(int(row[k] * len(values)), len(values) - 1)]
                 for k, (kind, values) in enumerate(_KINDS)}
        if i < len(plant):
            props.update(plant[i])
        elif avoid and all(props[k] == v for k, v in avoid.items()):
            others = [c for c in CATEGORIES if c != avoid["category"]]
            props["category"] = others[min(int(row[4] * len(others)), len(others) - 1)]
        objects.append(props)
    # Crowded scenes (up to 36 regions) get smaller objects so they still fit.
    shrink = min(1.0, float(np.sqrt(10 / n)))
    lo = np.array([_SIDE[p["size"]][0] for p in objects])[:, None] * shrink
    hi = np.array([_SIDE[p["size"]][1] for p in objects])[:, None] * shrink
    b = _BATCH
    side = (lo + (hi - lo) * u[:, 5:5 + b]) * min(w, h)
    root = np.sqrt(0.8 + 0.45 * u[:, 5 + b:5 + 2 * b])
    bw, bh = side * root, side / root
    x1, y1 = u[:, 5 + 2 * b:5 + 3 * b] * (w - bw), u[:, 5 + 3 * b:5 + 4 * b] * (h - bh)
    candidates = np.stack([x1, y1, x1 + bw, y1 + bh], axis=2).astype(np.int64).tolist()
    scene = Scene(image_id, w, h)
    placed: list[tuple[int, int, int, int]] = []
    for i, props in enumerate(objects):
        box = _first_free(candidates[i], placed) or _place(rng, w, h, props["size"], placed,
                                                           shrink)
        if box is None:
            if i < len(plant):
                continue  # extremely rare: callers check the property they need
            break
        placed.append(box)
        scene.objects.append(Obj(next_oid(), box=box, **props))
    # Detectors list regions by confidence, not by position: shuffle the order.
    order = rng.permutation(len(scene.objects))
    scene.objects = [scene.objects[i] for i in order]
    return scene


_BATCH = 8


def _first_free(candidates: list, placed: list[tuple[int, int, int, int]]):
    """The first candidate overlapping no placed box by 15% or more of the smaller area."""
    for x1, y1, x2, y2 in candidates:
        area = (x2 - x1) * (y2 - y1)
        for px1, py1, px2, py2 in placed:
            iw = min(x2, px2) - max(x1, px1)
            ih = min(y2, py2) - max(y1, py1)
            if iw > 0 and ih > 0 and iw * ih >= 0.15 * max(min(area, (px2 - px1) * (py2 - py1)), 1):
                break
        else:
            return (x1, y1, x2, y2)
    return None


def _place(rng: np.random.Generator, width: int, height: int, size: str,
           placed: list[tuple[int, int, int, int]], shrink: float = 1.0, rounds: int = 5,
           batch: int = 8):
    """More candidate boxes for one object when its first batch all overlapped (None if none fits)."""
    lo, hi = (shrink * v for v in _SIDE[size])
    for _ in range(rounds):
        u = rng.random((4, batch))
        side = (lo + (hi - lo) * u[0]) * min(width, height)
        root = np.sqrt(0.8 + 0.45 * u[1])
        bw, bh = side * root, side / root
        x1, y1 = u[2] * (width - bw), u[3] * (height - bh)
        cand = np.stack([x1, y1, x1 + bw, y1 + bh], axis=1).astype(np.int64).tolist()
        box = _first_free(cand, placed)
        if box is not None:
            return box
    return None


class Detector:
    """Region features, boxes and labels for scenes (one fixed projection per world)."""

    def __init__(self, rng: np.random.Generator, feat_dim: int, *, noise_std: float,
                 label_noise: float):
        # Five concepts are "on" per object: scale so each feature dim has unit variance.
        self.projection = (rng.standard_normal((CONCEPT_DIM, feat_dim)) / np.sqrt(5.0)
                           ).astype(np.float32)
        self.feat_dim = feat_dim
        self.noise_std = noise_std
        self.label_noise = label_noise

    def concepts(self, scenes: Sequence[Scene]) -> np.ndarray:
        """(total objects, 5) indices of every object's on-concepts, scene by scene."""
        cols: list[list[int]] = []
        for scene in scenes:
            gw, gh = GRID / scene.width, GRID / scene.height
            for o in scene.objects:
                gx = min(int((o.box[0] + o.box[2]) / 2 * gw), GRID - 1)
                gy = min(int((o.box[1] + o.box[3]) / 2 * gh), GRID - 1)
                cols.append([_INDEX["category"][o.category], _INDEX["color"][o.color],
                             _INDEX["material"][o.material], _INDEX["size"][o.size],
                             _POSITION_OFFSET + gy * GRID + gx])
        return np.array(cols, dtype=np.int64).reshape(len(cols), 5)

    def project(self, concepts: np.ndarray) -> np.ndarray:
        """Sum of the projection rows of each object's concepts.

        Added row by row in a fixed order rather than as a matrix product: a BLAS product may
        sum in a different order on another CPU or thread count, and the world must be the
        same bytes everywhere for its fingerprint to mean anything.
        """
        feats = np.zeros((len(concepts), self.feat_dim), dtype=np.float32)
        for j in range(concepts.shape[1]):
            feats += self.projection[concepts[:, j]]
        return feats

    def detect(self, rng: np.random.Generator, scene: Scene) -> RegionRecord:
        """The TSV row a detector would write for this scene."""
        return next(self.detect_many(rng, [scene]))

    def detect_many(self, rng: np.random.Generator, scenes: Sequence[Scene],
                    chunk: int = 512) -> Iterator[RegionRecord]:
        """TSV rows for many scenes, drawing the noise for ``chunk`` scenes at a time."""
        for start in range(0, len(scenes), chunk):
            part = scenes[start:start + chunk]
            sizes = [len(s.objects) for s in part]
            total = sum(sizes)
            objs = [o for s in part for o in s.objects]
            feats = self.project(self.concepts(part))
            feats += self.noise_std * rng.standard_normal(feats.shape, dtype=np.float32)
            boxes = np.array([o.box for o in objs], dtype=np.float32).reshape(total, 4)
            # Localisation noise: a few percent of the box size.
            wh = np.tile(boxes[:, 2:] - boxes[:, :2], (1, 2))
            boxes += (BOX_JITTER * wh * rng.uniform(-1, 1, size=(total, 4))).astype(np.float32)
            obj_ids = np.array([OBJECT_IDS[o.category] for o in objs], dtype=np.int64)
            obj_conf = rng.uniform(0.55, 0.98, size=total).astype(np.float32)
            wrong = rng.random(total) < self.label_noise
            wrong_ids = np.array([OBJECT_IDS[c] for c in CATEGORIES], dtype=np.int64)[
                rng.integers(0, len(CATEGORIES), size=total)]
            obj_ids = np.where(wrong, wrong_ids, obj_ids)
            obj_conf = np.where(wrong, rng.uniform(0.2, 0.5, size=total), obj_conf)
            # The top attribute is usually the color, sometimes material or size.
            kinds = rng.choice(3, size=total, p=[0.6, 0.25, 0.15])
            attr_ids = np.array(
                [ATTRIBUTE_IDS[o.attr(("color", "material", "size")[k])]
                 for o, k in zip(objs, kinds, strict=True)], dtype=np.int64)
            attr_conf = rng.uniform(0.4, 0.95, size=total).astype(np.float32)
            lo = 0
            for s, n in zip(part, sizes, strict=True):
                hi = lo + n
                b = boxes[lo:hi]
                b[:, (0, 2)] = np.clip(b[:, (0, 2)], 0, s.width)
                b[:, (1, 3)] = np.clip(b[:, (1, 3)], 0, s.height)
                yield RegionRecord(
                    img_id=s.image_id, img_h=s.height, img_w=s.width,
                    objects_id=obj_ids[lo:hi], objects_conf=obj_conf[lo:hi].astype(np.float32),
                    attrs_id=attr_ids[lo:hi], attrs_conf=attr_conf[lo:hi], boxes=b,
                    features=feats[lo:hi].astype(np.float32),
                )
                lo = hi
