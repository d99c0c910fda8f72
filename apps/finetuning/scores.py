"""Classification metrics, computed the same way for the model and the baselines.

Plain Python on purpose: the figures on the job page must be checkable by hand (and the tests
recompute them with scikit-learn from the stored predictions).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any


def classification_metrics(
    truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy; per-label precision, recall, F1 and support; their unweighted (macro) means; and
    the confusion matrix (rows: true label, columns: predicted, both in ``labels`` order). A
    precision or recall with nothing to divide by counts as 0, as scikit-learn's
    ``zero_division=0``."""
    index = {label: i for i, label in enumerate(labels)}
    confusion = [[0] * len(labels) for _ in labels]
    for t, p in zip(truth, predicted, strict=True):
        confusion[index[t]][index[p]] += 1
    per_label: dict[str, dict[str, float]] = {}
    for i, label in enumerate(labels):
        hits = confusion[i][i]
        predicted_as = sum(row[i] for row in confusion)
        support = sum(confusion[i])
        precision = hits / predicted_as if predicted_as else 0.0
        recall = hits / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    count = len(labels)
    return {
        "accuracy": sum(confusion[i][i] for i in range(count)) / max(len(truth), 1),
        "macro_precision": sum(m["precision"] for m in per_label.values()) / count,
        "macro_recall": sum(m["recall"] for m in per_label.values()) / count,
        "macro_f1": sum(m["f1"] for m in per_label.values()) / count,
        "per_label": per_label,
        "confusion": confusion,
    }


def majority_baseline(train_labels: Sequence[str]) -> str:
    """The most frequent training label (ties: the first in sorted order, so it is stable)."""
    counts = Counter(train_labels)
    top = max(counts.values())
    return sorted(label for label, n in counts.items() if n == top)[0]


def tfidf_logreg_baseline(
    train_texts: Sequence[str], train_labels: Sequence[str], test_texts: Sequence[str], seed: int
) -> list[str]:
    """Predictions of TF-IDF features (words and word pairs) with logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    features = vectorizer.fit_transform(train_texts)
    model = LogisticRegression(max_iter=2000, random_state=seed)
    model.fit(features, list(train_labels))
    return [str(p) for p in model.predict(vectorizer.transform(test_texts))]
