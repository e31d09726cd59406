"""VQA v2 scoring: golden cases for each quirk of the official vqaEval.py, equivalence with a
plain port of it (benchmarks/vqa_scoring.py), properties, files and the CLI."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from vlbench.cli.score import score
from vlbench.errors import DataError
from vlbench.tasks.vqa.normalize import (
    CONTRACTIONS,
    PUNCT,
    normalize_answer,
    preprocess_answer,
    process_digit_article,
    process_punctuation,
)
from vlbench.tasks.vqa.scoring import (
    score_vqa,
    score_vqa_files,
    vqa_question_accuracy,
    vqa_soft_targets,
)

_BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "vqa_scoring.py"


def _load_reference():
    spec = importlib.util.spec_from_file_location("vqa_scoring_benchmark", _BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REFERENCE = _load_reference()


def ann(qid, answers, qtype="what is the", atype="other", ids=True):
    """One official annotation; ``ids=False`` leaves out answer_id (dicts may then be equal)."""
    dicts = []
    for j, a in enumerate(answers):
        d = {"answer": a, "answer_confidence": "yes"}
        if ids:
            d["answer_id"] = j + 1
        dicts.append(d)
    return {"question_id": qid, "image_id": 7, "question_type": qtype, "answer_type": atype,
            "answers": dicts}


def one(answers, prediction, **kw):
    """Per-question official score (percent, rounded) of a single prediction."""
    out = score_vqa({"annotations": [ann(1, answers, **kw)]}, None,
                    [{"question_id": 1, "answer": prediction}])
    return out["per_question"][1]


# --- normalisation -------------------------------------------------------------------------

def test_punct_list_is_the_official_21_characters():
    assert len(PUNCT) == 21 and len(set(PUNCT)) == 21
    assert "'" not in PUNCT and ":" not in PUNCT and "." not in PUNCT


@pytest.mark.parametrize("text, expected", [
    ("t-shirt", "t shirt"),      # no space next to "-" and no digit-comma: mark -> " "
    ("a - b", "a  b"),           # "- " present: mark deleted (the spaces stay)
    ("1,000", "1000"),           # digit-comma-digit: every mark deleted
    ("(1,2)", "12"),             # ... including the brackets
    ("red,blue", "red blue"),
    ("yes!", "yes "),
    ("2.5", "2.5"),              # "." followed by a digit is kept
    ("2.", "2"),
    (".5", ".5"),
    ("a.b", "ab"),
    ("it's", "it's"),            # apostrophe is not in the list
    ("10:30", "10:30"),          # nor is the colon
])
def test_process_punctuation(text, expected):
    assert process_punctuation(text) == expected


def test_period_strip_count_quirk_removes_at_most_32_periods():
    # vqaEval passes re.UNICODE (32) as Pattern.sub's count argument.
    assert process_punctuation("x" + "." * 40) == "x" + "." * 8


@pytest.mark.parametrize("text, expected", [
    ("Two Dogs", "2 dogs"), ("none", "0"), ("ten", "10"), ("eleven", "eleven"),
    ("the dog", "dog"), ("A man", "man"), ("an apple", "apple"),
    ("dont", "don't"), ("Whats   up", "what's up"), ("Im", "im"),  # capital keys never match
    ("somebody'd", "somebodyd"),
])
def test_process_digit_article(text, expected):
    assert process_digit_article(text) == expected


def test_contractions_table_is_the_official_data():
    assert len(CONTRACTIONS) == 120
    assert CONTRACTIONS["dont"] == "don't" and CONTRACTIONS["yall'd've"] == "y'all'd've"
    assert CONTRACTIONS["'ows'at"] == "'ow's'at" and CONTRACTIONS["twas"] == "'twas"


def test_normalize_answer_examples():
    assert normalize_answer("Black.") == "black"
    assert normalize_answer("a, b") == "b"  # comma deleted, then the article "a" dropped
    assert preprocess_answer("red,blue") == "red blue"


# --- golden per-question scores -------------------------------------------------------------

def test_unanimous_answers_are_not_normalised():
    assert one(["black"] * 10, "Black.") == 0.0
    assert one(["yes"] * 10, "Yes") == 0.0
    assert one(["yes"] * 10, "yes") == 100.0
    assert one(["t-shirt"] * 10, "t shirt") == 0.0


def test_split_answers_are_normalised_with_the_prediction():
    assert one(["black"] * 9 + ["white"], "Black.") == 100.0
    assert one(["t shirt"] * 3 + ["shirt"] * 7, "T-Shirt") == 90.0
    assert one(["1000"] * 5 + ["many"] * 5, "1,000") == 100.0
    assert one(["2"] * 3 + ["3"] * 7, "two") == 90.0
    assert one(["dog"] * 4 + ["cat"] * 6, "the dog") == 100.0
    assert one(["dont"] * 2 + ["no"] * 8, "don't") == 60.0


def test_period_rule_on_decimals():
    answers = ["2.5"] * 4 + ["2"] * 6
    assert one(answers, "2.5") == 100.0
    assert one(answers, "25") == 0.0
    assert one(answers, "2.") == 100.0  # "2." -> "2", which 6 annotators gave


def test_whitespace_is_always_cleaned():
    assert one(["yes"] * 10, " yes\n") == 100.0
    assert one(["yes\t"] * 10, "yes") == 100.0


@pytest.mark.parametrize("matches, expected", [(0, 0.0), (1, 30.0), (2, 60.0), (3, 90.0),
                                               (4, 100.0), (10, 100.0)])
def test_leave_one_out_arithmetic(matches, expected):
    answers = ["x"] * matches + ["y"] * (10 - matches)
    assert one(answers, "x") == expected


def test_two_matches_is_the_official_float():
    # 8 subsets see 2 matches, 2 see 1: (8 * 2/3 + 2 * 1/3) / 10, summed in answer order.
    answers = ["x", "y", "y", "y", "x", "y", "y", "y", "y", "y"]
    expected = float(sum([min(1, (1 if a == "x" else 2) / 3) for a in answers])) / 10
    assert vqa_question_accuracy(answers, "x") == expected == pytest.approx(0.6)


def test_equal_answer_dicts_leave_together():
    # Without answer_id two {"answer": "x"} dicts are equal, so "item != gtAnsDatum" drops both.
    answers = ["x", "x"] + ["y"] * 8
    assert one(answers, "x", ids=False) == round(100 * (8 * (2 / 3)) / 10, 2) == 53.33
    assert one(answers, "x") == 60.0


def test_overall_and_per_type_rounding():
    anns = [ann(1, ["a"] * 10, "is the", "yes/no"), ann(2, ["b"] + ["c"] * 9, "what", "other"),
            ann(3, ["d"] * 2 + ["e"] * 8, "what", "other")]
    res = [{"question_id": 1, "answer": "a"}, {"question_id": 2, "answer": "b"},
           {"question_id": 3, "answer": "d"}]
    out = score_vqa({"annotations": anns}, None, res)
    accs = [1.0, vqa_question_accuracy(["b"] + ["c"] * 9, "b"),
            vqa_question_accuracy(["d"] * 2 + ["e"] * 8, "d")]
    assert out["accuracy"] == round(100 * float(sum(accs)) / 3, 2) == 63.33
    assert out["per_answer_type"] == {"yes/no": 100.0, "other": 45.0}
    assert out["per_question_type"] == {"is the": 100.0, "what": 45.0}
    assert out["per_question"] == {1: 100.0, 2: 30.0, 3: 60.0}


# --- errors ---------------------------------------------------------------------------------

def test_missing_and_extra_results_are_errors():
    anns = {"annotations": [ann(1, ["a"] * 10), ann(2, ["b"] * 10)]}
    with pytest.raises(DataError, match="1 annotated question"):
        score_vqa(anns, None, [{"question_id": 1, "answer": "a"}])
    with pytest.raises(DataError, match="not in the annotations"):
        score_vqa(anns, None, [{"question_id": q, "answer": "a"} for q in (1, 2, 3)])
    with pytest.raises(DataError, match="'answer' must be a string"):
        score_vqa(anns, None, [{"question_id": 1, "answer": 3}, {"question_id": 2, "answer": "b"}])


@pytest.mark.parametrize("bad, message", [
    ({"question_id": 1, "answers": [{"answer": "a"}], "answer_type": "other"},
     "missing key 'question_type'"),
    ({**ann(1, ["a"]), "answers": []}, "non-empty list"),
    ({**ann(1, ["a"]), "answers": [{"answer": 3}]}, "string 'answer'"),
    ({**ann(1, ["a"]), "answers": "a"}, "non-empty list"),
])
def test_malformed_annotations_are_named(bad, message):
    with pytest.raises(DataError, match=message):
        score_vqa({"annotations": [bad]}, None, [{"question_id": 1, "answer": "a"}])


def test_duplicate_annotation_ids_are_an_error():
    with pytest.raises(DataError, match="appears twice"):
        score_vqa({"annotations": [ann(1, ["a"]), ann(1, ["b"])]}, None,
                  [{"question_id": 1, "answer": "a"}])


def test_duplicate_results_last_one_counts():
    anns = {"annotations": [ann(1, ["a"] * 10)]}
    res = [{"question_id": 1, "answer": "b"}, {"question_id": 1, "answer": "a"}]
    assert score_vqa(anns, None, res)["accuracy"] == 100.0


def test_multiple_choice_prediction_must_be_a_choice():
    anns = {"annotations": [ann(1, ["a"] * 10)]}
    qs = {"task_type": "Multiple Choice",
          "questions": [{"question_id": 1, "multiple_choices": ["a", "b"]}]}
    assert score_vqa(anns, qs, [{"question_id": 1, "answer": "a"}])["accuracy"] == 100.0
    with pytest.raises(DataError, match="multiple choices"):
        score_vqa(anns, qs, [{"question_id": 1, "answer": "c"}])


def test_files_round_trip_and_malformed_json(tmp_path):
    anns = {"annotations": [ann(1, ["two"] * 5 + ["2"] * 5), ann(2, ["no"] * 10)]}
    a, q, r = tmp_path / "ann.json", tmp_path / "q.json", tmp_path / "res.json"
    a.write_text(json.dumps(anns))
    q.write_text(json.dumps({"task_type": "Open-Ended", "questions": []}))
    r.write_text(json.dumps([{"question_id": 1, "answer": "2"}, {"question_id": 2, "answer": "no"}]))
    assert score_vqa_files(a, q, r)["accuracy"] == 100.0
    r.write_text('[{"question_id": 1,\n "answer": }]')
    with pytest.raises(DataError, match=r"res\.json: invalid JSON at line 2"):
        score_vqa_files(a, q, r)
    with pytest.raises(DataError, match="not found"):
        score_vqa_files(tmp_path / "nope.json", q, r)


# --- equivalence with the plain official port ----------------------------------------------

_ANSWER_FORMS = ["yes", "Yes", "yes.", "no", "2", "two", "2.", "1,000", "1000", "2.5",
                 "t-shirt", "t shirt", "the dog", "dog", "dont", "don't", " red", "red\n",
                 "a, b", "b", "(1,2)", "12", "x" + "." * 35]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.lists(st.sampled_from(_ANSWER_FORMS), min_size=1, max_size=10),
                          st.sampled_from(_ANSWER_FORMS), st.booleans(),
                          st.sampled_from(["yes/no", "number", "other"])),
                min_size=1, max_size=12))
def test_matches_the_official_port(rows):
    anns, res = [], []
    for qid, (answers, prediction, ids, atype) in enumerate(rows):
        anns.append(ann(qid, answers, qtype=f"t{len(answers) % 3}", atype=atype, ids=ids))
        res.append({"question_id": qid, "answer": prediction})
    annotations = {"annotations": anns}
    assert score_vqa(annotations, None, res) == REFERENCE.official_score(annotations, None, res)


def test_matches_the_official_port_on_synthetic_benchmark_data():
    annotations, questions, results = REFERENCE.make_dataset(1500, seed=3)
    ours = score_vqa(annotations, questions, results)
    assert ours == REFERENCE.official_score(annotations, questions, results)
    assert 0 < ours["accuracy"] < 100


def test_inputs_are_not_mutated():
    annotations, questions, results = REFERENCE.make_dataset(50, seed=1)
    before = json.dumps([annotations, questions, results])
    score_vqa(annotations, questions, results)
    assert json.dumps([annotations, questions, results]) == before


# --- properties -----------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.lists(st.sampled_from(_ANSWER_FORMS), min_size=10, max_size=10),
                          st.sampled_from(_ANSWER_FORMS)), min_size=1, max_size=15),
       st.randoms(use_true_random=False))
def test_accuracy_range_and_result_order_invariance(rows, rnd):
    anns = [ann(i, a) for i, (a, _) in enumerate(rows)]
    res = [{"question_id": i, "answer": p} for i, (_, p) in enumerate(rows)]
    out = score_vqa({"annotations": anns}, None, res)
    assert 0.0 <= out["accuracy"] <= 100.0
    assert all(0.0 <= v <= 100.0 for v in out["per_question"].values())
    shuffled = list(res)
    rnd.shuffle(shuffled)
    assert score_vqa({"annotations": anns}, None, shuffled) == out


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(["red", "blue", "2", "dog", "yes", "no"]), min_size=10,
                max_size=10))
def test_majority_answer_scores_100_from_four_votes(answers):
    # Leave-one-out: with exactly 3 votes, 3 of the 10 subsets see only 2 -> 90, not 100.
    majority = max(set(answers), key=answers.count)
    votes = answers.count(majority)
    assert one(answers, majority) == (100.0 if votes >= 4 else 30.0 * votes)


# --- soft targets ---------------------------------------------------------------------------

def test_soft_targets_table():
    answers = ["e"] + ["b"] * 2 + ["c"] * 3 + ["d"] * 4
    assert vqa_soft_targets(answers) == {"e": 0.3, "b": 0.6, "c": 0.9, "d": 1.0}
    assert vqa_soft_targets(["a", "the"]) == {"": 0.6}  # articles normalise to nothing
    assert vqa_soft_targets(["Two", "2", "two."]) == {"2": 0.9}
    assert vqa_soft_targets(["Two", "2"], normalize=False) == {"Two": 0.3, "2": 0.3}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["red", "blue", "2", "dog", "t shirt", "yes"]), min_size=10,
                max_size=10), st.sampled_from(["red", "blue", "2", "dog", "t shirt", "cat"]))
def test_soft_score_agrees_with_official_on_normalised_answers(answers, prediction):
    # With 10 already-normalised answers, the leave-one-out mean equals the count table.
    soft = vqa_soft_targets(answers).get(prediction, 0.0)
    assert vqa_question_accuracy(answers, prediction) == pytest.approx(soft, abs=1e-12)


def test_soft_score_differs_where_documented():
    # Unanimous raw answers: official does not normalise the prediction; soft targets do.
    assert vqa_question_accuracy(["Black."] * 10, "black") == 0.0
    assert vqa_soft_targets(["Black."] * 10) == {"black": 1.0}
    # Not 10 answers: counts vs leave-one-out (1 of 3 matching -> 1/3 * 2/3 officially).
    assert vqa_question_accuracy(["x", "y", "z"], "x") == pytest.approx(2 / 9)
    assert vqa_soft_targets(["x", "y", "z"])["x"] == 0.3


def test_question_accuracy_random_agrees_with_score_vqa():
    rng = random.Random(0)
    for _ in range(200):
        answers = [rng.choice(_ANSWER_FORMS) for _ in range(10)]
        pred = rng.choice(_ANSWER_FORMS)
        assert one(answers, pred) == round(100 * vqa_question_accuracy(answers, pred), 2)


# --- CLI ------------------------------------------------------------------------------------

def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test application."""

    app.command("score")(score)
    return app


def test_cli_table_json_and_errors(tmp_path):
    a, r = tmp_path / "ann.json", tmp_path / "res.json"
    a.write_text(json.dumps({"annotations": [ann(1, ["yes"] * 10, "is the", "yes/no"),
                                             ann(2, ["2"] * 3 + ["3"] * 7, "how many", "number")]}))
    r.write_text(json.dumps([{"question_id": 1, "answer": "yes"},
                             {"question_id": 2, "answer": "two"}]))
    runner = CliRunner()
    result = runner.invoke(_app(), ["score", "--task", "vqa", "--predictions", str(r),
                                    "--annotations", str(a), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics == {"accuracy": 95.0, "per_answer_type": {"yes/no": 100.0, "number": 90.0},
                       "per_question_type": {"is the": 100.0, "how many": 90.0}}

    result = runner.invoke(_app(), ["score", "--task", "vqa", "--predictions", str(r),
                                    "--annotations", str(a)])
    assert result.exit_code == 0 and "95.00" in result.stdout and "number" in result.stdout

    result = runner.invoke(_app(), ["score", "--task", "vqa", "--predictions", str(r)])
    assert result.exit_code == 2
    assert "needs --annotations" in result.output and len(result.output.strip().splitlines()) == 1

    result = runner.invoke(_app(), ["score", "--task", "coco", "--predictions", str(r)])
    assert result.exit_code == 2 and "unknown --task" in result.output

    r.write_text(json.dumps([{"question_id": 1, "answer": "yes"}]))
    result = runner.invoke(_app(), ["score", "--task", "vqa", "--predictions", str(r),
                                    "--annotations", str(a)])
    assert result.exit_code == 1 and result.output.startswith("error: VQA results do not")


def test_files_need_the_ten_answers_of_vqa_v2(tmp_path):
    # score_vqa keeps the official formula for any count; a file is held to VQA v2's ten.
    a, r = tmp_path / "ann.json", tmp_path / "res.json"
    a.write_text(json.dumps({"annotations": [ann(1, ["a"] * 10), ann(2, ["b"] * 3)]}))
    r.write_text(json.dumps([{"question_id": 1, "answer": "a"}, {"question_id": 2, "answer": "b"}]))
    with pytest.raises(DataError, match=r"ann\.json: annotations\[1\] \(question_id 2\): "
                                        r"'answers' holds 3 answers"):
        score_vqa_files(a, None, r)


def test_files_that_are_not_utf8_name_line_and_column(tmp_path):
    a, r = tmp_path / "ann.json", tmp_path / "res.json"
    a.write_text(json.dumps({"annotations": [ann(1, ["a"] * 10)]}))
    r.write_bytes(b'[{"question_id": 1,\n "answer": "caf\xe9"}]')
    with pytest.raises(DataError, match=r"res\.json:2:\d+: not UTF-8 text"):
        score_vqa_files(a, None, r)
