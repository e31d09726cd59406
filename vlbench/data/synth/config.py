"""Every knob of the synthetic world, with CPU-sized defaults."""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, fields

from vlbench.errors import ConfigError


@dataclass(frozen=True)
class WorldConfig:
    """Parameters of :func:`vlbench.data.synth.world.generate` (all recorded in the manifest)."""

    # Images and their detector output.
    n_images: int = 1500  # GQA images; val and testdev get n_images // 12 each
    feat_dim: int = 64  # 2048 imitates the real Faster R-CNN features
    min_boxes: int = 3
    max_boxes: int = 8  # objects (= regions) per image, at most 36
    min_image_side: int = 320
    max_image_side: int = 640
    noise_std: float = 0.3  # Gaussian noise on each feature dim (signal has unit variance)
    label_noise: float = 0.05  # share of regions whose detector object label is wrong
    # GQA.
    questions_per_image: int = 8
    unbalanced_fraction: float = 0.05  # extra isBalanced=false questions, ignored by scorers
    entailment_fraction: float = 0.25  # images that get a query/choose/verify cluster
    balance_slack: float = 1.1  # an answer may exceed its type's mean count by this factor
    # Pre-training captions.
    captions_per_image: int = 5
    # VQA v2 (COCO-style image ids): train2014 / val2014; minival is a subset of val2014.
    vqa_train_images: int = 600
    vqa_val_images: int = 200
    vqa_minival_images: int = 100
    vqa_questions_per_image: int = 6
    # NLVR2: sets of image pairs sharing one sentence. Its images are photographs found by
    # searching for one kind of object, so they are less cluttered than GQA's.
    nlvr2_train_sets: int = 2000
    nlvr2_dev_sets: int = 100
    nlvr2_test1_sets: int = 100
    nlvr2_pairs_per_set: int = 4
    nlvr2_min_boxes: int = 2
    nlvr2_max_boxes: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.min_boxes <= self.max_boxes <= 36:
            raise ConfigError(
                f"synthetic world: need 1 <= min_boxes ({self.min_boxes}) <= max_boxes "
                f"({self.max_boxes}) <= 36 (LXMERT's detector keeps 36 regions)"
            )
        if not 1 <= self.nlvr2_min_boxes <= self.nlvr2_max_boxes <= 36:
            raise ConfigError(
                f"synthetic world: need 1 <= nlvr2_min_boxes ({self.nlvr2_min_boxes}) <= "
                f"nlvr2_max_boxes ({self.nlvr2_max_boxes}) <= 36"
            )
        if self.min_boxes < 3:
            raise ConfigError("synthetic world: min_boxes must be >= 3 (questions relate objects)")
        if self.feat_dim < 1 or self.n_images < 24:
            raise ConfigError("synthetic world: need feat_dim >= 1 and n_images >= 24")
        if not 16 <= self.min_image_side <= self.max_image_side:
            raise ConfigError("synthetic world: need 16 <= min_image_side <= max_image_side")
        if self.vqa_minival_images > self.vqa_val_images:
            raise ConfigError("synthetic world: vqa_minival_images must be <= vqa_val_images")

    def to_dict(self) -> dict:
        """Plain dict of all parameters (what the manifest's ``generator`` records)."""
        return asdict(self)

    @classmethod
    def from_overrides(cls, **overrides) -> WorldConfig:
        """Defaults with ``overrides`` applied; unknown names raise :class:`ConfigError`."""
        known = {f.name: f for f in fields(cls)}
        for name in overrides:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(f"synthetic world: unknown parameter '{name}'{hint}")
        return cls(**overrides)
