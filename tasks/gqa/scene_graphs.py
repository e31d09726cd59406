"""GQA scene graphs (``{split}_sceneGraphs.json``) as annotated objects, for probes.

A scene graph lists, per image, its objects with a name, attributes and a pixel box. Probes
(``vlbench probe``) decode region states against these true properties: the category and
the first colour, material and size attribute of each object.
"""

from __future__ import annotations

from collections.abc import Container
from pathlib import Path
from typing import Any

import numpy as np

from vlbench.data.jsonio import read_json
from vlbench.data.synth.vocab import ATTRIBUTE_VALUES

#: where the scene graphs lie under a data directory, read in this order (val first: it is
#: small, and often enough)
SCENE_GRAPHS = ("gqa/val_sceneGraphs.json", "gqa/train_sceneGraphs.json")


def object_properties(obj: dict[str, Any]) -> dict[str, str]:
    """Category and the first color, material and size attribute of a scene-graph object."""
    out = {"category": str(obj.get("name", ""))}
    attributes = [str(a) for a in obj.get("attributes", [])]
    for kind, values in ATTRIBUTE_VALUES.items():
        out[kind] = next((a for a in attributes if a in values), "")
    return out


def boxes_and_properties(graph: dict[str, Any]) -> tuple[np.ndarray, list[dict[str, str]]]:
    """An image's object boxes (divided by its width/height) and their properties."""
    objects = list(graph.get("objects", {}).values())
    w, h = float(graph.get("width") or 1), float(graph.get("height") or 1)
    boxes = np.array([[o["x"] / w, o["y"] / h, (o["x"] + o["w"]) / w, (o["y"] + o["h"]) / h]
                      for o in objects], dtype=np.float32).reshape(len(objects), 4)
    return boxes, [object_properties(o) for o in objects]


def scene_objects(root: Path, img_ids: Container[str], limit: int
                  ) -> dict[str, tuple[np.ndarray, list[dict[str, str]]]]:
    """Annotated objects of up to ``limit`` images among ``img_ids`` (val first, then train)."""
    out: dict[str, tuple[np.ndarray, list[dict[str, str]]]] = {}
    for name in SCENE_GRAPHS:
        if len(out) >= limit or not (root / name).is_file():
            continue
        for img_id, graph in read_json(root / name).items():
            if img_id in img_ids and img_id not in out:
                out[img_id] = boxes_and_properties(graph)
                if len(out) >= limit:
                    break
    return out
