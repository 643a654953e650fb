"""Metrics computed here, with numpy only: no metric script to fetch from the hub.

Extra metrics from `evaluate` (by hub name or local path) are loaded by `load_extra_metrics`
before training starts, so that a bad name fails before the first step, not after the last.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hf_transfer.errors import UserError, first_line

# Imported inside the functions that use them, not here: evaluate. This module is on the path of
# --help and of a config error, which stay quick (tests/test_architecture.py).


def classification_scores(predictions: np.ndarray, references: np.ndarray, num_labels: int) -> dict[str, float]:
    """Accuracy and macro precision / recall / F1 (classes absent from both sides are skipped)."""
    per_class = _per_class(predictions, references, num_labels)
    present = [c for c in per_class if c["support"] > 0 or c["predicted"] > 0]
    return {
        "accuracy": float(np.mean(predictions == references)) if len(references) else 0.0,
        "f1_macro": _mean(c["f1"] for c in present),
        "precision_macro": _mean(c["precision"] for c in present),
        "recall_macro": _mean(c["recall"] for c in present),
    }


def per_class_scores(
    predictions: np.ndarray, references: np.ndarray, label_names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Precision, recall, F1, support and how often it was predicted, of each class, by name."""
    rows = _per_class(predictions, references, len(label_names))
    keys = ("precision", "recall", "f1", "support", "predicted")
    return {name: {k: row[k] for k in keys} for name, row in zip(label_names, rows)}


def _per_class(predictions: np.ndarray, references: np.ndarray, num_labels: int) -> list[dict[str, Any]]:
    rows = []
    for label in range(num_labels):
        predicted = predictions == label
        actual = references == label
        counts = int(np.sum(predicted & actual)), int(predicted.sum()), int(actual.sum())
        rows.append({**_prf(*counts), "predicted": counts[1]})
    return rows


def multi_label_scores(
    predicted: np.ndarray, actual: np.ndarray, label_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Micro and macro F1 and exact-set accuracy of multi-hot predictions (booleans)."""
    predicted, actual = predicted.astype(bool), actual.astype(bool)
    true_positive = (predicted & actual).sum(axis=0)
    predicted_count, actual_count = predicted.sum(axis=0), actual.sum(axis=0)
    rows = [_prf(int(tp), int(p), int(a)) for tp, p, a in zip(true_positive, predicted_count, actual_count)]
    tp, p, a = int(true_positive.sum()), int(predicted_count.sum()), int(actual_count.sum())
    micro = 2 * tp / (p + a) if p + a else 0.0
    scores: dict[str, Any] = {
        "f1_micro": float(micro),
        "f1_macro": _mean(r["f1"] for r, n in zip(rows, actual_count + predicted_count) if n),
        "subset_accuracy": float(np.mean(np.all(predicted == actual, axis=1))) if len(actual) else 0.0,
    }
    if label_names is not None:
        scores["per_class"] = dict(zip(label_names, rows))
    return scores


def regression_scores(predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
    """Mean squared and absolute error, Pearson and Spearman correlation."""
    predictions, references = predictions.astype(np.float64), references.astype(np.float64)
    errors = predictions - references
    return {
        "mse": float(np.mean(errors**2)),
        "mae": float(np.mean(np.abs(errors))),
        "pearson": _pearson(predictions, references),
        "spearman": _pearson(_ranks(predictions), _ranks(references)),
    }


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    # Undefined for a constant side; tested before centring, whose rounding leaves it not quite constant.
    if not len(x) or (x == x[0]).all() or (y == y[0]).all():
        return 0.0
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x**2).sum() * (y**2).sum())
    return float((x * y).sum() / denominator) if denominator else 0.0


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing the mean of their ranks (as Spearman's coefficient wants)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def _mean(values: Any) -> float:
    values = list(values)
    return float(np.mean(values)) if values else 0.0


class ExtraMetric:
    """An `evaluate` metric given by hub name or local path, with keyword arguments."""

    def __init__(self, spec: str | dict[str, Any]):
        if isinstance(spec, str):
            spec = {"path": spec}
        self.path = str(spec["path"])
        self.kwargs = dict(spec.get("kwargs") or {})
        self.name = str(spec.get("name") or self.path.rstrip("/").split("/")[-1].removesuffix(".py"))
        self._metric = _load_evaluate_metric(self.path)

    def compute(self, predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
        result = self._metric.compute(predictions=predictions, references=references, **self.kwargs) or {}
        scores = {}
        for key, value in result.items():
            if isinstance(value, (int, float, np.number)):
                # Prefix with the metric's name unless the result already says it.
                scores[key if key == self.name or key.startswith(self.name) else f"{self.name}_{key}"] = float(value)
        return scores


def load_extra_metrics(specs: Sequence[str | dict[str, Any]]) -> list[ExtraMetric]:
    return [ExtraMetric(spec) for spec in specs]


def _load_evaluate_metric(path: str) -> Any:
    import evaluate

    try:
        return evaluate.load(path)
    except Exception as err:  # network errors, missing scripts, bad modules: all the user's to fix
        raise UserError(
            f"could not load the evaluate metric '{path}' (task.metrics): "
            f"{first_line(err)}. A hub name needs the "
            "hub; offline, give the path of a local metric script or folder"
        ) from None


# -- plain per-token tags (POS) ---------------------------------------------------------------
def tag_scores(predicted: Sequence[Sequence[str | None]], actual: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Token accuracy, macro F1 over tags and each tag's precision / recall / F1 / support, for
    tags that are classes of their own (POS), not parts of entities. Only tags seen on either side
    are scored (as `classification_scores` averages); a None prediction (a word max_length cut off)
    is wrong, and a prediction of no tag. Micro F1 would equal the accuracy: not given."""
    flat_predicted = [tag for sentence in predicted for tag in sentence]
    flat_actual = [tag for sentence in actual for tag in sentence]
    names = sorted({tag for tag in flat_predicted + flat_actual if tag is not None})
    ids: dict[str | None, int] = {name: i for i, name in enumerate(names)}
    predictions = np.array([ids.get(tag, -1) for tag in flat_predicted], dtype=np.int64)  # None: -1, no class
    references = np.array([ids[tag] for tag in flat_actual], dtype=np.int64)
    overall = classification_scores(predictions, references, len(names))
    return {
        "accuracy": overall["accuracy"],
        "f1_macro": overall["f1_macro"],
        "per_tag": per_class_scores(predictions, references, names),
    }


# -- entities (seqeval semantics) ------------------------------------------------------------
def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first, last) chunks of a tag sequence, read as seqeval's default mode does.

    Tags are B-X / I-X / O (also E-X, S-X). As in conlleval, an I-X that does not continue an
    X chunk starts one, and a change of type ends a chunk.
    """
    chunks = []
    previous_tag, previous_type, begin = "O", "", 0
    for position, label in enumerate([*tags, "O"]):
        tag, kind = label[0], label[1:].split("-", maxsplit=1)[-1] or "_"
        if _chunk_ends(previous_tag, tag, previous_type, kind):
            chunks.append((previous_type, begin, position - 1))
        if _chunk_starts(previous_tag, tag, previous_type, kind):
            begin = position
        previous_tag, previous_type = tag, kind
    return chunks


def _chunk_ends(previous_tag: str, tag: str, previous_type: str, kind: str) -> bool:
    if previous_tag in ("E", "S"):
        return True
    if previous_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return previous_tag not in ("O", ".") and previous_type != kind


def _chunk_starts(previous_tag: str, tag: str, previous_type: str, kind: str) -> bool:
    if tag in ("B", "S"):
        return True
    if previous_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and previous_type != kind


def entity_scores(predicted: Sequence[Sequence[str]], actual: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Entity-level precision, recall, F1 (micro over entities), per type, and token accuracy."""
    predicted_chunks: set[tuple[int, str, int, int]] = set()
    actual_chunks: set[tuple[int, str, int, int]] = set()
    correct_tokens = total_tokens = 0
    for sentence, (pred, gold) in enumerate(zip(predicted, actual)):
        predicted_chunks |= {(sentence, *chunk) for chunk in entities(pred)}
        actual_chunks |= {(sentence, *chunk) for chunk in entities(gold)}
        correct_tokens += sum(p == g for p, g in zip(pred, gold))
        total_tokens += len(gold)
    per_type = {}
    for kind in sorted({c[1] for c in predicted_chunks | actual_chunks}):
        per_type[kind] = _prf_of_sets(
            {c for c in predicted_chunks if c[1] == kind}, {c for c in actual_chunks if c[1] == kind}
        )
    overall = _prf_of_sets(predicted_chunks, actual_chunks)
    return {
        "precision": overall["precision"],
        "recall": overall["recall"],
        "f1": overall["f1"],
        "accuracy": correct_tokens / total_tokens if total_tokens else 0.0,
        "per_type": per_type,
    }


def _prf_of_sets(predicted: set[Any], actual: set[Any]) -> dict[str, float]:
    return _prf(len(predicted & actual), len(predicted), len(actual))


def _prf(correct: int, predicted: int, actual: int) -> dict[str, Any]:
    """Precision, recall, F1 and support from counts (0 where a count is 0)."""
    precision = correct / predicted if predicted else 0.0
    recall = correct / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual}
