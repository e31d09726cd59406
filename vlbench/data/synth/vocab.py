"""The concepts of the synthetic world and their ids in the detector's label spaces.

Real LXMERT features come from a Faster R-CNN trained on Visual Genome with 1600 object
classes and 400 attribute classes; its TSVs carry one object label and one attribute
label per region. The synthetic detector reports ids in those same ranges, so code that
sizes its heads from the real label spaces works unchanged.
"""

from __future__ import annotations

CATEGORIES: tuple[str, ...] = (
    "cube", "sphere", "cylinder", "cone", "pyramid", "ring", "star", "disk", "cup", "bottle",
)
PLURALS: dict[str, str] = {c: c + "s" for c in CATEGORIES}
COLORS: tuple[str, ...] = ("red", "blue", "green", "yellow", "purple", "brown", "gray", "white")
MATERIALS: tuple[str, ...] = ("metal", "rubber", "glass")
SIZES: tuple[str, ...] = ("small", "large")

# Attribute kinds as GQA names them (the `query`/`verify`/`choose` argument and answer group).
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "color": COLORS,
    "material": MATERIALS,
    "size": SIZES,
}

NUM_OBJECT_CLASSES = 1600
NUM_ATTRIBUTE_CLASSES = 400

# Fixed (seed-independent) spread of the concepts over the detector label spaces, so a
# label id means the same concept in every generated world.
OBJECT_IDS: dict[str, int] = {c: 37 + 151 * i for i, c in enumerate(CATEGORIES)}
ATTRIBUTE_IDS: dict[str, int] = {
    v: 11 + 29 * i for i, v in enumerate(COLORS + MATERIALS + SIZES)
}

# Spatial relations with the exact GQA wording.
RELATIONS: tuple[str, ...] = ("to the left of", "to the right of", "above", "below")

# Colors a human annotator may confuse (drives the VQA answer disagreement).
CONFUSABLE_COLORS: dict[str, tuple[str, ...]] = {
    "red": ("brown", "purple"),
    "blue": ("purple", "gray"),
    "green": ("yellow", "gray"),
    "yellow": ("white", "green"),
    "purple": ("blue", "red"),
    "brown": ("red", "gray"),
    "gray": ("white", "blue"),
    "white": ("gray", "yellow"),
}

NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five")


def article(word: str) -> str:
    """'a' or 'an' for the word that follows."""
    return "an" if word[:1] in "aeiou" else "a"
