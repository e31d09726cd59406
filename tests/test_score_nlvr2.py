"""NLVR2 scoring: the official metrics.py rules, properties, files and the CLI."""

from __future__ import annotations

import json

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from vlbench.cli.score import score
from vlbench.errors import DataError
from vlbench.tasks.nlvr2.scoring import (
    read_nlvr2_predictions,
    score_nlvr2,
    score_nlvr2_files,
    sentence_group,
)


def ex(identifier, label, sentence="There are two dogs."):
    return {"identifier": identifier, "sentence": sentence, "label": label,
            "left_url": "l.png", "right_url": "r.png"}


def test_sentence_group_blanks_the_pair_id():
    assert sentence_group("dev-850-0-1") == "dev-850--1"
    assert sentence_group("dev-850-3-1") == "dev-850--1"
    assert sentence_group("dev-850-0-0") == "dev-850--0"
    with pytest.raises(DataError, match="split-set_id-pair_id-sentence_id"):
        sentence_group("dev-850")


def test_accuracy_and_consistency_hand_computed():
    labels = [
        ex("dev-1-0-0", "True"), ex("dev-1-1-0", "False"),   # group dev-1--0: both right
        ex("dev-1-0-1", "True"), ex("dev-1-2-1", "True"),    # group dev-1--1: one wrong
        ex("dev-2-0-0", "False"),                            # group dev-2--0: right
    ]
    predictions = {"dev-1-0-0": "true", "dev-1-1-0": "FALSE", "dev-1-0-1": "True",
                   "dev-1-2-1": "False", "dev-2-0-0": "False", "dev-9-0-0": "True"}
    out = score_nlvr2(labels, predictions)
    assert out["accuracy"] == pytest.approx(4 / 5 * 100)
    assert out["consistency"] == pytest.approx(2 / 3 * 100)


def test_missing_prediction_is_an_error():
    with pytest.raises(DataError, match="1 of 2 examples have no prediction"):
        score_nlvr2([ex("dev-1-0-0", "True"), ex("dev-1-1-0", "True")], {"dev-1-0-0": "True"})


def test_label_must_be_a_string():
    with pytest.raises(DataError, match="'label' must be a string"):
        score_nlvr2([ex("dev-1-0-0", True)], {"dev-1-0-0": "True"})


def test_predictions_csv_reading(tmp_path):
    path = tmp_path / "pred.csv"
    path.write_text("identifier,prediction\n"
                    "dev-1-0-0,True\n"
                    "dev-1-1-0, False\n"          # kept with its space: never matches
                    "dev-1-2-0,True,0.93\n"       # extra fields ignored
                    "dev-1-2-0,False\n"           # a later line wins
                    "\n")
    assert read_nlvr2_predictions(path) == {"dev-1-0-0": "True", "dev-1-1-0": " False",
                                            "dev-1-2-0": "False"}
    path.write_text("dev-1-0-0\n")
    with pytest.raises(DataError, match="line 1: expected 'identifier,prediction'"):
        read_nlvr2_predictions(path)


def _write(tmp_path, lines, labels):
    p, lab = tmp_path / "pred.csv", tmp_path / "dev.json"
    p.write_text("".join(f"{i},{v}\n" for i, v in lines))
    lab.write_text("".join(json.dumps(e) + "\n" for e in labels))
    return p, lab


def test_files_and_malformed_jsonl(tmp_path):
    labels = [ex("dev-1-0-0", "True"), ex("dev-1-1-0", "False")]
    p, lab = _write(tmp_path, [("dev-1-0-0", "True"), ("dev-1-1-0", " False")], labels)
    out = score_nlvr2_files(lab, p)
    assert out == {"accuracy": 50.0, "consistency": 0.0}
    lab.write_text(json.dumps(labels[0]) + "\n{not json\n")
    with pytest.raises(DataError, match=r"dev\.json, line 2: invalid JSON"):
        score_nlvr2_files(lab, p)


_example = st.tuples(st.integers(0, 4), st.integers(0, 3), st.integers(0, 1), st.booleans(),
                     st.booleans())


@settings(max_examples=80, deadline=None)
@given(st.lists(_example, min_size=1, max_size=40, unique_by=lambda t: t[:3]))
def test_consistency_bounds(rows):
    labels, predictions = [], {}
    for set_id, pair_id, sent_id, label, right in rows:
        ident = f"dev-{set_id}-{pair_id}-{sent_id}"
        labels.append(ex(ident, str(label)))
        predictions[ident] = str(label if right else not label).lower()
    out = score_nlvr2(labels, predictions)
    groups = {sentence_group(e["identifier"]) for e in labels}
    n_wrong = sum(1 for r in rows if not r[4])
    n_inconsistent = round((100 - out["consistency"]) / 100 * len(groups))
    assert 0.0 <= out["consistency"] <= 100.0 and 0.0 <= out["accuracy"] <= 100.0
    # Each wrong example spoils at most one group, and a spoiled group needs one wrong example.
    assert n_inconsistent <= n_wrong
    assert (n_wrong == 0) == (out["consistency"] == 100.0) == (out["accuracy"] == 100.0)
    assert out["accuracy"] == pytest.approx((len(rows) - n_wrong) / len(rows) * 100)


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test application."""

    app.command("score")(score)
    return app


def test_cli(tmp_path):
    labels = [ex("dev-1-0-0", "True"), ex("dev-1-1-0", "False"), ex("dev-2-0-1", "True")]
    p, lab = _write(tmp_path, [("dev-1-0-0", "True"), ("dev-1-1-0", "True"),
                               ("dev-2-0-1", "true")], labels)
    runner = CliRunner()
    base = ["score", "--task", "nlvr2", "--predictions", str(p)]
    result = runner.invoke(_app(), base + ["--annotations", str(lab), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["accuracy"] == pytest.approx(200 / 3) and out["consistency"] == 50.0
    result = runner.invoke(_app(), base + ["--annotations", str(lab)])
    assert result.exit_code == 0 and "consistency" in result.stdout and "50.00" in result.stdout
    result = runner.invoke(_app(), base)
    assert result.exit_code == 2 and "needs --annotations" in result.output
    result = runner.invoke(_app(), base + ["--annotations", str(tmp_path / "missing.jsonl")])
    assert result.exit_code == 1 and "labels file not found" in result.output


def test_predictions_must_spell_true_or_false(tmp_path):
    # LXMERT's 1/0 never equal "True"/"False" officially: every such prediction would score 0.
    path = tmp_path / "pred.csv"
    path.write_text("dev-1-0-0,True\ndev-1-1-0,0\n")
    with pytest.raises(DataError, match=r"line 2 \(dev-1-1-0\): prediction '0' is not True or "
                                        r"False \(LXMERT's 0 is False\)"):
        read_nlvr2_predictions(path)
    with pytest.raises(DataError, match=r"\(dev-1-0-0\): prediction '1' is not True or False"):
        score_nlvr2([ex("dev-1-0-0", "True")], {"dev-1-0-0": "1"})
