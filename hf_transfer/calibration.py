"""A regression head's output drawn toward the mean by what the validation split shows.

A model fine-tuned on a few hundred examples predicts with about the spread of its training
targets, but on new texts its predictions agree with the targets only in part: the
squared-error-best prediction then lies closer to the mean, by the share they agree (regression
to the mean). SimLex-999's word pairs at the defaults: validation Pearson 0.46, yet a test MSE
above the training mean's. The least-squares line from the predictions to the validation targets,
its slope kept at most 1 (shrinkage, never stretching), is folded into the output layer's weight
and bias: the saved model predicts the corrected numbers, with nothing to apply afterwards.
A fit that gains less than MIN_GAIN on the validation split leaves the head as it is.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from hf_transfer.imprint import output_layer

log = logging.getLogger(__name__)

# Fewer validation rows than this give a line too noisy to trust.
MIN_ROWS = 20
# The share of the validation MSE a rescaling must save to be applied.
MIN_GAIN = 0.01


def fit_line(predictions: np.ndarray, targets: np.ndarray) -> tuple[float, float] | None:
    """(slope, intercept) of the least-squares line from predictions to targets, the slope at
    most 1; None where the predictions do not rise with the targets (nothing to rescale)."""
    spread = predictions.var()
    if spread == 0:
        return None
    slope = float(((predictions - predictions.mean()) * (targets - targets.mean())).mean() / spread)
    if slope <= 0:
        return None
    slope = min(slope, 1.0)
    return slope, float(targets.mean() - slope * predictions.mean())


def calibrate(model: Any, predictions: np.ndarray, targets: np.ndarray) -> dict[str, Any] | None:
    """Fold the line fitted on the validation split's `predictions` and `targets` into the
    output layer of `model`'s regression head; returns the record for metrics.json, or None
    where the head has no such layer."""
    layer = output_layer(model.get_base_model() if hasattr(model, "get_base_model") else model)
    if layer is None or layer.bias is None:
        log.info("head: output not rescaled (its last layer has no bias to shift)")
        return None
    predictions, targets = predictions.reshape(-1).astype(np.float64), targets.reshape(-1).astype(np.float64)
    known = np.isfinite(targets)
    predictions, targets = predictions[known], targets[known]
    if len(targets) < MIN_ROWS:
        log.info("head: output not rescaled (%d validation rows; it takes %d)", len(targets), MIN_ROWS)
        return None
    before = float(((predictions - targets) ** 2).mean())
    line = fit_line(predictions, targets)
    after = before if line is None else float(((line[0] * predictions + line[1] - targets) ** 2).mean())
    record: dict[str, Any] = {"fitted_on": "validation", "validation_mse_before": round(before, 6)}
    if line is None or after > before * (1 - MIN_GAIN):
        log.info("head: output not rescaled (a line fitted on the validation split gains under %g%%)", 100 * MIN_GAIN)
        return record | {"applied": False}
    slope, intercept = line
    with torch.no_grad():
        layer.weight.mul_(slope)
        layer.bias.mul_(slope).add_(intercept)
    log.info(
        "head: output rescaled toward the mean on the validation split: prediction x %.3f %+.3f (validation mse "
        "%.4f -> %.4f; its scores below are after this fit)", slope, intercept, before, after,
    )  # fmt: skip
    return record | {"applied": True, "slope": round(slope, 6), "intercept": round(intercept, 6),
                     "validation_mse_after": round(after, 6)}  # fmt: skip
