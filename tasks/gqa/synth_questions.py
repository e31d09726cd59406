"""GQA-style question families over synthetic scenes, each with its functional program.

Every family follows GQA's vocabulary: a structural type (verify, query, choose, logical,
compare), a semantic type (obj, attr, cat, rel) and a detailed type named as in GQA
(``existAttr``, ``directOf``, ``relS`` ...). Binary families draw the answer first
(yes/no, left/right) and then look for objects that make it true, so each detailed type
has a near-uniform answer distribution; open families take their answer from scene
properties that are themselves uniform. GQA's "C" variants (whose detailed type gives the
answer away) are not used, so the per-type answer prior stays uninformative.

Objects are referred to by category when it is unique in the image, else by one
attribute plus category ("the red cube"), never by the attribute being asked about.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vlbench.data.synth.scene import Obj, Scene, hposition, relation
from vlbench.data.synth.vocab import (
    ATTRIBUTE_VALUES,
    CATEGORIES,
    PLURALS,
    RELATIONS,
    article,
)

_OPPOSITE = {"to the left of": "to the right of", "to the right of": "to the left of",
             "above": "below", "below": "above"}


@dataclass
class Ref:
    """How a question names one object: phrase ('red cube') and the filters it implies."""

    obj: Obj
    phrase: str
    filters: list[tuple[str, str]]


@dataclass
class GQAQuestion:
    """One generated question before it gets its id (fields map onto GQA's JSON)."""

    image_id: str
    question: str
    answer: str
    full_answer: str
    detailed: str
    structural: str
    semantic: str
    program: list[dict]
    global_group: str | None
    local_group: str
    mentions: list[tuple[str, str]]  # (word in the question, object id) for annotations
    valid: list[str]
    plausible: list[str]
    balanced: bool = True
    answer_oid: str | None = None  # the object the answer names (relS, categoryAttr ...)
    entail_key: tuple | None = None  # questions sharing a key can entail one another
    entail_role: str | None = None  # "query", "choose", "verify_yes", "verify_no"
    qid: str = ""
    entailed: list[str] = field(default_factory=list)


class Program:
    """A GQA semantic program under construction (list of operation steps)."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def add(self, operation: str, argument: str, deps: tuple[int, ...] | list[int] = ()) -> int:
        self.steps.append({"operation": operation, "dependencies": list(deps),
                           "argument": argument})
        return len(self.steps) - 1

    def select_ref(self, ref: Ref) -> int:
        i = self.add("select", f"{ref.obj.category} ({ref.obj.oid})")
        for kind, value in ref.filters:
            i = self.add(f"filter {kind}", value, [i])
        return i

    def select_category(self, scene: Scene, category: str) -> int:
        ids = ",".join(o.oid for o in scene.with_category(category)) or "-"
        return self.add("select", f"{category} ({ids})")


def semantic_str(steps: list[dict]) -> str:
    """GQA's one-line rendering of a program: ``select: cube (12)->query: color [0]``."""
    parts = []
    for s in steps:
        deps = f" [{', '.join(str(d) for d in s['dependencies'])}]" if s["dependencies"] else ""
        parts.append(f"{s['operation']}: {s['argument']}{deps}")
    return "->".join(parts)


def reference(scene: Scene, o: Obj, avoid: tuple[str, ...] = ()) -> Ref | None:
    """The shortest unambiguous name for ``o`` that does not use the ``avoid`` kinds."""
    same = scene.with_category(o.category)
    if len(same) == 1:
        return Ref(o, o.category, [])
    for kind in ("color", "material", "size"):
        if kind in avoid:
            continue
        value = o.attr(kind)
        if sum(1 for x in same if x.attr(kind) == value) == 1:
            return Ref(o, f"{value} {o.category}", [(kind, value)])
    return None


def _refs(scene: Scene, rng: np.random.Generator, avoid: tuple[str, ...] = ()) -> list[Ref]:
    """Every object that can be named without ``avoid`` kinds, in random order."""
    key = ("refs", avoid)
    refs = scene.memo.get(key)
    if refs is None:
        refs = [r for o in scene.objects if (r := reference(scene, o, avoid)) is not None]
        scene.memo[key] = refs
    return [refs[i] for i in rng.permutation(len(refs))]


def _pick(rng: np.random.Generator, items: list):
    return items[int(rng.integers(len(items)))] if items else None


def _kind(rng: np.random.Generator, p_color: float = 0.6, p_material: float = 0.25) -> str:
    u = rng.random()
    return "color" if u < p_color else "material" if u < p_color + p_material else "size"


def _be(kind: str, value: str) -> str:
    """'red' / 'made of glass' after 'is'."""
    return f"made of {value}" if kind == "material" else value


def _q(scene: Scene, text: str, answer: str, full: str, detailed: str, structural: str,
       semantic: str, prog: Program, global_group: str | None, local: str,
       mentions: list[tuple[str, str]], valid: list[str], plausible: list[str] | None = None,
       **extra) -> GQAQuestion:
    return GQAQuestion(
        image_id=scene.image_id, question=text, answer=answer, full_answer=full,
        detailed=detailed, structural=structural, semantic=semantic, program=prog.steps,
        global_group=global_group, local_group=local, mentions=mentions, valid=valid,
        plausible=plausible if plausible is not None else valid, **extra,
    )


YES_NO = ["yes", "no"]


def _yn(b: bool) -> str:
    return "yes" if b else "no"


# -- verify / logical over existence ------------------------------------------------------------


def exist_attr(scene: Scene, rng: np.random.Generator) -> GQAQuestion | None:
    """'Is there a red cube?' (existAttr, verify, obj)."""
    kind = "color" if rng.random() < 0.7 else "material"
    values = ATTRIBUTE_VALUES[kind]
    want = bool(rng.random() < 0.5)
    o = _pick(rng, scene.objects)
    if want:
        cat, value = o.category, o.attr(kind)
    elif rng.random() < 0.5:  # the category is there, but not with this value
        cat = o.category
        used = {x.attr(kind) for x in scene.with_category(cat)}
        value = _pick(rng, [v for v in values if v not in used])
    else:  # the value is there, but not on this category
        value = o.attr(kind)
        cat = _pick(rng, [c for c in CATEGORIES if not scene.matching(category=c, **{kind: value})])
    if value is None or cat is None:
        return None
    prog = Program()
    i = prog.select_category(scene, cat)
    i = prog.add(f"filter {kind}", value, [i])
    prog.add("exist", "?", [i])
    match = scene.matching(category=cat, **{kind: value})
    full = (f"Yes, there is {article(value)} {value} {cat}." if want
            else f"No, there is no {value} {cat}.")
    return _q(scene, f"Is there {article(value)} {value} {cat}?", _yn(want), full, "existAttr",
              "verify", "obj", prog, None, f"02-{cat}_{value}",
              [(cat, match[0].oid)] if match else [], YES_NO)


def exist_unbalanced(scene: Scene, rng: np.random.Generator) -> GQAQuestion | None:
    """'Is there a cube?' drawn with a skewed answer, marked isBalanced=false like GQA's rest."""
    present = sorted({o.category for o in scene.objects})
    absent = [c for c in CATEGORIES if c not in present]
    cat = _pick(rng, present) if rng.random() < 0.85 or not absent else _pick(rng, absent)
    prog = Program()
    prog.add("exist", "?", [prog.select_category(scene, cat)])
    yes = cat in present
    full = f"Yes, there is {article(cat)} {cat}." if yes else f"No, there are no {PLURALS[cat]}."
    objs = scene.with_category(cat)
    return _q(scene, f"Is there {article(cat)} {cat}?", _yn(yes), full, "exist", "verify", "obj",
              prog, None, f"01-{cat}", [(cat, objs[0].oid)] if objs else [], YES_NO,
              balanced=False)


def _two_categories(scene: Scene, rng: np.random.Generator, n_present: int):
    present = sorted({o.category for o in scene.objects})
    absent = [c for c in CATEGORIES if c not in present]
    pool_p = [present[i] for i in rng.permutation(len(present))]
    pool_a = [absent[i] for i in rng.permutation(len(absent))]
    if len(pool_p) < n_present or len(pool_a) < 2 - n_present:
        return None
    cats = pool_p[:n_present] + pool_a[:2 - n_present]
    return [cats[i] for i in rng.permutation(2)]


def _logic(scene: Scene, rng: np.random.Generator, op: str) -> GQAQuestion | None:
    want = bool(rng.random() < 0.5)
    if op == "or":
        n_present = (1 if rng.random() < 0.67 else 2) if want else 0
    else:
        n_present = 2 if want else (1 if rng.random() < 0.8 else 0)
    cats = _two_categories(scene, rng, n_present)
    if cats is None:
        return None
    c1, c2 = cats
    prog = Program()
    e1 = prog.add("exist", "?", [prog.select_category(scene, c1)])
    e2 = prog.add("exist", "?", [prog.select_category(scene, c2)])
    prog.add(op, "", [e1, e2])
    has = {c: bool(scene.with_category(c)) for c in cats}
    a1, a2 = f"{article(c1)} {c1}", f"{article(c2)} {c2}"
    if op == "or":
        text = f"Is there {a1} or {a2}?"
        detailed, local = "existOr", f"03-{c1}_{c2}"
        if want:
            there = [f"{article(c)} {c}" for c in cats if has[c]]
            full = f"Yes, there is {' and '.join(there)}."
        else:
            full = f"No, there are no {PLURALS[c1]} or {PLURALS[c2]}."
    else:
        text = f"Are there both {a1} and {a2} in the image?"
        detailed, local = "existAnd", f"04-{c1}_{c2}"
        if want:
            full = f"Yes, there are both {a1} and {a2}."
        elif n_present == 1:
            yes_c, no_c = (c1, c2) if has[c1] else (c2, c1)
            full = f"No, there is {article(yes_c)} {yes_c} but no {no_c}."
        else:
            full = f"No, there are no {PLURALS[c1]} or {PLURALS[c2]}."
    mentions = [(c, scene.with_category(c)[0].oid) for c in cats if has[c]]
    return _q(scene, text, _yn(want), full, detailed, "logical", "obj", prog, None, local,
              mentions, YES_NO)


def exist_or(scene: Scene, rng: np.random.Generator) -> GQAQuestion | None:
    """'Is there a cube or a sphere?' (existOr, logical, obj)."""
    return _logic(scene, rng, "or")


def exist_and(scene: Scene, rng: np.random.Generator) -> GQAQuestion | None:
    """'Are there both a cube and a sphere in the image?' (existAnd, logical, obj)."""
    return _logic(scene, rng, "and")


# -- attributes -------------------------------------------------------------------------------


def query_attr(scene: Scene, rng: np.random.Generator, ref: Ref | None = None,
               kind: str | None = None) -> GQAQuestion | None:
    """'What color is the cube?' (directOf) or 'What is the cube made of?' (material)."""
    kind = kind or ("color" if rng.random() < 0.67 else "material")
    ref = ref or _pick(rng, _refs(scene, rng, (kind,)))
    if ref is None:
        return None
    value = ref.obj.attr(kind)
    prog = Program()
    prog.add("query", kind, [prog.select_ref(ref)])
    cat = ref.obj.category
    if kind == "color":
        text, full, detailed = f"What color is the {ref.phrase}?", f"The {ref.phrase} is {value}.", "directOf"
    else:
        text = f"What is the {ref.phrase} made of?"
        full, detailed = f"The {ref.phrase} is made of {value}.", "material"
    values = list(ATTRIBUTE_VALUES[kind])
    return _q(scene, text, value, full, detailed, "query", "attr", prog, kind,
              f"10q-{cat}_{kind}", [(cat, ref.obj.oid)], values,
              entail_key=(scene.image_id, ref.obj.oid, kind), entail_role="query")


def verify_attr(scene: Scene, rng: np.random.Generator, ref: Ref | None = None,
                kind: str | None = None) -> GQAQuestion | None:
    """'Is the cube red?' (verifyAttr, verify, attr)."""
    kind = kind or _kind(rng)
    ref = ref or _pick(rng, _refs(scene, rng, (kind,)))
    if ref is None:
        return None
    true = ref.obj.attr(kind)
    want = bool(rng.random() < 0.5)
    value = true if want else _pick(rng, [v for v in ATTRIBUTE_VALUES[kind] if v != true])
    prog = Program()
    prog.add(f"verify {kind}", value, [prog.select_ref(ref)])
    full = (f"Yes, the {ref.phrase} is {_be(kind, value)}." if want
            else f"No, the {ref.phrase} is {_be(kind, true)}.")
    cat = ref.obj.category
    return _q(scene, f"Is the {ref.phrase} {_be(kind, value)}?", _yn(want), full, "verifyAttr",
              "verify", "attr", prog, None, f"06-{cat}_{kind}", [(cat, ref.obj.oid)], YES_NO,
              entail_key=(scene.image_id, ref.obj.oid, kind),
              entail_role="verify_yes" if want else "verify_no")


def choose_attr(scene: Scene, rng: np.random.Generator, ref: Ref | None = None,
                kind: str | None = None) -> GQAQuestion | None:
    """'Is the cube red or blue?' (chooseAttr, choose, attr)."""
    kind = kind or _kind(rng)
    ref = ref or _pick(rng, _refs(scene, rng, (kind,)))
    if ref is None:
        return None
    true = ref.obj.attr(kind)
    other = _pick(rng, [v for v in ATTRIBUTE_VALUES[kind] if v != true])
    a, b = (true, other) if rng.random() < 0.5 else (other, true)
    prog = Program()
    prog.add(f"choose {kind}", f"{a}|{b}", [prog.select_ref(ref)])
    text = (f"Is the {ref.phrase} made of {a} or {b}?" if kind == "material"
            else f"Is the {ref.phrase} {a} or {b}?")
    cat = ref.obj.category
    return _q(scene, text, true, f"The {ref.phrase} is {_be(kind, true)}.", "chooseAttr",
              "choose", "attr", prog, kind, f"07c-{cat}_{kind}", [(cat, ref.obj.oid)], [a, b],
              entail_key=(scene.image_id, ref.obj.oid, kind), entail_role="choose")


def category_attr(scene: Scene, rng: np.random.Generator) -> GQAQuestion | None:
    """'Which kind of object is red?' (categoryAttr, query, cat)."""
    kind = "color" if rng.random() < 0.7 else "material"
    unique = [o for o in scene.objects if len(scene.matching(**{kind: o.attr(kind)})) == 1]
    o = _pick(rng, unique)
    if o is None:
        return None
    value = o.attr(kind)
    prog = Program()
    i = prog.add("select", f"object ({','.join(x.oid for x in scene.objects)})")
    i = prog.add(f"filter {kind}", value, [i])
    prog.add("query", "name", [i])
    text = f"Which kind of object is {_be(kind, value)}?"
    full = f"The {_be(kind, value)} object is {article(o.category)} {o.category}."
    return _q(scene, text, o.category, full, "categoryAttr", "query", "cat", prog, "thing",
              f"11q-{value}", [("object", o.oid)], list(CATEGORIES),
              answer_oid=o.oid)


def position_choose(scene: Scene, rng: np.random.Generator) -> GQAQuestion | None:
    """'Is the cube on the left or on the right of the image?' (positionChoose, choose, attr)."""
    side = "left" if rng.random() < 0.5 else "right"
    ref = _pick(rng, [r for r in _refs(scene, rng) if hposition(scene, r.obj) == side])
    if ref is None:
        return None
    a, b = ("left", "right") if rng.random() < 0.5 else ("right", "left")
    prog = Program()
    prog.add("choose hposition", f"{a}|{b}", [prog.select_ref(ref)])
    cat = ref.obj.category
    return _q(scene, f"Is the {ref.phrase} on the {a} or on the {b} of the image?", side,
              f"The {ref.phrase} is on the {side} of the image.", "positionChoose", "choose",
              "attr", prog, "hposition", f"05c-{cat}_hposition", [(cat, ref.obj.oid)],
              ["left", "right"])


# -- relations --------------------------------------------------------------------------------


def rel_s(scene: Scene, rng: np.random.Generator) -> GQAQuestion | None:
    """'What is to the left of the sphere?' with exactly one such object (relS, query, rel)."""
    rel = RELATIONS[int(rng.integers(len(RELATIONS)))]
    for ref in _refs(scene, rng):
        flags = [(x, relation(scene, x, ref.obj, rel)) for x in scene.objects if x is not ref.obj]
        if any(f is None for _, f in flags):
            continue  # some object is too close to call: the answer would be ambiguous
        hits = [x for x, f in flags if f]
        if len(hits) != 1:
            continue
        target = hits[0]
        prog = Program()
        i = prog.add("relate", f"_,{rel},s ({target.oid})", [prog.select_ref(ref)])
        prog.add("query", "name", [i])
        cat = ref.obj.category
        return _q(scene, f"What is {rel} the {ref.phrase}?", target.category,
                  f"The {target.category} is {rel} the {ref.phrase}.", "relS", "query", "rel",
                  prog, "thing", f"14q-{cat}_{rel}", [(cat, ref.obj.oid)], list(CATEGORIES),
                  answer_oid=target.oid)
    return None


def rel_verify(scene: Scene, rng: np.random.Generator) -> GQAQuestion | None:
    """'Is the cube to the left of the sphere?' (relVerify, verify, rel)."""
    want = bool(rng.random() < 0.5)
    subjects = [o for o in scene.objects if len(scene.with_category(o.category)) == 1]
    for s in [subjects[i] for i in rng.permutation(len(subjects))]:
        for ref in _refs(scene, rng):
            if ref.obj is s:
                continue
            rels = [r for r in RELATIONS if relation(scene, s, ref.obj, r) is want]
            if not rels:
                continue
            rel = rels[int(rng.integers(len(rels)))]
            prog = Program()
            prog.add("verify rel", f"{s.category},{rel},s ({s.oid})", [prog.select_ref(ref)])
            full = (f"Yes, the {s.category} is {rel} the {ref.phrase}." if want
                    else f"No, the {s.category} is {_OPPOSITE[rel]} the {ref.phrase}.")
            return _q(scene, f"Is the {s.category} {rel} the {ref.phrase}?", _yn(want), full,
                      "relVerify", "verify", "rel", prog, None,
                      f"13-{ref.obj.category}_{s.category}",
                      [(s.category, s.oid), (ref.obj.category, ref.obj.oid)], YES_NO)
    return None


# -- compare ----------------------------------------------------------------------------------


def two_same(scene: Scene, rng: np.random.Generator, kind: str = "color") -> GQAQuestion | None:
    """'Are the cube and the sphere the same color?' (twoSame / twoSameMaterial, compare)."""
    want = bool(rng.random() < 0.5)
    refs = _refs(scene, rng, (kind,))
    pairs = [(a, b) for i, a in enumerate(refs) for b in refs[i + 1:]
             if (a.obj.attr(kind) == b.obj.attr(kind)) is want]
    if not pairs:
        return None
    a, b = pairs[int(rng.integers(len(pairs)))]
    prog = Program()
    ia, ib = prog.select_ref(a), prog.select_ref(b)
    prog.add(f"same {kind}", "", [ia, ib])
    va, vb = a.obj.attr(kind), b.obj.attr(kind)
    if kind == "color":
        text = f"Are the {a.phrase} and the {b.phrase} the same color?"
        detailed = "twoSame"
    else:
        text = f"Are the {a.phrase} and the {b.phrase} made of the same material?"
        detailed = "twoSameMaterial"
    full = (f"Yes, both the {a.phrase} and the {b.phrase} are {_be(kind, va)}." if want
            else f"No, the {a.phrase} is {_be(kind, va)} and the {b.phrase} is {_be(kind, vb)}.")
    return _q(scene, text, _yn(want), full, detailed, "compare", "attr", prog, None,
              f"09-{a.obj.category}_{b.obj.category}_{kind}",
              [(a.obj.category, a.obj.oid), (b.obj.category, b.obj.oid)], YES_NO)


def two_same_material(scene: Scene, rng: np.random.Generator) -> GQAQuestion | None:
    """'Are the cube and the sphere made of the same material?' (twoSameMaterial)."""
    return two_same(scene, rng, "material")


def comparative_choose(scene: Scene, rng: np.random.Generator) -> GQAQuestion | None:
    """'Which is larger, the cube or the sphere?' (comparativeChoose, compare, attr)."""
    adj = "larger" if rng.random() < 0.5 else "smaller"
    refs = _refs(scene, rng, ("size",))
    pairs = [(a, b) for i, a in enumerate(refs) for b in refs[i + 1:]
             if a.obj.category != b.obj.category and a.obj.size != b.obj.size]
    if not pairs:
        return None
    a, b = pairs[int(rng.integers(len(pairs)))]
    big = a if a.obj.size == "large" else b
    win = big if adj == "larger" else (b if big is a else a)
    prog = Program()
    ia, ib = prog.select_ref(a), prog.select_ref(b)
    prog.add(f"choose {adj}", "", [ia, ib])
    options = [a.obj.category, b.obj.category]
    return _q(scene, f"Which is {adj}, the {a.phrase} or the {b.phrase}?", win.obj.category,
              f"The {win.phrase} is {adj}.", "comparativeChoose", "compare", "attr", prog,
              "thing", f"08c-{a.obj.category}_{b.obj.category}_size",
              [(a.obj.category, a.obj.oid), (b.obj.category, b.obj.oid)], options,
              answer_oid=win.obj.oid)


Family = Callable[[Scene, np.random.Generator], GQAQuestion | None]

# Balanced families and their share of the questions. Single-hop questions (exist, query, verify, choose) dominate, as
# in GQA, so a small model learns to bind words to regions within a few epochs; the
# multi-hop families (relations, comparisons) keep the harder end of the benchmark.
FAMILIES: dict[str, tuple[Family, float]] = {
    "existAttr": (exist_attr, 0.12),
    "existOr": (exist_or, 0.04),
    "existAnd": (exist_and, 0.04),
    "query": (query_attr, 0.26),
    "verifyAttr": (verify_attr, 0.12),
    "chooseAttr": (choose_attr, 0.12),
    "categoryAttr": (category_attr, 0.06),
    "positionChoose": (position_choose, 0.03),
    "relS": (rel_s, 0.05),
    "relVerify": (rel_verify, 0.06),
    "twoSame": (two_same, 0.04),
    "twoSameMaterial": (two_same_material, 0.03),
    "comparativeChoose": (comparative_choose, 0.03),
}


def entailment_cluster(scene: Scene, rng: np.random.Generator) -> list[GQAQuestion]:
    """A query, a choose and a verify question about one attribute of one object.

    The query's answer determines the other two, so they are listed in each other's
    ``entailed`` ids (GQA's consistency metric checks a model agrees with itself there).
    """
    kind = "color" if rng.random() < 0.75 else "material"
    ref = _pick(rng, _refs(scene, rng, (kind,)))
    if ref is None:
        return []
    out = [query_attr(scene, rng, ref, kind), choose_attr(scene, rng, ref, kind),
           verify_attr(scene, rng, ref, kind)]
    return [q for q in out if q is not None]
