"""A mean-pooling classifier's new head, started from the training examples (weight imprinting).

Each class's vector becomes the mean direction of its training examples' embeddings (Qi et al.,
2018, "Low-Shot Learning with Imprinted Weights"): the cosine head starts as a nearest-centroid
classifier, right on much of the data already, so that the first steps of fine-tuning refine
the pretrained embedding instead of bending it to fit a random head. It costs one pass of the
pretrained model over at most IMPRINT_EXAMPLES training examples. On bert_sentiment with 64
labelled examples a class this alone scores 0.68-0.71 test accuracy (BENCHMARKS.md).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import torch
from torch import nn

from hf_transfer.models import anatomy, is_mean_pooling

log = logging.getLogger(__name__)

# Centroids of a few thousand examples barely move with more; the pass stays short on big data.
IMPRINT_EXAMPLES = 2048
BATCH = 64


def can_imprint(model: Any) -> bool:
    return is_mean_pooling(model.config) and model.config.logit_scale is not None


def imprint_head(model: Any, train: Any, collator: Any, device: Any) -> dict[str, Any]:
    """Imprint the head of `model` (see `can_imprint`) from the encoded training split `train`
    (a seeded sample of at most IMPRINT_EXAMPLES rows), batched by `collator` on `device`;
    returns the record for metrics.json."""

    started = time.perf_counter()
    # A seeded sample, not the first rows: a user's file may be sorted by label.
    chosen = sorted(random.Random(0).sample(range(len(train)), min(len(train), IMPRINT_EXAMPLES)))
    rows = [train[i] for i in chosen]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))  # less padding
    was_training = model.training
    model.to(device).eval()
    embeddings, labels = [], []
    for start in range(0, len(order), BATCH):
        batch = collator([rows[i] for i in order[start : start + BATCH]])
        labels.append(batch.pop("labels"))
        embeddings.append(model.embed(**{key: value.to(device) for key, value in batch.items()}))
    missing = model.imprint(torch.cat(embeddings), torch.cat(labels))
    model.train(was_training)
    names = model.config.id2label
    if missing:
        log.warning("head: no training example of %s; their vectors stay random", ", ".join(names[c] for c in missing))
    seconds = time.perf_counter() - started
    log.info("head: class vectors imprinted from %d training examples (%.1f s)", len(rows), seconds)
    record = {"imprinted_from": len(rows), "seconds": round(seconds, 2)}
    return record | ({"without_examples": [names[c] for c in missing]} if missing else {})


# Ridge penalties tried, relative to the features' mean square; the best on held-out rows wins.
RIDGE_PENALTIES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
# and only fits whose output, for a feature vector of the usual size, stays within this many times
# the targets' spread (see _ridge).
MAX_GAIN = 3.0


def output_layer(model: Any) -> Any | None:
    """The new head's last linear layer (what makes the one number), or None."""

    head = anatomy(model).head
    layers = [
        module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.split(".")[0] in head and module.out_features == 1
    ]
    return layers[-1] if layers else None


def fit_number_head(model: Any, train: Any, collator: Any, device: Any) -> dict[str, Any]:
    """A regression head's start: a ridge regression of the targets on what its output layer reads
    (the pretrained model's features), fitted in closed form on a seeded sample of at most
    IMPRINT_EXAMPLES training rows. A random head outputs about 0 and, at a fine-tuning rate,
    takes thousands of steps to reach targets around 5: a run of the usual length then predicts
    a constant. This one starts at least at the training mean (where the features tell nothing),
    in the targets' own units. Returns the record for metrics.json."""

    started = time.perf_counter()
    layer = output_layer(model)
    chosen = sorted(random.Random(0).sample(range(len(train)), min(len(train), IMPRINT_EXAMPLES)))
    rows = [train[i] for i in chosen]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    features: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda module, args, output: features.append(args[0].detach().float().cpu()))
    was_training = model.training
    model.to(device).eval()
    targets = []
    try:
        with torch.no_grad():
            for start in range(0, len(order), BATCH):
                batch = collator([rows[i] for i in order[start : start + BATCH]])
                targets.append(batch.pop("labels").float().reshape(-1))
                model(**{key: value.to(device) for key, value in batch.items()})
                if features[-1].dim() == 3:  # a decoder scores every position and keeps the last real one
                    mask = batch["attention_mask"]
                    last = (mask * torch.arange(mask.shape[1])).argmax(-1)
                    features[-1] = features[-1][torch.arange(len(last)), last]
    finally:
        hook.remove()
        model.train(was_training)
    x, y = torch.cat(features).double(), torch.cat(targets).double()
    weight, bias, penalty = _ridge(x, y, intercept=layer.bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight.reshape(layer.weight.shape).to(layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.fill_(float(bias))
    seconds = time.perf_counter() - started
    how = f"ridge regression on the pretrained features (penalty {penalty:g})" if penalty is not None else "the mean"
    log.info("head: started from %s of %d training examples (%.1f s)", how, len(rows), seconds)
    return {"fitted_from": len(rows), "start": "ridge" if penalty is not None else "mean",
            "seconds": round(seconds, 2)}  # fmt: skip


def _ridge(x: Any, y: Any, intercept: bool) -> tuple[Any, float, float | None]:
    """(weight, bias, penalty): the ridge fit whose penalty does best on a fifth of the rows held
    out, refitted on all of them; the mean (weight 0) where no fit beats it there. A layer
    without a bias (`intercept` False: GPT-2's score) takes the intercept along the features'
    mean direction, which every pretrained feature vector shares."""

    def fit(rows: Any, penalty: float | None) -> tuple[Any, Any]:
        xs, ys = x[rows], y[rows]
        # Without a bias the fit goes through the origin (the mean rides on what the features share).
        x_mean, y_mean = (xs.mean(0), ys.mean()) if intercept else (torch.zeros_like(xs[0]), torch.zeros_like(ys[0]))
        if penalty is None:  # the mean alone
            w = torch.zeros_like(xs[0]) if intercept else ys.mean() * xs.mean(0) / (xs.mean(0) ** 2).sum()
        else:
            centred = xs - x_mean
            gram = centred.T @ centred
            # Scaled by the features' size, not their spread: weights that lean on directions in
            # which the pretrained features barely vary would swing wildly once fine-tuning moves them.
            scale = (xs**2).sum() / xs.shape[1]
            w = torch.linalg.solve(gram + penalty * scale * torch.eye(len(gram), dtype=gram.dtype),
                                   centred.T @ (ys - y_mean))  # fmt: skip
        return w, y_mean - x_mean @ w

    n = len(y)
    if n < 10:
        w, b = fit(torch.arange(n), None)
        return w, float(b), None
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    held, kept = order[: n // 5], order[n // 5 :]
    # Fine-tuning moves the features: a head whose weights are large against them (the output
    # swings by more than the targets do when the features move as much as they are in size,
    # in a random direction) diverges at once.
    feature_size = x.pow(2).mean().sqrt()  # the root mean square of one feature
    target_size = (y - y.mean() * intercept).pow(2).mean().sqrt()
    errors = {}
    for penalty in (None, *RIDGE_PENALTIES):  # None: the mean alone
        w, b = fit(kept, penalty)
        if penalty is None or w.norm() * feature_size <= MAX_GAIN * target_size:
            errors[penalty] = float(((x[held] @ w + b - y[held]) ** 2).mean())
    best = min(errors, key=lambda penalty: (errors[penalty], penalty is not None))  # a tie goes to the mean
    w, b = fit(torch.arange(n), best)
    return w, float(b), best
