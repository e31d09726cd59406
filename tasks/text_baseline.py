"""A learned question-only baseline: TF-IDF of the text + logistic regression (scikit-learn).

What a model can learn from the question (or sentence) alone is the yardstick of a V&L
benchmark: the classic "question-only" baselines (e.g. 41.1 on GQA in the GQA paper, 44.3 on
VQA v2) show how much a blind model gets. ``baselines.text_only`` in every run record is this
classifier, trained on the task's training split and scored with the task's official scorer.
Word (1-2) and character (2-4, within words) n-grams catch both the wording and the
morphology of questions; the features are capped so that real-size splits stay in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

#: at most this many training examples (taken in order) and n-gram features per kind
TRAIN_LIMIT = 200_000
MAX_FEATURES = 50_000


def fit_predict(train_texts: Sequence[str], train_labels: Sequence[str],
                texts: Sequence[str], seed: int = 0) -> list[str]:
    """Train on (text, label) pairs; predict a label for each of ``texts``.

    With a single training label the classifier is that label (scikit-learn refuses one class).
    The fit runs on one BLAS thread: the solver's sums, hence a few predictions, depend on the
    thread count, and a run record's baseline must not depend on the machine's cores.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union
    from threadpoolctl import threadpool_limits

    train_texts, train_labels = list(train_texts)[:TRAIN_LIMIT], list(train_labels)[:TRAIN_LIMIT]
    if not texts:
        return []
    if len(set(train_labels)) < 2:
        return [train_labels[0] if train_labels else ""] * len(texts)
    features = make_union(
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True,
                        max_features=MAX_FEATURES),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True,
                        max_features=MAX_FEATURES),
    )
    model = make_pipeline(features, LogisticRegression(max_iter=300, C=10.0, random_state=seed))
    with threadpool_limits(limits=1):
        model.fit(train_texts, train_labels)
        return [str(p) for p in model.predict(list(texts))]


def task_predictions(task: Any, split: str, text: Callable[[Any], str], label: Callable[[Any], str],
                     key: Callable[[Any], str]) -> dict[str, str]:
    """The baseline's answer to every example of ``split`` (by ``key``), trained once per task
    on its labelled training examples (``label`` "" = unlabelled) for all evaluation splits."""
    cache = task.__dict__.setdefault("_text_only", {})
    if split not in cache:
        splits = list(dict.fromkeys([*task.eval_splits, split]))
        train = [ex for ex in task.examples(task.train_split) if label(ex)]
        asked = [ex for s in splits for ex in task.examples(s)]
        answers = iter(fit_predict([text(ex) for ex in train], [label(ex) for ex in train],
                                   [text(ex) for ex in asked]))
        for s in splits:
            cache[s] = {key(ex): next(answers) for ex in task.examples(s)}
    return cache[split]
