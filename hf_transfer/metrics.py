"""Metrics computed here, with numpy only: no metric script to fetch from the hub.

Extra metrics from `evaluate` (by hub name or local path) are loaded by `load_extra_metrics`
before training starts, so that a bad name fails before the first step, not after the last.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hf_transfer.errors import UserError


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
    """Precision, recall, F1 and support of each class, keyed by label name."""
    rows = _per_class(predictions, references, len(label_names))
    return {
        name: {k: row[k] for k in ("precision", "recall", "f1", "support")}
        for name, row in zip(label_names, rows)
    }


def _per_class(predictions: np.ndarray, references: np.ndarray, num_labels: int) -> list[dict[str, Any]]:
    rows = []
    for label in range(num_labels):
        predicted = predictions == label
        actual = references == label
        true_positive = int(np.sum(predicted & actual))
        precision = true_positive / int(predicted.sum()) if predicted.any() else 0.0
        recall = true_positive / int(actual.sum()) if actual.any() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(
            {
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "support": int(actual.sum()),
                "predicted": int(predicted.sum()),
            }
        )
    return rows


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
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}. A hub name needs the "
            "hub; offline, give the path of a local metric script or folder"
        ) from None
