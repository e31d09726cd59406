"""GQA scoring: golden cases for the official eval.py rules, properties, files and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from vlbench.cli.score import score
from vlbench.data.source import DataSource
from vlbench.errors import DataError
from vlbench.results.questions import QuestionTable, parse_metric_units, unit_values
from vlbench.tasks.gqa.scoring import (
    belongs,
    chi_square,
    score_gqa,
    score_gqa_files,
    steps_num,
    words_num,
)
from vlbench.tasks.gqa.task import GQAConfig, GQATask


def q(answer, structural="query", semantic="attr", detailed="colorObject", balanced=True,
      entailed=(), group=None, text="What color is the cup?", program=None):
    """One question in the official questions-file layout."""
    if program is None:
        program = [{"operation": "select", "argument": "cup (1)", "dependencies": []},
                   {"operation": "query", "argument": "color", "dependencies": [0]}]
    return {"question": text, "answer": answer, "isBalanced": balanced,
            "types": {"structural": structural, "semantic": semantic, "detailed": detailed},
            "groups": {"global": group, "local": None}, "entailed": list(entailed),
            "semantic": program, "imageId": "n1"}


def preds(**by_id):
    return [{"questionId": k, "prediction": v} for k, v in by_id.items()]


# --- golden ---------------------------------------------------------------------------------

def test_accuracy_binary_open_and_unbalanced_ignored():
    questions = {
        "1": q("red"), "2": q("blue"),
        "3": q("yes", structural="verify", semantic="obj"),
        "4": q("no", structural="logical", semantic="obj"),
        "5": q("no", structural="compare", semantic="rel"),
        "6": q("cat", balanced=False),  # never counted, even if wrong
    }
    out = score_gqa(questions, preds(**{"1": "red", "2": "red", "3": "yes", "4": "yes",
                                        "5": "no", "6": "dog"}))
    assert out["accuracy"] == pytest.approx(300 / 5)
    assert out["open"] == 50.0  # structural "query" only
    assert out["binary"] == pytest.approx(200 / 3)
    assert out["per_structural"] == {"compare": 100.0, "logical": 0.0, "query": 50.0,
                                     "verify": 100.0}
    assert out["per_semantic"] == {"attr": 50.0, "obj": 50.0, "rel": 100.0}


def test_raw_string_comparison_without_normalisation():
    out = score_gqa({"1": q("red")}, preds(**{"1": "Red"}))
    assert out["accuracy"] == 0.0


def test_missing_prediction_for_balanced_question_is_an_error():
    with pytest.raises(DataError, match="no prediction for question 2"):
        score_gqa({"1": q("a"), "2": q("b")}, preds(**{"1": "a"}))


def test_missing_prediction_for_unbalanced_question_is_allowed_without_consistency():
    questions = {"1": q("a", entailed=["2"]), "2": q("b", balanced=False)}
    out = score_gqa(questions, preds(**{"1": "a"}))
    assert out["accuracy"] == 100.0 and out["consistency"] is None
    with pytest.raises(DataError, match="every question"):
        score_gqa(questions, preds(**{"1": "a"}), consistency=True)


def test_integer_question_ids_get_a_hint():
    with pytest.raises(DataError, match="must be strings"):
        score_gqa({"1": q("a")}, [{"questionId": 1, "prediction": "a"}])


def test_validity_and_plausibility_with_the_common_rule():
    questions = {
        "1": q("red"), "2": q("red"),
        "3": q("color", detailed="twoCommon", structural="compare"),
        "4": q("color", detailed="twoCommon", structural="compare"),
    }
    choices = {
        "1": {"valid": ["red", "blue", "cup"], "plausible": ["red", "blue"]},
        "2": {"valid": ["red", "blue", "cup"], "plausible": ["red", "blue"]},
        "3": {"valid": ["red"], "plausible": ["red"]},  # replaced by color/material/shape
        "4": {"valid": ["red"], "plausible": ["red"]},
    }
    out = score_gqa(questions, preds(**{"1": "cup", "2": "dog", "3": "material", "4": "red"}),
                    choices)
    assert out["validity"] == 50.0       # "cup" and "material" valid; "dog", "red" not
    assert out["plausibility"] == 25.0   # only "material"
    assert belongs("shape", [], {"types": {"detailed": "materialCommon"}})
    out = score_gqa(questions, preds(**{"1": "cup", "2": "dog", "3": "material", "4": "red"}))
    assert out["validity"] is None and out["plausibility"] is None


def test_consistency_over_entailed_questions():
    questions = {
        # correct; entails itself (skipped), 3 (right) and 4 (wrong) -> 0.5
        "1": q("yes", structural="verify", entailed=["1", "3", "4"]),
        # wrong: its entailed questions are not looked at
        "2": q("no", structural="verify", entailed=["3"]),
        # unbalanced entailed questions still count through question 1
        "3": q("red", balanced=False),
        "4": q("blue", balanced=False, entailed=["1"]),
        # correct, entails only 5 -> 1.0
        "5": q("cup", entailed=["3"]),
        # correct, entails nothing but itself -> not in the mean
        "6": q("cup", entailed=["6"]),
    }
    p = preds(**{"1": "yes", "2": "yes", "3": "red", "4": "red", "5": "cup", "6": "cup"})
    out = score_gqa(questions, p)
    assert out["consistency"] == pytest.approx((0.5 + 1.0) / 2 * 100)
    assert score_gqa(questions, p, consistency=False)["consistency"] is None


def test_consistency_needs_entailments_unless_forced():
    questions = {"1": q("a", entailed=["1"]), "2": q("b")}
    p = preds(**{"1": "a", "2": "b"})
    assert score_gqa(questions, p)["consistency"] is None
    assert score_gqa(questions, p, consistency=True)["consistency"] == 0.0  # official avg([])


def test_consistency_with_entailed_question_not_in_file():
    questions = {"1": q("a", entailed=["99"])}
    assert score_gqa(questions, preds(**{"1": "a"}))["consistency"] is None
    with pytest.raises(DataError, match="entailed question 99"):
        score_gqa(questions, preds(**{"1": "a"}), consistency=True)


def test_distribution_hand_computed():
    # group g1: gold {a: 2, b: 1}, predicted {a: 1, c: 2} -> (1-2)^2/2 + (0-1)^2/1 = 1.5, size 3
    # group g2: gold {x: 1}, predicted {x: 1} -> 0, size 1; no group -> not counted
    questions = {"1": q("a", group="g1"), "2": q("a", group="g1"), "3": q("b", group="g1"),
                 "4": q("x", group="g2"), "5": q("z")}
    out = score_gqa(questions, preds(**{"1": "a", "2": "c", "3": "c", "4": "x", "5": "y"}))
    assert out["distribution"] == pytest.approx((1.5 * 3 + 0 * 1) / 4 / 100)
    assert chi_square({"g": {"a": 4}}, {"g": {"a": 2}}) == pytest.approx(1.0)
    assert score_gqa({"1": q("a")}, preds(**{"1": "a"}))["distribution"] is None


def test_steps_and_words():
    program = [
        {"operation": "select", "argument": "cup (1)"},
        {"operation": "relate", "argument": "table,on,s (2)"},
        {"operation": "exist", "argument": "?"},
        {"operation": "query", "argument": "name"},          # "query: name" -> not a step
        {"operation": "choose name", "argument": "a|b"},      # "choose name" -> not a step
        {"operation": "filter color", "argument": "exist"},   # substring anywhere counts
        {"operation": "verify color", "argument": "red"},
    ]
    question = q("yes", program=program, text="Is  the cup\ton the table?")
    assert steps_num(question) == 3
    assert words_num(question) == 6
    out = score_gqa({"1": question, "2": q("red")}, preds(**{"1": "yes", "2": "blue"}))
    assert out["per_steps"] == {"2": 0.0, "3": 100.0}
    assert out["per_length"] == {"5": 0.0, "6": 100.0}


def test_malformed_inputs_are_named():
    with pytest.raises(DataError, match="question 1: missing key 'types.structural'"):
        bad = q("a")
        del bad["types"]["structural"]
        score_gqa({"1": bad}, preds(**{"1": "a"}))
    with pytest.raises(DataError, match=r"predictions\[0\]"):
        score_gqa({"1": q("a")}, [{"id": "1"}])
    with pytest.raises(DataError, match="no entry for question 2"):
        score_gqa({"1": q("a"), "2": q("b")}, preds(**{"1": "a", "2": "b"}),
                  {"1": {"valid": [], "plausible": []}})
    with pytest.raises(DataError, match="no balanced questions"):
        score_gqa({"1": q("a", balanced=False)}, [])


# --- properties -----------------------------------------------------------------------------

_question = st.tuples(st.sampled_from(["query", "verify", "logical", "compare", "choose"]),
                      st.booleans(), st.booleans())


@settings(max_examples=60, deadline=None)
@given(st.lists(_question, min_size=1, max_size=30))
def test_accuracy_is_the_weighted_mix_of_binary_and_open(rows):
    questions, p = {}, {}
    for i, (structural, balanced, right) in enumerate(rows):
        questions[str(i)] = q("yes", structural=structural, balanced=balanced or i == 0)
        p[str(i)] = "yes" if right else "no"
    out = score_gqa(questions, preds(**p))
    balanced = [r for i, r in enumerate(rows) if r[1] or i == 0]
    n_open = sum(1 for r in balanced if r[0] == "query")
    n_bin = len(balanced) - n_open
    assert out["accuracy"] == pytest.approx((n_open * out["open"] + n_bin * out["binary"])
                                            / len(balanced))
    for name in ("accuracy", "binary", "open"):
        assert 0.0 <= out[name] <= 100.0
    assert out["consistency"] is None  # no question entails another
    assert out["accuracy"] == pytest.approx(
        sum(out["per_structural"][t] * sum(1 for r in balanced if r[0] == t)
            for t in out["per_structural"]) / len(balanced))


# --- files and CLI --------------------------------------------------------------------------

def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test application."""

    app.command("score")(score)
    return app


def _write(tmp_path):
    questions = {"1": q("red", group="color"), "2": q("yes", structural="verify", semantic="obj")}
    choices = {"1": {"valid": ["red", "blue"], "plausible": ["red"]},
               "2": {"valid": ["yes", "no"], "plausible": ["yes", "no"]}}
    paths = {n: tmp_path / f"{n}.json" for n in ("questions", "choices", "predictions")}
    paths["questions"].write_text(json.dumps(questions))
    paths["choices"].write_text(json.dumps(choices))
    paths["predictions"].write_text(json.dumps(preds(**{"1": "blue", "2": "yes"})))
    return paths


def test_files(tmp_path):
    paths = _write(tmp_path)
    out = score_gqa_files(paths["questions"], paths["predictions"], paths["choices"])
    assert out["accuracy"] == 50.0 and out["validity"] == 100.0 and out["plausibility"] == 50.0
    # Only gold answers are summed over: the predicted "blue" adds nothing, the missed "red"
    # adds (0 - 1)^2 / 1.
    assert out["distribution"] == pytest.approx(1 / 100)


def test_cli(tmp_path):
    paths = _write(tmp_path)
    runner = CliRunner()
    args = ["score", "--task", "gqa", "--predictions", str(paths["predictions"]),
            "--questions", str(paths["questions"])]
    result = runner.invoke(_app(), args + ["--choices", str(paths["choices"]), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["accuracy"] == 50.0 and metrics["per_semantic"] == {"attr": 0.0, "obj": 100.0}
    result = runner.invoke(_app(), args)
    assert result.exit_code == 0 and "validity" in result.stdout and "n/a" in result.stdout
    result = runner.invoke(_app(), ["score", "--task", "gqa", "--predictions",
                                    str(paths["predictions"])])
    assert result.exit_code == 2 and "needs --questions" in result.output
    result = runner.invoke(_app(), args + ["--annotations", str(paths["choices"])])
    assert result.exit_code == 2 and "not used by --task gqa" in result.output


# --- per-question records -------------------------------------------------------------------

def test_task_records_mark_uncounted_questions_and_rebuild_the_official_metrics(tmp_path):
    """Rows say which questions the official metrics leave out ("counted"); with the
    task's declared metric_units the results layer rebuilds accuracy, binary and open."""
    structural = ["query", "verify", "logical", "compare", "choose"]
    questions = {str(i): q("yes", structural=structural[i % 5], balanced=i % 4 != 3)
                 for i in range(40)}
    (tmp_path / "testdev_balanced_questions.json").write_text(json.dumps(questions))
    task = GQATask(GQAConfig(eval_splits=["testdev"]), DataSource(tmp_path, synthetic=False))
    # Unbalanced questions are all answered right: counting them would raise every metric.
    predictions = {qid: "yes" if i % 3 == 0 or i % 4 == 3 else "no"
                   for i, qid in enumerate(questions)}
    metrics, records = task.score("testdev", predictions)
    assert [r["counted"] for r in records] == [i % 4 != 3 for i in range(40)]
    assert "balanced" not in records[0]
    table = QuestionTable("gqa", "testdev", [r["id"] for r in records],
                          np.array([[r["score"] for r in records]]), [list(predictions.values())],
                          records, parse_metric_units(GQATask.metric_units, "GQATask"))
    for name in ("accuracy", "binary", "open"):
        assert 100 * unit_values(table, name).mean() == pytest.approx(metrics[name]), name
    for kind in GQATask.category_kinds:
        for category, value in metrics[f"per_{kind}"].items():
            rebuilt = unit_values(table, f"per_{kind}.{category}")
            assert 100 * rebuilt.mean() == pytest.approx(value), (kind, category)


def test_dict_form_predictions_must_be_strings():
    # A number never equals the gold string: the official comparison would score 0 silently.
    with pytest.raises(DataError, match="question '1': prediction is a number"):
        score_gqa({"1": q("2")}, {"1": 2})
    assert score_gqa({"1": q("2")}, {"1": "2"})["accuracy"] == 100.0


@pytest.mark.parametrize(("field", "value", "message"), [
    ("groups", None, "key 'groups' is null"),
    ("question", None, "key 'question' is null"),
    ("semantic", "abc", "key 'semantic' is a string"),
    ("semantic", [{"operation": "select"}], r"key 'semantic\[0\].argument' is null \(missing\)"),
    ("types", {"structural": 3, "semantic": "attr", "detailed": "x"}, "key 'types.structural'"),
    ("isBalanced", "yes", "key 'isBalanced' is a string"),
])
def test_malformed_question_fields_are_named(field, value, message):
    bad = q("a")
    bad[field] = value
    with pytest.raises(DataError, match=f"GQA question 1: {message}"):
        score_gqa({"1": bad}, preds(**{"1": "a"}))


def test_files_name_the_file_holding_the_bad_field(tmp_path):
    paths = _write(tmp_path)
    questions = json.loads(paths["questions"].read_text())
    questions["2"]["groups"] = None
    paths["questions"].write_text(json.dumps(questions))
    with pytest.raises(DataError, match=r"questions\.json: question '2': key 'groups' is null"):
        score_gqa_files(paths["questions"], paths["predictions"])
