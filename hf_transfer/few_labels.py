"""Few labels: how a classifier is taught from a handful of examples a class.

A training split whose every class has at most `few_labels.max_per_class` examples (and at
most `few_labels.max_examples` in all) does not fine-tune a 100 M-parameter encoder with the
schedule of a full dataset. It trains the way that measured best with little data
(BENCHMARKS.md, "Few labels"): the cosine head, imprinted at the class centroids, at a lower
logit scale (at 20 it fits 16 examples before the first step and teaches the encoder little),
a few whole passes over the examples in batches of up to 16 (at most 40 steps), the
strategy's rate lowered for wider models, and no evaluation or checkpoint during the run (it
is over sooner than a resume would pay; early stopping or a scheduler that steps on
evaluations keeps them).

It applies to the strategies that move the encoder (full, partial_unfreeze, lora) under a new,
imprinted cosine head on the mean (a pretrained sentence encoder; a random start is not
imprinted); head_only keeps its own schedule on cached features. A smaller
trainer.per_device_train_batch_size is kept (it may be what fits the memory), trainer.max_steps
still sets the length; `few_labels.max_per_class=0` trains as configured.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hf_transfer.models import SEQUENCE_CLASSIFICATION

if TYPE_CHECKING:
    from hf_transfer.config import RunConfig
    from hf_transfer.models import Checkpoint
    from hf_transfer.tasks import Task
    from hf_transfer.tasks.base import TaskData

log = logging.getLogger(__name__)


@dataclass
class FewLabelsConfig:
    """`few_labels.*`: when a run counts as few-label, and how it then trains."""

    # Every class with at most this many training examples: a few-label run. 0: never.
    max_per_class: int = 100
    # Nor more than this many in all (150 intents of 100 examples are not little data).
    max_examples: int = 2000
    # The cosine head's logit scale in a few-label run (a full dataset's head keeps 20).
    head_scale: float = 5.0
    # Whole passes over the training examples, in batches of at most `batch_size`, to at most
    # `max_steps` optimizer steps: 16 examples train 10 steps, 128 train 40 (5 passes), which
    # scored higher than 80 with MPNet and as high with MiniLM (BENCHMARKS.md).
    epochs: int = 10
    batch_size: int = 16
    max_steps: int = 40
    # The peak rate; null: the strategy's, times REFERENCE_WIDTH / the model's hidden size where
    # that is less than 1. trainer.learning_rate, when set, wins.
    learning_rate: float | None = None

    def __post_init__(self) -> None:
        for key in ("max_per_class", "max_examples", "epochs", "batch_size", "max_steps"):
            minimum = 0 if key == "max_per_class" else 1
            if getattr(self, key) < minimum:
                raise ValueError(f"few_labels.{key} must be {minimum} or more, got {getattr(self, key)}")
        for key in ("head_scale", "learning_rate"):
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                raise ValueError(f"few_labels.{key} must be more than 0, got {getattr(self, key)}")


@dataclass(frozen=True)
class FewLabels:
    """A few-label run's plan: its head's scale and its training arguments."""

    per_class: int  # the most examples any class has
    max_per_class: int
    head_scale: float
    settings: dict[str, Any]  # TrainingArguments keys that replace the run's

    def summary(self) -> str:
        """One line for the run's log and for `validate`."""
        settings = self.settings
        length = f"{settings['num_train_epochs']} epochs"
        if settings.get("max_steps", -1) > 0:
            length = f"{settings['max_steps']} steps"
        quiet = ", no evaluation or checkpoint during training" if settings.get("eval_strategy") == "no" else ""
        return (
            f"few labels (at most {self.per_class} training examples a class, few_labels.max_per_class="
            f"{self.max_per_class}): {length} in batches of {settings['per_device_train_batch_size']} at rate "
            f"{settings['learning_rate']:g}, the head at scale {self.head_scale:g}{quiet} "
            "(few_labels.max_per_class=0 trains as configured)"
        )

    def describe(self) -> dict[str, Any]:
        """What metrics.json records of it."""
        return {"per_class": self.per_class, "head_scale": self.head_scale, **self.settings}


ENCODER_STRATEGIES = ("full", "partial_unfreeze", "lora")
# The hidden size the strategies' rates were measured at (all-MiniLM-L6-v2). Wider models take
# lower rates with Adam (by about the ratio of widths, as muP scales them): 1e-4 for MiniLM's
# few labels, 5e-5 for MPNet's and BERT-base's (768), their usual fine-tuning rate.
REFERENCE_WIDTH = 384
# Schedulers that step on evaluations: a short run keeps its evaluations for them (and
# training.fit_schedule too).
STEPS_ON_EVALUATIONS = ("reduce_lr_on_plateau", "greedy")


def plan(
    run: RunConfig, task: Task, data: TaskData, checkpoint: Checkpoint, settings: dict[str, Any], world_size: int = 1
) -> FewLabels | None:
    """The few-label plan of this run, or None where it trains as configured. `settings`: the
    run's TrainingArguments keys as configured (batch, accumulation, max_steps, scheduler);
    `world_size`: its processes."""
    cfg = run.few_labels
    if not cfg.max_per_class or run.strategy.name not in ENCODER_STRATEGIES:
        return None
    # A new cosine head on the mean, imprinted, one label a text: what the schedule was measured with.
    cosine_head = task.new_head and task.auto_model == SEQUENCE_CLASSIFICATION and checkpoint.wraps_in_mean_pooling
    if not cosine_head or not checkpoint.settings.pretrained:
        return None
    if task.model_config_kwargs(data).get("problem_type") != "single_label_classification":
        return None
    examples = len(data.splits["train"])
    per_class = max(Counter(data.splits["train"]["label"]).values(), default=0)
    if not per_class or per_class > cfg.max_per_class or examples > cfg.max_examples:
        return None
    replicas = max(world_size, 1) * settings.get("gradient_accumulation_steps", 1)
    changes: dict[str, Any] = {
        "per_device_train_batch_size": _batch(examples, cfg.batch_size, settings, replicas),
        "num_train_epochs": cfg.epochs,
        "learning_rate": run.trainer.get("learning_rate") or cfg.learning_rate or _rate_for_width(run, checkpoint),
        "train_sampling_strategy": "random",  # grouped by length, a few dozen make the same batches
    }
    if settings.get("max_steps", -1) > 0:  # trainer.max_steps sets the length
        changes["max_steps"] = settings["max_steps"]
    elif cfg.epochs * math.ceil(examples / (changes["per_device_train_batch_size"] * replicas)) > cfg.max_steps:
        changes["max_steps"] = cfg.max_steps
    evaluations_needed = (
        run.early_stopping.patience is not None or settings.get("lr_scheduler_type") in STEPS_ON_EVALUATIONS
    )
    if not evaluations_needed:
        changes.update(eval_strategy="no", save_strategy="no", load_best_model_at_end=False)
    return FewLabels(per_class, cfg.max_per_class, cfg.head_scale, changes)


def _batch(examples: int, wanted: int, settings: dict[str, Any], replicas: int) -> int:
    """Batches of at most `wanted` examples in all processes and accumulation steps together,
    as even as the examples allow (17 examples: 9 and 8, not 16 and 1), and no larger than a
    smaller trainer.per_device_train_batch_size (what fits the memory)."""
    steps = math.ceil(examples / min(wanted, examples))
    per_step = math.ceil(examples / steps)
    return max(1, min(math.ceil(per_step / replicas), settings.get("per_device_train_batch_size", wanted)))


def _rate_for_width(run: RunConfig, checkpoint: Checkpoint) -> float:
    width = getattr(checkpoint.config, "hidden_size", None) or REFERENCE_WIDTH
    return run.strategy.learning_rate * min(1.0, REFERENCE_WIDTH / width)


def apply(settings: dict[str, Any], few: FewLabels) -> dict[str, Any]:
    """The run's TrainingArguments keys with the few-label schedule in place; what it changed of
    the configured ones is logged in one line."""
    changed = [f"{key}={value} (not {settings[key]})" for key, value in few.settings.items()
               if key in settings and settings[key] != value]  # fmt: skip
    if changed:
        log.info("few labels: trainer.%s", ", ".join(changed))
    return {**settings, **few.settings}
