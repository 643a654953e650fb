"""What every task provides: its data columns, its model class, its preprocessing and metrics.

A task object holds its validated config and nothing else. Each step returns what it makes,
and the next step is handed it:

    data = task.load()                                   TaskData: splits, label names
    model config  <- task.model_config_kwargs(data)
    encoded = task.tokenize(data, tokenizer, max_length)  Encoded: model inputs (+ what decoding needs)
    Trainer       <- task.loss_function(data), task.metric_functions(data, encoded)
    scores, records = task.evaluate(prediction, split, data, encoded)

A task does not know about strategies, training arguments or the run folder. It also says how
to predict with a model it trained (`predictor`), so that `hf-transfer predict` needs no table
of its own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from tqdm.auto import tqdm

from hf_transfer.data import load_raw, make_splits
from hf_transfer.device import hub_kernels
from hf_transfer.errors import UserError, did_you_mean
from hf_transfer.extra_sets import load_extra_sets
from hf_transfer.models import default_max_length

# Imported inside the functions that use them, not here: torch, transformers and mean_pooling (torch).
# This module is on the path of --help and of a config error, which stay quick
# (tests/test_architecture.py).

if TYPE_CHECKING:
    from datasets import DatasetDict


@dataclass
class TaskData:
    """What `Task.prepare` makes: the splits in the task's own columns, and what they define."""

    splits: DatasetDict
    # The head's outputs by name, in id order; empty where they have no names (regression, LM).
    labels: list[str] = field(default_factory=list)
    # One loss weight per label (task.class_weights), or None.
    label_weights: list[float] | None = None
    # How the label names read, where a task has schemes (token classification: iob2, none...).
    scheme: str | None = None
    # The splits that are extra test sets (task.extra_test), in config order; held out like test.
    extra_test: list[str] = field(default_factory=list)


@dataclass
class Encoded:
    """What `Task.tokenize` makes: the model inputs of each split and, for each evaluated split,
    whatever reading its outputs back needs (word ids, answer windows), or nothing."""

    inputs: DatasetDict
    decoding: dict[str, Any] = field(default_factory=dict)


# (compute_metrics, preprocess_logits_for_metrics) for the Trainer; either may be None.
MetricFunctions = tuple[Callable[[Any], dict[str, float]] | None, Callable[[Any, Any], Any] | None]


class Task:
    Config: ClassVar[type]
    auto_model: ClassVar[str]  # e.g. "AutoModelForSequenceClassification"
    pipeline_task: ClassVar[str]  # e.g. "text-classification"
    peft_task_type: ClassVar[str]  # peft.TaskType member name, e.g. "SEQ_CLS"
    new_head: ClassVar[bool] = True  # False where the pretrained output layer is kept (causal LM)
    evaluate_before_training: ClassVar[bool] = False  # also score the held-out data untrained
    sort_eval_by_length: ClassVar[bool] = True  # evaluate in length-sorted batches (outputs re-ordered)
    training_defaults: ClassVar[dict[str, Any]] = {}  # TrainingArguments the task needs, unless set
    # Optimizer steps a run of this task needs before it learns at all (measured: BENCHMARKS.md);
    # fewer planned, epochs are added as for strategy.min_steps.
    least_steps: ClassVar[int] = 0
    # Whether an input longer than max_length is cut (else the task splits it: QA's windows, LM blocks).
    cuts_long_inputs: ClassVar[bool] = True

    def __init__(self, config: Any, seed: int):
        self.config = config
        self.seed = seed

    def min_steps(self, strategy_min_steps: int) -> tuple[int, str]:
        """The fewest optimizer steps the run trains, and why: the strategy's strategy.min_steps or
        the task's own, whichever is more; strategy.min_steps=0 trains exactly what was asked."""
        if not strategy_min_steps or self.least_steps <= strategy_min_steps:
            return strategy_min_steps, f"strategy.min_steps={strategy_min_steps}"
        return self.least_steps, f"{self.config.type} learns in no fewer than {self.least_steps} steps"

    @classmethod
    def architecture_endings(cls) -> tuple[str, ...]:
        """How the model classes this task trains end ("ForSequenceClassification"): what tells
        `predict` the task of a model that no hf_transfer run made."""
        return (cls.auto_model.removeprefix("AutoModel"),)

    # -- data ---------------------------------------------------------------------------
    def load(self) -> TaskData:
        """Raw data -> checked, normalised columns -> train / validation / test."""
        data = self.prepare(load_raw(self.config.data))
        data.splits = make_splits(data.splits, self.config.data, self.seed)
        return load_extra_sets(self, data)

    def prepare(self, raw: DatasetDict) -> TaskData:
        """Check the configured columns exist and bring them to the task's canonical form."""
        raise NotImplementedError

    def prepare_extra(self, raw: Any, name: str, extra: Any, data: TaskData) -> Any:
        """One extra test set (task.extra_test.NAME) in the task's canonical columns, its labels
        as the task's label ids: tasks that take extra sets say how."""
        raise UserError(f"task.extra_test: this task type ({self.config.type}) takes no extra test sets")

    # -- model ---------------------------------------------------------------------------
    def model_config_kwargs(self, data: TaskData) -> dict[str, Any]:
        """Extra model-config values: number of labels, label names, problem type."""
        return {}

    def adapt_tokenizer(self, tokenizer: Any, family: str) -> None:
        """Adjust the tokenizer for the task (pair separators, prefix spaces); it is saved so."""

    # -- preprocessing -------------------------------------------------------------------
    def tokenize(self, data: TaskData, tokenizer: Any, max_length: int) -> Encoded:
        raise NotImplementedError

    def collator(
        self, tokenizer: Any, pad_to_multiple_of: int | None = None
    ) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        """Batches padded to their longest row (rounded up to `pad_to_multiple_of`: fewer shapes)."""
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)

    # -- training and evaluation ---------------------------------------------------------
    @property
    def best_metric(self) -> tuple[str, bool]:
        """(metric name, greater is better) for choosing the best checkpoint, from the config."""
        return "loss", False

    def best_metric_for(self, data: TaskData) -> tuple[str, bool]:
        """`best_metric` once the data is read: a task may choose by what the data holds."""
        return self.best_metric

    def loss_function(self, data: TaskData, label_smoothing: float = 0.0) -> Callable[..., Any] | None:
        """The Trainer's `compute_loss_func(outputs, labels, num_items_in_batch)`, or None for the
        model's own loss. `num_items_in_batch` counts the labels of the whole optimizer step (all
        accumulated batches, all processes): a loss that is its share of the step's mean makes the
        Trainer's default scaling right for any accumulation and any number of processes. The
        Trainer applies `trainer.label_smoothing_factor` only to the model's own loss: a task's
        loss is handed it."""
        return None

    def metric_functions(self, data: TaskData, encoded: Encoded) -> MetricFunctions:
        """What the Trainer scores the validation split with at each evaluation, built from the
        values they need: (compute_metrics, preprocess_logits_for_metrics)."""
        return None, None

    def evaluate(
        self, prediction: Any, split: str, data: TaskData, encoded: Encoded
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """Full results of split `split` (per-class figures included; None when the split has no
        labels to score) and one JSON-able record per example for its predictions file."""
        return dict(prediction.metrics or {}), []

    def generate(self, model: Any, tokenizer: Any) -> list[tuple[str, str]]:
        """(prompt, output) samples written to the run folder before and after training
        (generation tasks)."""
        return []

    def usage_snippet(self, model_ref: str, custom_code: bool = False) -> str:
        """Python that loads the saved model for the model card; `custom_code`: the model's
        class is in a file beside its weights (it loads with trust_remote_code)."""
        return (
            "from transformers import pipeline\n\n"
            f'pipe = pipeline("{self.pipeline_task}", model="{model_ref}"{trust_remote_code(custom_code)})\n'
        )

    def baseline(self, data: TaskData) -> Baseline | None:
        """The trivial predictor fitted on the train split (the majority class, the mean, all
        `O`) and its scores on each labelled held-out split, or None where the task has none."""
        return None

    # -- prediction with a trained model -------------------------------------------------
    @classmethod
    def prediction_settings(cls, task_config: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
        """What prediction needs from the run's config.yaml `task` section and its metrics.json
        (both may be empty: a model no hf_transfer run made)."""
        return {}

    @classmethod
    def predictor(cls, model: str, settings: dict[str, Any], revision: str | None, device: str | None) -> Predictor:
        """A Predictor for a saved model of this task (a run folder or a hub id)."""
        raise NotImplementedError

    @classmethod
    def prediction_inputs(cls, records: list[dict[str, Any]], context: str | None) -> list[dict[str, Any]]:
        """Check and shape what `hf-transfer predict` read ({"text", "text_pair"} records);
        `context` is its --context option."""
        return records


@dataclass
class Baseline:
    """What a model must beat to have learned anything: `predictor` names the trivial rule,
    `scores` its results per split, scored as the model's are."""

    predictor: str
    scores: dict[str, dict[str, Any]]


class Predictor:
    """Runs a model over records in batches (a progress bar on long inputs); one dict each.
    `cut`: how many texts were longer than the run's max_length and were scored as training
    saw such texts (their first max_length tokens), for the command to say so."""

    # How texts longer than the model's length are handled, for the line that counts them.
    long_texts = "scored on their first {max_length} tokens, as training read such texts"

    def __init__(self, settings: dict[str, Any]):
        self.settings = settings
        self.cut = 0

    def predict(self, records: list[dict[str, Any]], batch_size: int) -> Iterator[dict[str, Any]]:
        batches = range(0, len(records), batch_size)
        progress = tqdm(batches, desc="Predicting", unit="batch", disable=len(batches) < 2, file=sys.stderr)
        for start in progress:
            chunk = records[start : start + batch_size]
            for record, output in zip(chunk, self.run(chunk, batch_size)):
                yield {**record, **output}

    def run(self, chunk: list[dict[str, Any]], batch_size: int) -> list[dict[str, Any]]:
        raise NotImplementedError


class PipelinePredictor(Predictor):
    """A Predictor over a transformers pipeline (`run` turns its outputs into our records).
    Texts are tokenized to the run's max_length (settings["max_length"], what metrics.json
    recorded), else to the model's own limit: never past the positions the model has."""

    def __init__(self, settings: dict[str, Any], pipe: Any):
        super().__init__(settings)
        self.pipe = pipe
        self.max_length = prediction_length(settings, pipe.tokenizer, pipe.model.config)
        pipe.tokenizer.model_max_length = self.max_length  # what the pipelines truncate and window to

    def count_cut(self, texts: list[Any]) -> None:
        """Count the texts (or pairs) longer than max_length tokens."""
        if not texts:
            return
        pairs = [t if isinstance(t, dict) else {"text": t} for t in texts]
        encoded = self.pipe.tokenizer(
            [p["text"] for p in pairs], [p["text_pair"] for p in pairs] if "text_pair" in pairs[0] else None
        )
        self.cut += sum(len(ids) > self.max_length for ids in encoded["input_ids"])


def prediction_length(settings: dict[str, Any], tokenizer: Any, model_config: Any) -> int:
    """The run's max_length where it recorded one, within the model's limit."""

    limit = default_max_length(tokenizer, model_config)
    recorded = settings.get("max_length")
    return min(recorded, limit) if isinstance(recorded, int) and recorded > 0 else limit


def recorded_max_length(metrics: dict[str, Any]) -> dict[str, Any]:
    """The prediction setting of the length the run tokenized to (metrics.json), if any."""
    value = metrics.get("max_length")
    return {"max_length": value} if isinstance(value, int) else {}


def trust_remote_code(custom_code: bool) -> str:
    """The pipeline argument a usage snippet needs for a model whose class ships beside it."""
    return ", trust_remote_code=True" if custom_code else ""


def load_pipeline(task: str, model: str, revision: str | None, device: str | None) -> Any:
    from transformers import pipeline

    from hf_transfer import mean_pooling

    mean_pooling.register()  # hf_transfer's own model classes load without trust_remote_code
    return pipeline(
        task, model=model, revision=revision, device=device, dtype="float32",
        model_kwargs={"use_kernels": hub_kernels()},
    )  # fmt: skip


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


def mean_share_of_step(batch_mean: Any, items_here: int, num_items_in_batch: Any) -> Any:
    """A loss that is a mean over this batch's `items_here` labels, as its share of the mean over
    the step's `num_items_in_batch` (None: this batch is the step). With one process and no
    accumulation the factor is exactly 1: the loss is the model's own, bit for bit."""
    if num_items_in_batch is None:
        return batch_mean
    return batch_mean * (items_here / num_items_in_batch)


def labelled_cross_entropy(logits: Any, labels: Any, num_items_in_batch: Any, label_smoothing: float = 0.0) -> Any:
    """Cross-entropy summed over the labelled positions (-100: none) and divided by the step's
    count of them (`num_items_in_batch`; None: this batch's count), in float32."""
    import torch

    total = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100, reduction="sum",
        label_smoothing=label_smoothing,
    )  # fmt: skip
    count = num_items_in_batch if num_items_in_batch is not None else labels.ne(-100).sum()
    return total / torch.as_tensor(count, device=total.device).clamp(min=1)
