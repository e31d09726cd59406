"""The learned question-only baseline (TF-IDF + logistic regression) in every run record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlbench.tasks.text_baseline import fit_predict


def test_it_learns_what_the_text_alone_says():
    train = ["what colour is the sky", "what colour is grass", "how many legs has a cat",
             "how many legs has a bird"] * 10
    labels = ["blue", "green", "4", "2"] * 10
    assert fit_predict(train, labels, ["what colour is the sky?", "how many legs has a cat?"]) \
        == ["blue", "4"]


def test_one_training_label_is_the_answer_to_everything():
    assert fit_predict(["a", "b"], ["yes", "yes"], ["c", "d"]) == ["yes", "yes"]
    assert fit_predict(["a"], ["yes"], []) == []


@pytest.mark.parametrize("task", ["gqa", "vqa", "nlvr2"])
def test_every_run_records_it_next_to_the_prior(task: str, small_world: Path, tmp_path: Path):
    from vlbench.engine.run import train

    run = train("lxmert", task, data_dir=str(small_world), out=tmp_path,
                overrides={"train.epochs": "1", "train.train_limit": "32", "train.eval_limit": "16"})
    record = json.loads((run / "run.json").read_text())
    for split in record["eval_splits"]:
        prior = record["baselines"]["prior"][split]
        text_only = record["baselines"]["text_only"][split]
        assert set(prior) == set(text_only) and 0.0 <= text_only[record["primary_metric"]] <= 100.0


def test_the_fit_runs_on_one_blas_thread(monkeypatch):
    """The solver's result (and a few predictions) depends on the BLAS thread count: the
    baseline pins one thread so that a record's baseline does not depend on the machine."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_info, threadpool_limits

    seen: list[int] = []
    original = LogisticRegression.fit

    def fit(self, *args, **kwargs):
        seen.extend(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", fit)
    with threadpool_limits(limits=2):
        fit_predict(["is it red?", "how many?", "is it blue?"], ["yes", "2", "no"], ["how many?"])
    assert seen and set(seen) == {1}
