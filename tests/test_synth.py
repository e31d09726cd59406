"""The synthetic world: determinism, official formats, balance, and readable features."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from vlbench.data.features import FeatureStore
from vlbench.data.lxmert_json import read_lxmert_gqa
from vlbench.data.synth.config import WorldConfig
from vlbench.data.synth.scene import Obj, Scene
from vlbench.data.synth.world import (
    generate,
    is_synthetic,
    load_or_generate,
    read_manifest,
    world_parts,
)
from vlbench.data.tsv import iter_tsv
from vlbench.errors import ConfigError, DataError
from vlbench.tasks.gqa.synth_oracle import execute
from vlbench.tasks.vqa.synth_writer import normalise_answer

SMALL = dict(n_images=240, feat_dim=48, vqa_train_images=60, vqa_val_images=30,
             vqa_minival_images=15, nlvr2_train_sets=20, nlvr2_dev_sets=6,
             nlvr2_test1_sets=6)
#: fingerprint of ``generate(DIR, seed=7, **SMALL)``; a change means the world's bytes changed
SMALL_FINGERPRINT = "sha256:ac99a15bc55273da1ecb94bba44b97f396a05cb3d40c315550973d1951b6be78"
STRUCTURAL = {"verify", "query", "choose", "logical", "compare"}
SEMANTIC = {"obj", "attr", "cat", "rel", "global"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    manifest = generate(out, seed=7, **SMALL)
    return out, manifest


def _load(path: Path):
    with open(path) as f:
        return json.load(f)


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes(world, tmp_path):
    root, _ = world
    again = tmp_path / "again"
    generate(again, seed=7, **SMALL)
    first, second = _all_files(root), _all_files(again)
    assert sorted(first) == sorted(second)
    differing = [name for name in first if first[name] != second[name]]
    assert differing == []
    other = tmp_path / "other"
    generate(other, seed=8, **SMALL)
    assert (other / "features/synthetic_obj36.tsv").read_bytes() != first[
        "features/synthetic_obj36.tsv"]


def test_same_bytes_whatever_the_thread_count(tmp_path):
    """The fingerprint names the world on every machine: no thread-dependent float sums."""
    script = ("import sys; from vlbench.data.synth.world import generate; "
              "print(generate(sys.argv[1], seed=3, n_images=48, vqa_train_images=12, vqa_val_images=6, "
              "vqa_minival_images=3, nlvr2_train_sets=4, nlvr2_dev_sets=2, nlvr2_test1_sets=2).fingerprint)")
    prints = []
    for threads in ("1", "2"):
        env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        out = subprocess.run([sys.executable, "-c", script, str(tmp_path / threads)], env=env, check=True,
                             capture_output=True, text=True).stdout.split()
        prints.append(out[-1])
    assert prints[0] == prints[1] and prints[0].startswith("sha256:")


def test_region_features_sum_the_projections_of_the_object_concepts():
    from vlbench.data.synth.scene import CONCEPT_DIM, Detector

    det = Detector(np.random.default_rng(0), 16, noise_std=0.0, label_noise=0.0)
    concepts = np.array([[0, 5, 9, 14, CONCEPT_DIM - 1], [1, 6, 10, 15, 30]])
    multi_hot = np.zeros((2, CONCEPT_DIM), dtype=np.float32)
    np.put_along_axis(multi_hot, concepts, 1.0, axis=1)
    np.testing.assert_allclose(det.project(concepts), multi_hot @ det.projection, rtol=1e-6, atol=1e-6)


def test_manifest_lists_existing_files_and_parameters(world, tmp_path):
    root, manifest = world
    raw = _load(root / "manifest.json")
    assert raw["format"] == "vlbench-synthetic" and raw["version"] == 2
    assert raw["seed"] == 7 and raw["feat_dim"] == 48 and raw["max_boxes"] == WorldConfig().max_boxes
    assert raw["generator"]["n_images"] == 240 and "noise_std" in raw["generator"]
    assert raw["fingerprint"].startswith("sha256:")
    assert manifest.generation_seconds is not None
    read = read_manifest(root)
    assert read.to_json() == raw
    assert read.path("gqa", "testdev", "questions") == root / "gqa/testdev_balanced_questions.json"

    def walk(node):
        if isinstance(node, str):
            assert (root / node).is_file(), node
        else:
            for v in node.values():
                walk(v)

    walk(raw["files"])
    assert is_synthetic(root) and not is_synthetic(tmp_path)
    with pytest.raises(DataError, match="vlbench data synth"):
        read_manifest(tmp_path)


def test_load_or_generate_reuses_a_matching_world(world):
    root, _ = world
    tsv = root / "features/synthetic_obj36.tsv"
    before = tsv.stat().st_mtime_ns
    assert load_or_generate(root, seed=7, **SMALL).seed == 7
    assert tsv.stat().st_mtime_ns == before


def test_bad_parameters_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'n_images'"):
        generate(tmp_path, n_image=10)
    with pytest.raises(ConfigError, match="36"):
        generate(tmp_path, max_boxes=40)
    with pytest.raises(ConfigError, match="nlvr2_min_boxes"):
        generate(tmp_path, nlvr2_min_boxes=5, nlvr2_max_boxes=4)


def test_gqa_questions_have_the_official_fields(world):
    root, _ = world
    for split in ("train", "val", "testdev"):
        questions = _load(root / f"gqa/{split}_balanced_questions.json")
        assert isinstance(questions, dict) and len(questions) > 100
        for qid, q in questions.items():
            assert isinstance(qid, str) and re.fullmatch(r"\d{8}", qid)
            assert isinstance(q["imageId"], str) and isinstance(q["question"], str)
            assert q["question"].endswith("?") and isinstance(q["answer"], str)
            assert isinstance(q["fullAnswer"], str) and isinstance(q["isBalanced"], bool)
            assert q["types"]["structural"] in STRUCTURAL
            assert q["types"]["semantic"] in SEMANTIC
            assert isinstance(q["types"]["detailed"], str)
            assert set(q["groups"]) == {"global", "local"} and isinstance(q["groups"]["local"], str)
            assert q["groups"]["global"] is None or isinstance(q["groups"]["global"], str)
            assert q["equivalent"] == [qid]
            assert all(e in questions and e != qid for e in q["entailed"])
            assert q["semantic"] and isinstance(q["semanticStr"], str)
            for step in q["semantic"]:
                assert set(step) == {"operation", "dependencies", "argument"}
                assert all(isinstance(d, int) for d in step["dependencies"])
            assert set(q["annotations"]) == {"answer", "question", "fullAnswer"}
        assert any(not q["isBalanced"] for q in questions.values())
        assert sum(1 for q in questions.values() if q["entailed"]) > 10


def test_choices_cover_the_answer(world):
    root, _ = world
    for split in ("train", "val", "testdev"):
        questions = _load(root / f"gqa/{split}_balanced_questions.json")
        choices = _load(root / f"gqa/{split}_choices.json")
        assert set(choices) == set(questions)
        for qid, q in questions.items():
            assert q["answer"] in choices[qid]["valid"]
            assert q["answer"] in choices[qid]["plausible"]


def _prior(train: dict, test: dict, key) -> float:
    counts: dict[str, Counter] = defaultdict(Counter)
    for q in train.values():
        if q["isBalanced"]:
            counts[key(q)][q["answer"]] += 1
    best = {k: c.most_common(1)[0][0] for k, c in counts.items()}
    hits = [best.get(key(q)) == q["answer"] for q in test.values() if q["isBalanced"]]
    return 100.0 * sum(hits) / len(hits)


def test_question_only_prior_is_far_below_reading_the_scene(world):
    root, manifest = world
    train = _load(root / "gqa/train_balanced_questions.json")
    testdev = _load(root / "gqa/testdev_balanced_questions.json")
    by_type = _prior(train, testdev, lambda q: q["types"]["detailed"])
    by_words = _prior(train, testdev, lambda q: " ".join(q["question"].lower().split()[:2]))
    assert by_type < 40 and by_words < 40
    stats = manifest.stats["gqa"]
    assert stats["oracle"] == {"train": 100.0, "val": 100.0, "testdev": 100.0}
    assert stats["prior"]["testdev"] == pytest.approx(by_type, abs=2.0)
    assert manifest.stats["vqa"]["oracle"]["val2014"] == 100.0
    assert manifest.stats["nlvr2"]["oracle"]["dev"] == 100.0


def test_binary_types_are_balanced(world):
    root, _ = world
    train = _load(root / "gqa/train_balanced_questions.json")
    answers: dict[str, Counter] = defaultdict(Counter)
    for q in train.values():
        if q["isBalanced"]:
            answers[q["types"]["detailed"]][q["answer"]] += 1
    for detailed, counts in answers.items():
        total = sum(counts.values())
        if set(counts) <= {"yes", "no"} and total >= 50:
            assert 0.38 <= counts["yes"] / total <= 0.62, (detailed, counts)
        if total >= 50:  # no answer dominates any type
            assert counts.most_common(1)[0][1] / total <= 0.62, (detailed, counts)


def _scene(image_id: str, graph: dict) -> Scene:
    objs = []
    for oid, o in graph["objects"].items():
        size, color, material = o["attributes"]
        box = (o["x"], o["y"], o["x"] + o["w"], o["y"] + o["h"])
        objs.append(Obj(oid, o["name"], color, material, size, box))
    return Scene(image_id, graph["width"], graph["height"], objs)


def test_written_programs_answer_correctly_on_written_scene_graphs(world):
    root, _ = world
    graphs = _load(root / "gqa/val_sceneGraphs.json")
    scenes = {i: _scene(i, g) for i, g in graphs.items()}
    questions = _load(root / "gqa/val_balanced_questions.json")
    right = [execute(q["semantic"], scenes[q["imageId"]]) == q["answer"]
             for q in questions.values() if q["isBalanced"]]
    assert len(right) > 50 and all(right)


def test_lxmert_gqa_json_matches_the_questions(world):
    root, _ = world
    for split, name in (("train", "train"), ("val", "valid"), ("testdev", "testdev")):
        questions = _load(root / f"gqa/{split}_balanced_questions.json")
        data = read_lxmert_gqa(root / f"gqa/lxmert/{name}.json")
        assert len(data) == len(questions)
        for d in data:
            q = questions[d["question_id"]]
            assert d["sent"] == q["question"] and d["img_id"] == q["imageId"]
            assert d["label"] == {q["answer"]: 1.0}
    ans2label = _load(root / "gqa/lxmert/trainval_ans2label.json")
    label2ans = _load(root / "gqa/lxmert/trainval_label2ans.json")
    assert all(label2ans[i] == a for a, i in ans2label.items())


def test_feature_tsv_holds_every_referenced_image(world, tmp_path):
    root, _ = world
    records = {r.img_id: r for r in iter_tsv(root / "features/synthetic_obj36.tsv")}
    for r in records.values():
        assert 2 <= r.num_boxes <= 10 and r.feat_dim == 48  # NLVR2's images hold 2-4 objects
        assert (r.boxes[:, 2] <= r.img_w).all() and (r.boxes[:, 3] <= r.img_h).all()
        assert (r.boxes >= 0).all() and (r.objects_id < 1600).all() and (r.attrs_id < 400).all()
        assert (0 < r.objects_conf).all() and (r.objects_conf < 1).all()
        assert 320 <= r.img_w <= 640 and 320 <= r.img_h <= 640
    wanted = set()
    for split in ("train", "val", "testdev"):
        wanted |= {q["imageId"] for q in _load(root / f"gqa/{split}_balanced_questions.json").values()}
    for name in ("train", "nominival", "minival"):
        wanted |= {d["img_id"] for d in _load(root / f"vqa/lxmert/{name}.json")}
    for name in ("train", "valid", "test"):
        for d in _load(root / f"nlvr2/lxmert/{name}.json"):
            wanted |= {d["img0"], d["img1"]}
    for name in ("train", "val"):
        wanted |= {d["img_id"] for d in _load(root / f"pretrain/{name}.json")}
    assert wanted <= set(records)
    store = FeatureStore.open(root / "features/synthetic_obj36.tsv", tmp_path / "cache")
    assert store.feat_dim == 48 and len(store) == len(records)


def test_regions_carry_the_scene(world):
    """A linear probe on region features recovers the object category (the world is learnable)."""
    root, _ = world
    feats, labels = [], []
    for r in iter_tsv(root / "features/synthetic_obj36.tsv"):
        feats.append(r.features)
        labels.append(r.objects_id)
    x, y = np.concatenate(feats), np.concatenate(labels)
    classes, target = np.unique(y, return_inverse=True)
    x = np.hstack([x, np.ones((len(x), 1), np.float32)])
    half = len(x) // 2
    w = np.linalg.lstsq(x[:half], np.eye(len(classes))[target[:half]], rcond=None)[0]
    accuracy = ((x[half:] @ w).argmax(1) == target[half:]).mean()
    assert accuracy > 0.85  # the detector's labels themselves are wrong 5% of the time


def test_vqa_files_follow_the_official_layout(world):
    root, _ = world
    for subtype in ("train2014", "val2014", "minival"):
        qs = _load(root / f"vqa/v2_OpenEnded_mscoco_{subtype}_questions.json")
        anns = _load(root / f"vqa/v2_mscoco_{subtype}_annotations.json")
        assert qs["data_subtype"] == subtype and qs["task_type"] == "Open-Ended"
        by_id = {q["question_id"]: q for q in qs["questions"]}
        assert len(by_id) == len(qs["questions"]) == len(anns["annotations"]) > 0
        for a in anns["annotations"]:
            q = by_id[a["question_id"]]
            assert a["image_id"] == q["image_id"] and isinstance(a["image_id"], int)
            assert q["question"].lower().replace(" an ", " a ").startswith(a["question_type"])
            assert a["answer_type"] in {"yes/no", "number", "other"}
            assert len(a["answers"]) == 10
            assert [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
            assert {x["answer_confidence"] for x in a["answers"]} <= {"yes", "maybe", "no"}
            normalised = Counter(normalise_answer(x["answer"]) for x in a["answers"])
            assert normalised[a["multiple_choice_answer"]] >= 4
            if a["answer_type"] == "number":
                assert a["multiple_choice_answer"] in {"0", "1", "2", "3", "4"}
    val_ids = {q["question_id"] for q in
               _load(root / "vqa/v2_OpenEnded_mscoco_val2014_questions.json")["questions"]}
    mini_ids = {q["question_id"] for q in
                _load(root / "vqa/v2_OpenEnded_mscoco_minival_questions.json")["questions"]}
    assert mini_ids < val_ids
    disagreement = [len({x["answer"] for x in a["answers"]}) > 1 for a in
                    _load(root / "vqa/v2_mscoco_train2014_annotations.json")["annotations"]]
    assert 0.2 < np.mean(disagreement) < 0.95


def test_nlvr2_statements_pair_images_with_balanced_labels(world):
    root, _ = world
    for split in ("train", "dev", "test1"):
        lines = (root / f"nlvr2/{split}.json").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        assert rows and all(r["label"] in ("True", "False") for r in rows)
        assert 0.4 <= np.mean([r["label"] == "True" for r in rows]) <= 0.6
        pairs_per_sentence: dict[tuple, set] = defaultdict(set)
        for r in rows:
            s, set_id, pair, sent = r["identifier"].split("-")
            assert s == split and r["sentence"].endswith(".")
            assert r["left_url"].endswith(f"{split}-{set_id}-{pair}-img0.png")
            pairs_per_sentence[(set_id, sent)].add(pair)
        assert min(len(p) for p in pairs_per_sentence.values()) >= 2


def test_pretrain_corpus_is_lxmert_shaped_and_true(world):
    root, _ = world
    records = {r.img_id: r for r in iter_tsv(root / "features/synthetic_obj36.tsv")}
    for name in ("train", "val"):
        data = _load(root / f"pretrain/{name}.json")
        assert data
        for d in data:
            assert set(d) == {"img_id", "sentf", "labelf"}
            assert d["sentf"]["synth_captions"]
            for source, labels in d["labelf"].items():
                assert len(labels) == len(d["sentf"][source])
                assert all(isinstance(lab, dict) and lab for lab in labels)
            for cap in d["sentf"]["synth_captions"]:
                m = re.fullmatch(r"there are (\w+) objects", cap)
                if m:  # a count of all objects must match the number of regions
                    words = ["zero", "one", "two", "three", "four", "five"]
                    n = words.index(m.group(1)) if m.group(1) in words else int(m.group(1))
                    assert n == records[d["img_id"]].num_boxes


def test_crowded_high_dimensional_world(tmp_path):
    generate(tmp_path, seed=1, n_images=24, feat_dim=2048, min_boxes=30, max_boxes=36,
             vqa_train_images=2, vqa_val_images=2, vqa_minival_images=1,
             nlvr2_train_sets=1, nlvr2_dev_sets=1, nlvr2_test1_sets=1, nlvr2_pairs_per_set=2,
             nlvr2_min_boxes=30, nlvr2_max_boxes=36)
    rows = list(iter_tsv(tmp_path / "features/synthetic_obj36.tsv"))
    assert all(r.feat_dim == 2048 and 30 <= r.num_boxes <= 36 for r in rows)


def test_read_lxmert_gqa_rejects_malformed_items(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"img_id": "1", "question_id": "7", "sent": "Is it?"},
                                {"img_id": "1", "sent": "No id?"}]))
    with pytest.raises(DataError, match=r"bad.json: item 1 key 'question_id'"):
        read_lxmert_gqa(path)
    path.write_text("{not json")
    with pytest.raises(DataError, match=r"bad.json:1: invalid JSON"):
        read_lxmert_gqa(path)


def test_cli_prints_the_world_directory(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import vlbench.data.synth.world as world_module
    from vlbench.cli import app

    real = world_module.generate
    monkeypatch.setattr(world_module, "generate", lambda out, seed, **kw: real(out, seed, **SMALL))
    res = CliRunner().invoke(app, ["data", "synth", "--out", str(tmp_path / "w"), "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert str(tmp_path / "w") in res.output.splitlines()
    manifest = read_manifest(tmp_path / "w")
    assert manifest.seed == 3 and f"{manifest.n_images} images" in res.output
    before = (tmp_path / "w" / "manifest.json").read_bytes()
    res = CliRunner().invoke(app, ["data", "synth", "--out", str(tmp_path / "w"), "--seed", "4"])
    assert res.exit_code != 0 and "pass --force" in str(res.exception)
    assert (tmp_path / "w" / "manifest.json").read_bytes() == before  # nothing overwritten


# -- world parts: the engine builds the world from the registered tasks ------------------------


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside functions."""
    package = ".".join(path.relative_to(Path(__file__).parents[1]).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(x for x in (base, node.module or "") if x)
            names.update([module] + [f"{module}.{a.name}" for a in node.names])
    return names


def test_engine_synth_package_imports_no_plugin():
    engine = Path(__file__).parents[1] / "vlbench"
    files = sorted((engine / "data" / "synth").glob("*.py")) + [engine / "data" / "source.py"]
    for path in files:
        plugins = {m for m in _imported_modules(path)
                   if m.startswith(("vlbench.tasks", "vlbench.models"))}
        assert not plugins, f"{path.relative_to(engine.parent)} imports {sorted(plugins)}"


def test_world_built_from_the_registered_parts_keeps_its_bytes(world):
    _, manifest = world
    names = [p.name for p in world_parts()]
    assert names == ["gqa", "vqa", "nlvr2", "pretrain"]  # the detector's order, corpus last
    assert list(manifest.files) == ["features", *names]
    assert list(manifest.splits) == names and list(manifest.stats) == names[:-1]
    assert manifest.fingerprint == SMALL_FINGERPRINT


def test_a_part_alone_writes_the_same_files(world, tmp_path, monkeypatch):
    """Parts own their random streams: NLVR2's files do not depend on the other parts."""
    import vlbench.data.synth.world as world_module
    from vlbench.tasks.nlvr2.synth import NLVR2_PART

    root, _ = world
    monkeypatch.setattr(world_module, "TASKS", [SimpleNamespace(obj=SimpleNamespace(
        synthetic_part=NLVR2_PART)), SimpleNamespace(obj=object())])
    alone = generate(tmp_path, seed=7, **SMALL)
    assert list(alone.files) == ["features", "nlvr2"] and list(alone.stats) == ["nlvr2"]
    for split in alone.files["nlvr2"].values():
        for rel in split.values():
            assert (tmp_path / rel).read_bytes() == (root / rel).read_bytes(), rel


def test_parts_with_clashing_streams_are_refused(monkeypatch):
    import vlbench.data.synth.world as world_module
    from vlbench.tasks.gqa.synth import GQAPart

    class Clash(GQAPart):
        name = "clash"
        streams = {"scenes": 3}  # the detector's

    monkeypatch.setattr(world_module, "TASKS", [
        SimpleNamespace(obj=SimpleNamespace(synthetic_part=GQAPart())),
        SimpleNamespace(obj=SimpleNamespace(synthetic_part=Clash()))])
    with pytest.raises(DataError, match="'clash' stream 'scenes' takes random stream 3"):
        world_parts()
