"""Answer a GQA semantic program by executing it on the true scene.

This is the "oracle" of the synthetic benchmark: it reads only the program (names,
filters, relations; never the object ids GQA prints in arguments) and the scene, so a
question it cannot answer unambiguously shows a generator bug. A world whose oracle
scores 100% has questions that are answerable from the image alone.
"""

from __future__ import annotations

from vlbench.data.synth.scene import Obj, Scene, hposition, relation

Value = list[Obj] | bool | str | None


def execute(steps: list[dict], scene: Scene) -> str | None:
    """The program's answer on ``scene`` ('yes'/'no' for booleans); None when ill-posed."""
    results: list[Value] = []
    for step in steps:
        args = [results[d] for d in step["dependencies"]]
        results.append(_step(step["operation"], step["argument"], args, scene))
    out = results[-1] if results else None
    if isinstance(out, bool):
        return "yes" if out else "no"
    return out if isinstance(out, str) else None


def _single(value: Value) -> Obj | None:
    return value[0] if isinstance(value, list) and len(value) == 1 else None


def _name(argument: str) -> str:
    """'cube (12,15)' -> 'cube'."""
    return argument.split(" (")[0].strip()


def _step(op: str, arg: str, args: list[Value], scene: Scene) -> Value:
    head, _, kind = op.partition(" ")
    if head == "select":
        name = _name(arg)
        return list(scene.objects) if name == "object" else scene.with_category(name)
    if head == "filter":
        objs = args[0] if isinstance(args[0], list) else []
        return [o for o in objs if o.attr(kind) == arg]
    if head == "exist":
        return isinstance(args[0], list) and len(args[0]) > 0
    if head in ("and", "or"):
        if not all(isinstance(a, bool) for a in args):
            return None
        return all(args) if head == "and" else any(args)
    if head == "relate":
        anchor = _single(args[0])
        if anchor is None:
            return None
        name, rel, _role = (part.strip() for part in _name(arg).split(","))
        hits = [o for o in scene.objects
                if o is not anchor and relation(scene, o, anchor, rel) is True]
        return hits if name == "_" else [o for o in hits if o.category == name]
    if head == "query":
        o = _single(args[0])
        return None if o is None else o.attr(arg)
    if head == "verify":
        anchor = _single(args[0])
        if anchor is None:
            return None
        if kind == "rel":
            name, rel, _role = (part.strip() for part in _name(arg).split(","))
            subject = _single(scene.with_category(name))
            return None if subject is None else relation(scene, subject, anchor, rel)
        return anchor.attr(kind) == arg
    if head == "choose":
        if kind in ("larger", "smaller"):
            a, b = _single(args[0]), _single(args[1])
            if a is None or b is None or a.size == b.size:
                return None
            big, small = (a, b) if a.size == "large" else (b, a)
            return (big if kind == "larger" else small).category
        o = _single(args[0])
        if o is None:
            return None
        value = hposition(scene, o) if kind == "hposition" else o.attr(kind)
        return value if value in arg.split("|") else None
    if head == "same":
        a, b = _single(args[0]), _single(args[1])
        return None if a is None or b is None else a.attr(kind) == b.attr(kind)
    return None
