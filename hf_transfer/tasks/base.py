"""What every task provides: its data columns, its model class, its preprocessing and metrics.

The run (`run.py`) only talks to this interface. A task does not know about strategies,
training arguments or the run folder; it turns raw rows into model inputs and model outputs
into metrics and predictions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from hf_transfer.data import load_raw, make_splits
from hf_transfer.errors import UserError, did_you_mean

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict


class Task:
    Config: ClassVar[type]
    auto_model: ClassVar[str]  # e.g. "AutoModelForSequenceClassification"
    pipeline_task: ClassVar[str]  # e.g. "text-classification"
    peft_task_type: ClassVar[str]  # peft.TaskType member name, e.g. "SEQ_CLS"
    new_head: ClassVar[bool] = True  # False where the pretrained output layer is kept (causal LM)
    stratify_by: ClassVar[str | None] = None  # the column to stratify carved splits on
    evaluate_before_training: ClassVar[bool] = False  # also score the held-out data untrained
    sort_eval_by_length: ClassVar[bool] = True  # evaluate in length-sorted batches (outputs re-ordered)
    # True when loss_function() sums over the batch's items and divides by num_items_in_batch,
    # the Trainer's count over the whole accumulated, all-process step; else it is a batch mean.
    loss_counts_items: ClassVar[bool] = False
    training_defaults: ClassVar[dict[str, Any]] = {}  # TrainingArguments the task needs, unless set

    def __init__(self, config: Any, seed: int):
        self.config = config
        self.seed = seed

    # -- data ---------------------------------------------------------------------------
    def load_splits(self) -> DatasetDict:
        """Raw data -> checked, normalised columns -> train / validation / test."""
        raw = load_raw(self.config.data)
        return make_splits(self.prepare(raw), self.config.data, self.seed, self.stratify_by)

    def prepare(self, raw: DatasetDict) -> DatasetDict:
        """Check the configured columns exist and bring them to the task's canonical form."""
        raise NotImplementedError

    def is_labeled(self, split: Dataset) -> bool:
        """False for a split with no usable labels (a hub test split with -1 everywhere)."""
        return True

    # -- model ---------------------------------------------------------------------------
    def model_config_kwargs(self) -> dict[str, Any]:
        """Extra model-config values: number of labels, label names, problem type."""
        return {}

    def adapt_tokenizer(self, tokenizer: Any, family: str) -> None:
        """Adjust the tokenizer for the task (pair separators, prefix spaces); it is saved so."""

    def adapt_model(self, model: Any) -> None:
        """Adjust the freshly loaded model for the task."""

    # -- preprocessing -------------------------------------------------------------------
    def tokenize(self, splits: DatasetDict, tokenizer: Any, max_length: int) -> DatasetDict:
        raise NotImplementedError

    def collator(self, tokenizer: Any) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    # -- training and evaluation ---------------------------------------------------------
    @property
    def best_metric(self) -> tuple[str, bool]:
        """(metric name, greater is better) for choosing the best checkpoint."""
        return "loss", False

    def loss_function(self) -> Callable[..., Any] | None:
        """A loss to use instead of the model's own (class weights), or None."""
        return None

    # Shrinks each evaluation batch's logits, before they are gathered, to what the metrics
    # need: Trainer's preprocess_logits_for_metrics(logits, labels), or None to keep them.
    preprocess_logits: Callable[[Any, Any], Any] | None = None

    def compute_metrics(self, eval_prediction: Any) -> dict[str, float]:
        """Scalar metrics logged at each evaluation."""
        return {}

    def decode(self, prediction: Any, name: str) -> Any:
        """What the outputs on split `name` say (answers, tags per word) where that takes work:
        done once, and handed to both evaluate and prediction_records. None: nothing to do."""
        return None

    def evaluate(self, prediction: Any, split: Dataset, decoded: Any = None) -> dict[str, Any]:
        """Full results for the saved metrics (per-class figures included)."""
        return dict(prediction.metrics or {})

    def prediction_records(self, prediction: Any, split: Dataset, decoded: Any = None) -> list[dict[str, Any]]:
        """One JSON-able record per example, for predictions files."""
        return []

    def generate(self, model: Any) -> list[tuple[str, str]]:
        """(prompt, output) samples written to the run folder before and after training
        (generation tasks)."""
        return []

    def usage_snippet(self, model_ref: str) -> str:
        """Python that loads the saved model for the model card."""
        return f'from transformers import pipeline\n\npipe = pipeline("{self.pipeline_task}", model="{model_ref}")\n'


def check_metric(name: str, known: list[str]) -> None:
    """Refuse a task.metric_for_best_model that is none of the task's metrics ('f1' also
    covers 'f1_macro' and the like: a prefix is enough)."""
    if not any(name.startswith(k) for k in known):
        raise UserError(
            f"task.metric_for_best_model '{name}' is not a metric of this task"
            f"{did_you_mean(name, known)}; choose one of: {', '.join(known)}"
        )


def label_config(names: list[str]) -> dict[str, Any]:
    """Model config values for a head with one output per name, labelled by name."""
    return {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {n: i for i, n in enumerate(names)},
    }
