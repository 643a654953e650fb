"""Every score beside its trivial baseline: what a model that learned nothing scores.

The task fits the trivial predictor on the train split (`Task.baseline`: the majority class,
the training mean, every word tagged with the commonest tag) and scores it as it scores the
model; this module records it in metrics.json and says whether the run clearly beat it, on the
metric that chose the run's best checkpoint.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

# "Clearly better": by this much on a score (accuracy, F1: higher is better), or by this share
# of the baseline's value on an error or a loss (lower is better).
SCORE_MARGIN = 0.01
ERROR_MARGIN = 0.01


def record(baseline: Any, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """metrics.json's `baseline`: the predictor, its scores per split, and the verdict on the
    headline metric (test split, else validation): `beaten` true, false, or null where the
    baseline has no such score."""
    if baseline is None:
        return None
    name = metrics["best_metric"]["name"]
    greater = metrics["best_metric"]["greater_is_better"]
    verdict: dict[str, Any] = {"predictor": baseline.predictor, "metric": name, "beaten": None}
    for split in ("test", "validation"):
        ours, theirs = _score(metrics.get(split), name), _score(baseline.scores.get(split), name)
        if ours is not None and theirs is not None:
            verdict.update(split=split, score=ours, baseline_score=theirs, beaten=clearly_better(ours, theirs, greater))
            break
    verdict["scores"] = baseline.scores
    if verdict["beaten"] is False:
        log.warning(
            "the model does not clearly beat the trivial baseline (%s): %s %s %.4f against %.4f; it has learned "
            "next to nothing: train longer (trainer.num_train_epochs), check the learning rate, or the labels",
            baseline.predictor, verdict["split"], name, verdict["score"], verdict["baseline_score"],
        )  # fmt: skip
    return verdict


def clearly_better(ours: float, theirs: float, greater_is_better: bool) -> bool:
    if greater_is_better:
        return ours >= theirs + SCORE_MARGIN
    return ours <= theirs - ERROR_MARGIN * abs(theirs)


def summary_line(metrics: dict[str, Any]) -> str | None:
    """The end summary's line: the baseline's score beside the run's, and the verdict."""
    verdict = metrics.get("baseline")
    if not verdict or verdict.get("beaten") is None:
        return None
    said = "beaten" if verdict["beaten"] else "NOT beaten: the model learned next to nothing"
    return (f"  {'baseline':<15} {verdict['predictor']}: {verdict['split']} {verdict['metric']} "
            f"{verdict['baseline_score']:.4f} ({said})")  # fmt: skip


def _score(results: Any, name: str) -> float | None:
    value = results.get(name) if isinstance(results, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
