"""Pictures of the synthetic world's scenes: what a camera would have seen.

A scene is drawn with PIL from its scene graph alone (no random numbers, so the pixels are a
function of the world): a plain floor, then its objects, the lowest on the image (nearest)
last. A category is a shape, a colour the fill, a material the look (rubber matte with a
dark rim, metal shaded with a white highlight, glass see-through with a bright rim), and
size and position come from the object's box. The picture keeps the scene's aspect ratio
with its longer side ``size`` pixels: a box coordinate times :func:`scale` is a pixel
coordinate.

Each object is drawn inside its box shrunk by the detector's localisation noise
(:data:`~vlbench.data.synth.scene.BOX_JITTER` of the box per side), so its pixels lie
inside the box the feature TSV reports for it, whatever the noise drew.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageFilter

from vlbench.data.synth.scene import BOX_JITTER, Obj, Scene

#: the floor behind the objects: a neutral tone that no object colour matches
FLOOR = (176, 170, 158)
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (205, 40, 40), "blue": (40, 80, 215), "green": (40, 160, 60),
    "yellow": (235, 215, 40), "purple": (140, 60, 185), "brown": (125, 75, 35),
    "gray": (105, 105, 105), "white": (248, 248, 248),
}
#: objects are drawn at this many times their size, then averaged down (smooth edges)
SUPERSAMPLE = 4

#: a shape part: ("polygon", points) or ("ellipse", box) in the unit square, a shade
#: (brightness factor; 0 cuts a hole)
Part = tuple[str, list[tuple[float, float]], float]


def _star(points: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    out = []
    for k in range(2 * points):
        r = 0.5 if k % 2 == 0 else 0.5 * inner
        a = math.pi * k / points - math.pi / 2
        out.append((0.5 + r * math.cos(a), 0.5 + r * math.sin(a)))
    return out


#: each category as parts in the unit square, drawn in order (lit faces brighter)
SHAPES: dict[str, list[Part]] = {
    "cube": [("polygon", [(0, .3), (.75, .3), (.75, 1), (0, 1)], 1.0),
             ("polygon", [(0, .3), (.25, 0), (1, 0), (.75, .3)], 1.3),
             ("polygon", [(.75, .3), (1, 0), (1, .7), (.75, 1)], .7)],
    "sphere": [("ellipse", [(0, 0), (1, 1)], 1.0)],
    "cylinder": [("ellipse", [(0, .7), (1, 1)], .85),
                 ("polygon", [(0, .15), (1, .15), (1, .85), (0, .85)], .85),
                 ("ellipse", [(0, 0), (1, .3)], 1.3)],
    "cone": [("ellipse", [(0, .75), (1, 1)], .85),
             ("polygon", [(.5, 0), (1, .875), (0, .875)], 1.0)],
    "pyramid": [("polygon", [(.5, 0), (1, 1), (0, 1)], 1.15),
                ("polygon", [(.5, 0), (1, 1), (.5, 1)], .7)],
    "ring": [("ellipse", [(0, 0), (1, 1)], 1.0), ("ellipse", [(.3, .3), (.7, .7)], 0.0)],
    "star": [("polygon", _star(), 1.0)],
    "disk": [("ellipse", [(0, .35), (1, 1)], .7), ("ellipse", [(0, 0), (1, .65)], 1.15)],
    "cup": [("ellipse", [(.55, .25), (1, .75)], .9), ("ellipse", [(.68, .4), (.88, .6)], 0.0),
            ("polygon", [(0, .1), (.78, .1), (.66, 1), (.12, 1)], 1.0),
            ("ellipse", [(0, 0), (.78, .2)], .6)],
    "bottle": [("polygon", [(.15, .45), (.35, .3), (.65, .3), (.85, .45), (.85, 1), (.15, 1)],
                1.0),
               ("polygon", [(.38, 0), (.62, 0), (.62, .35), (.38, .35)], 1.0),
               ("polygon", [(.15, .55), (.85, .55), (.85, .8), (.15, .8)], 1.25)],
}


def scale(scene: Scene, size: int) -> float:
    """Pixels per scene unit when the longer side is ``size`` pixels."""
    return size / max(scene.width, scene.height)


def image_shape(scene: Scene, size: int) -> tuple[int, int]:
    """(width, height) in pixels of the scene's picture."""
    s = scale(scene, size)
    return max(1, round(scene.width * s)), max(1, round(scene.height * s))


def pixel_box(obj: Obj, s: float) -> tuple[int, int, int, int]:
    """Pixels [x1, x2) x [y1, y2) that the object may cover: its box less the detector's
    noise, rounded inwards (a pixel [x, x + 1) lies inside the box, in box units)."""
    x1, y1, x2, y2 = obj.box
    dx, dy = BOX_JITTER * (x2 - x1), BOX_JITTER * (y2 - y1)
    eps = 1e-3  # the TSV stores float32 boxes: stay clear of their rounding
    return (math.ceil((x1 + dx) * s + eps), math.ceil((y1 + dy) * s + eps),
            math.floor((x2 - dx) * s - eps), math.floor((y2 - dy) * s - eps))


def _shaded(rgb: tuple[int, int, int], shade: float) -> tuple[int, int, int]:
    return tuple(min(255, round(c * shade)) for c in rgb)  # type: ignore[return-value]


def _mix(rgb: tuple[int, int, int], other: tuple[int, int, int], t: float
         ) -> tuple[int, int, int]:
    return tuple(round(a + (b - a) * t)  # type: ignore[return-value]
                 for a, b in zip(rgb, other, strict=True))


def _draw_parts(parts: list[Part], w: int, h: int, fill: Callable[[float], tuple[int, int, int]]
                ) -> tuple[Image.Image, Image.Image]:
    """The shape's colours (RGB) and coverage (L) on a ``w`` x ``h`` canvas."""
    rgb, mask = Image.new("RGB", (w, h)), Image.new("L", (w, h), 0)
    paint, cover = ImageDraw.Draw(rgb), ImageDraw.Draw(mask)
    for kind, unit, shade in parts:
        pts = [(x * (w - 1), y * (h - 1)) for x, y in unit]
        if kind == "ellipse":
            pts = [min(pts[0][0], pts[1][0]), min(pts[0][1], pts[1][1]),
                   max(pts[0][0], pts[1][0]), max(pts[0][1], pts[1][1])]
        draw_rgb = paint.ellipse if kind == "ellipse" else paint.polygon
        draw_mask = cover.ellipse if kind == "ellipse" else cover.polygon
        if shade == 0:  # a hole
            draw_mask(pts, fill=0)
        else:
            draw_rgb(pts, fill=fill(shade))
            draw_mask(pts, fill=255)
    return rgb, mask


def draw_object(obj: Obj, w: int, h: int) -> Image.Image:
    """The object as an RGBA sprite of ``w`` x ``h`` pixels (transparent around the shape)."""
    ss_w, ss_h = w * SUPERSAMPLE, h * SUPERSAMPLE
    base = COLOR_RGB[obj.color]
    contrast = 1.5 if obj.material == "metal" else 0.6 if obj.material == "rubber" else 1.0
    rgb, mask = _draw_parts(SHAPES[obj.category], ss_w, ss_h,
                            lambda shade: _shaded(base, 1 + (shade - 1) * contrast))
    # the rim: covered pixels within about one output pixel of the shape's edge
    inner = mask.filter(ImageFilter.MinFilter(2 * (SUPERSAMPLE // 2) + 1))
    rim = Image.composite(mask, Image.new("L", mask.size, 0), _inverted(inner))
    if obj.material == "metal":
        rgb = _with_highlight(rgb, ss_w, ss_h)
        rim_rgb, fill_alpha = _shaded(base, 0.35), 255
    elif obj.material == "glass":
        rim_rgb, fill_alpha = _mix(base, (255, 255, 255), 0.6), 110
    else:  # rubber: matte, a soft dark rim
        rim_rgb, fill_alpha = _shaded(base, 0.55), 255
    rgb = Image.composite(Image.new("RGB", rgb.size, rim_rgb), rgb, rim)
    alpha = Image.composite(mask, mask.point(lambda v: v * fill_alpha // 255), rim)
    sprite = Image.merge("RGBA", (*rgb.split(), alpha))
    return sprite.resize((w, h), Image.Resampling.BOX)


def _inverted(mask: Image.Image) -> Image.Image:
    return mask.point(lambda v: 255 - v)


def _with_highlight(rgb: Image.Image, w: int, h: int) -> Image.Image:
    """Metal's specular spot: white blended in near the upper left."""
    spot = Image.new("L", (w, h), 0)
    ImageDraw.Draw(spot).ellipse([0.18 * w, 0.12 * h, 0.42 * w, 0.34 * h], fill=200)
    return Image.composite(Image.new("RGB", (w, h), (255, 255, 255)), rgb, spot)


def draw_scene(scene: Scene, size: int) -> Image.Image:
    """The scene's picture (RGB), its longer side ``size`` pixels."""
    s = scale(scene, size)
    image = Image.new("RGBA", image_shape(scene, size), (*FLOOR, 255))
    # nearer objects (lower on the floor) are drawn over farther ones
    for obj in sorted(scene.objects, key=lambda o: (o.box[3], o.oid)):
        x1, y1, x2, y2 = pixel_box(obj, s)
        if x2 - x1 < 1 or y2 - y1 < 1:
            continue  # smaller than a pixel at this size
        image.alpha_composite(draw_object(obj, x2 - x1, y2 - y1), dest=(x1, y1))
    return image.convert("RGB")
