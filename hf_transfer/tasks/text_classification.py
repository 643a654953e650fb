"""Text classification: one text or a pair of texts -> a label, several labels, or a number.

`problem_type` picks what the label column holds:

- single_label: one label per text (strings or integers); `label_map` renames them,
  `drop_labels` drops rows, `labels` fixes the order of the ids;
- multi_label: several labels per text (a list, or a string split on `label_separator`);
  sigmoid outputs and a decision `threshold`;
- regression: one number per text.

The saved model config carries id2label/label2id and `problem_type`, so that
`pipeline("text-classification")` shows label names and applies softmax, sigmoid or nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hf_transfer.data import DatasetConfig, list_class_label, require_columns
from hf_transfer.errors import UserError
from hf_transfer.extra_sets import (
    ExtraTestConfig,
    check_sets,
    column_key,
    label_names_of,
    set_columns,
    split_name,
    warn_overlap,
)
from hf_transfer.metrics import (
    classification_scores,
    load_extra_metrics,
    multi_label_scores,
    per_class_scores,
    regression_scores,
)
from hf_transfer.models import ensure_pair_separator
from hf_transfer.tasks.base import (
    Baseline,
    Encoded,
    MetricFunctions,
    PipelinePredictor,
    Task,
    TaskData,
    check_metric,
    label_config,
    load_pipeline,
    mean_share_of_step,
    recorded_max_length,
)

# Imported inside the functions that use them, not here: torch and datasets. This module is on the
# path of --help and of a config error, which stay quick (tests/test_architecture.py).

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

log = logging.getLogger(__name__)

METRICS = {
    # The first of each is the default best-model metric: macro-F1 for single labels, as accuracy
    # hides a class that is never predicted on imbalanced data.
    "single_label": ("f1_macro", "accuracy", "precision_macro", "recall_macro", "loss"),
    "multi_label": ("f1_micro", "f1_macro", "subset_accuracy", "loss"),
    "regression": ("mse", "mae", "pearson", "spearman", "loss"),
}
LOWER_IS_BETTER = ("loss", "mse", "mae")
PROBLEM_TYPES = {
    "single_label": "single_label_classification",
    "multi_label": "multi_label_classification",
    "regression": "regression",
}


@dataclass
class Columns:
    text: str = "text"
    text_pair: str | None = None
    label: str = "label"


@dataclass
class TextClassificationConfig:
    type: Literal["text_classification"]
    data: DatasetConfig
    name: str | None = None
    columns: Columns = field(default_factory=Columns)
    problem_type: Literal["single_label", "multi_label", "regression"] = "single_label"
    # Label names in id order; by default the data's own names, else the sorted values.
    labels: list[str] | None = None
    # Renames raw label values (strings or integers) to label names.
    label_map: dict[str | int, str] | None = None
    # Raw label values whose rows are dropped (single label) or that are removed (multi-label);
    # null: none.
    drop_labels: list[str | int] | None = None
    # multi_label: labels given as one string, split on this (a list column needs none).
    label_separator: str | None = None
    # multi_label: a label is predicted when its sigmoid output reaches this.
    threshold: float = 0.5
    max_length: int | None = None
    # single_label: "balanced" (inverse class frequency in train) or one weight per label.
    class_weights: Literal["balanced"] | list[float] | None = None
    # Extra `evaluate` metrics: a hub name, a local path, or {path, name, kwargs}.
    metrics: list[str | dict[str, Any]] = field(default_factory=list)
    # Default: f1_macro (single label), f1_micro (multi-label), mse (regression).
    metric_for_best_model: str | None = None
    # More labelled sets scored after training like the test split, by name (see extra_sets.py).
    extra_test: dict[str, ExtraTestConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_sets(self.extra_test, Columns)
        if self.extra_test and self.problem_type == "multi_label":
            raise ValueError("task.extra_test takes single_label or regression tasks, not problem_type=multi_label")
        if self.class_weights is not None and self.problem_type != "single_label":
            raise ValueError("task.class_weights applies to problem_type=single_label only")
        if not 0 < self.threshold < 1:
            raise ValueError("task.threshold must be between 0 and 1")


class TextClassification(Task):
    Config = TextClassificationConfig
    auto_model = "AutoModelForSequenceClassification"
    pipeline_task = "text-classification"
    peft_task_type = "SEQ_CLS"

    def __init__(self, config: TextClassificationConfig, seed: int):
        super().__init__(config, seed)
        self.kind = config.problem_type
        self.extra_metrics = load_extra_metrics(config.metrics) if self.kind != "multi_label" else []
        if config.metrics and self.kind == "multi_label":
            raise UserError(
                "task.metrics (evaluate metrics) take single labels or numbers, not problem_type=multi_label"
            )
        self.metric = config.metric_for_best_model or METRICS[self.kind][0]
        check_metric(self.metric, list(METRICS[self.kind]) + [m.name for m in self.extra_metrics])

    # -- data ---------------------------------------------------------------------------
    def prepare(self, raw: DatasetDict) -> TaskData:
        from datasets import DatasetDict

        columns = self.config.columns
        text_columns = {"task.columns.text": columns.text, "task.columns.text_pair": columns.text_pair}
        raw_labels: dict[str, list[Any]] = {}
        for split, dataset in raw.items():
            require_columns(dataset, text_columns, split)
            if split != "test" or columns.label in dataset.column_names:
                require_columns(dataset, {"task.columns.label": columns.label}, split)
                raw_labels[split] = self._raw_labels(dataset)
        if self.kind == "single_label":
            _refuse_measurements(raw_labels["train"], columns.label)
        label_names = self._label_names(raw_labels["train"]) if self.kind != "regression" else []

        prepared = {}
        for split, dataset in raw.items():
            keep = [c for c in (columns.text, columns.text_pair) if c]
            dataset = dataset.select_columns(keep).rename_columns(
                {columns.text: "text", **({columns.text_pair: "text_pair"} if columns.text_pair else {})}
            )
            labels = raw_labels.get(split)
            if labels is None or all(v is None for v in labels):
                if split != "test":
                    raise UserError(f"the {split} split has no labels in column '{columns.label}'")
                log.info("the test split has no labels: it will be predicted, not scored")
                prepared[split] = self._drop_empty_texts(dataset, split)
                continue
            rows, values = self._encode_labels(labels, split, label_names)
            dataset = dataset.select(rows).add_column("label", values)
            dataset = dataset.cast_column("label", self._label_feature(label_names))
            prepared[split] = self._drop_empty_texts(dataset, split)
        if label_names:
            log.info("labels: %s", ", ".join(f"{i}={n}" for i, n in enumerate(label_names)))
        if self.kind == "single_label" and len(label_names) == 1:
            raise UserError(
                f"the train split has one class only ({label_names[0]!r} in column '{columns.label}'): a classifier "
                "needs examples of two or more; for a number per text, set task.problem_type=regression"
            )
        weights = self._class_weights(prepared["train"], label_names)
        return TaskData(DatasetDict(prepared), labels=label_names, label_weights=weights)

    def prepare_extra(self, raw: Dataset, name: str, extra: ExtraTestConfig, data: TaskData) -> Dataset:
        """An extra test set in the task's columns, its labels mapped to the task's by name."""

        columns = set_columns(extra, self.config.columns)
        if columns.text_pair is None and self.uses_text_pairs():
            raise UserError(f"the task classifies text pairs: set task.extra_test.{name}.columns.text_pair")
        split = split_name(name)
        for column in ("text", "text_pair", "label"):
            require_columns(raw, {column_key(name, extra, column): getattr(columns, column)}, split)
        # The task's own readers, on a copy of it that reads the set's columns.
        reader = copy.copy(self)
        reader.config = dataclasses.replace(self.config, columns=columns)
        values = _set_labels(raw, columns.label) if self.kind != "regression" else reader._raw_labels(raw)
        if self.kind == "regression":
            rows, labels = reader._encode_labels(values, split, [])
        else:
            rows, names = label_names_of(values, name, extra, data.labels, self.config.label_map)
            ids = {label: i for i, label in enumerate(data.labels)}
            labels = [ids[label] for label in names]
        keep = [c for c in (columns.text, columns.text_pair) if c]
        dataset = raw.select_columns(keep).rename_columns(
            {columns.text: "text", **({columns.text_pair: "text_pair"} if columns.text_pair else {})}
        )
        dataset = dataset.select(rows).add_column("label", labels)
        dataset = reader._drop_empty_texts(dataset.cast_column("label", self._label_feature(data.labels)), split)
        warn_overlap(_texts(data.splits["train"]), _texts(dataset), name)
        return dataset

    def _raw_labels(self, dataset: Dataset) -> list[Any]:
        """Label values as written in the data; None for a missing one (null or a negative id)."""
        from datasets import ClassLabel

        feature = dataset.features[self.config.columns.label]
        values = dataset[self.config.columns.label]
        if isinstance(feature, ClassLabel):
            return [feature.int2str(v) if v is not None and v >= 0 else None for v in values]
        inner = list_class_label(feature)
        if inner is not None:
            return [[inner.int2str(i) for i in v] if v is not None else None for v in values]
        if self.kind == "multi_label":
            return [self._split_multi(v) for v in values]
        values = [
            None if v is None or (isinstance(v, int) and v < 0 and self.kind != "regression") else v for v in values
        ]
        return self._stripped(values) if self.kind == "single_label" else values

    def _stripped(self, values: list[Any]) -> list[Any]:
        """Label names without the spaces around them ("pos " is "pos"); an empty one is no
        label (refused with the rows that have none). Said once, with an example."""
        changed = [v for v in values if isinstance(v, str) and v != v.strip()]
        if changed:
            log.warning(
                "column '%s': %s had spaces around them (e.g. %r): read without them",
                self.config.columns.label, _count(len(changed), "label value"), changed[0],
            )  # fmt: skip
        return [(v.strip() or None) if isinstance(v, str) else v for v in values]

    def _split_multi(self, value: Any) -> list[Any]:
        if value is None or value == "":  # an empty cell: no label applies
            return []
        if isinstance(value, (list, tuple)):
            return list(value)
        if self.config.label_separator is None:
            raise UserError(
                f"problem_type=multi_label needs a list in column '{self.config.columns.label}' or "
                f"task.label_separator to split strings like {value!r}"
            )
        return [part.strip() for part in str(value).split(self.config.label_separator) if part.strip()]

    def _mapped(self, value: Any) -> Any:
        label_map = self.config.label_map
        if label_map is None:
            return str(value)
        for key, name in label_map.items():
            if str(key) == str(value):
                return name
        return None

    def _label_names(self, train_labels: list[Any]) -> list[str]:
        dropped = {str(v) for v in self.config.drop_labels or []}
        values = [v for row in train_labels if row is not None for v in (row if self.kind == "multi_label" else [row])]
        present = [v for v in values if str(v) not in dropped]
        unmapped = sorted({str(v) for v in present if self._mapped(v) is None})
        if unmapped:
            raise UserError(
                f"label values {unmapped} of column '{self.config.columns.label}' are not in task.label_map; "
                "map them, or list them in task.drop_labels"
            )
        found = {self._mapped(v) for v in present}
        _warn_near_duplicates(found, self.config.columns.label)
        if self.config.labels is not None:
            names = list(self.config.labels)
            missing = sorted(found - set(names))
            if missing:
                raise UserError(f"labels {missing} occur in the train split but are not in task.labels")
            return names
        if self.config.label_map is not None:
            return list(dict.fromkeys(n for n in self.config.label_map.values() if n in found))
        if present and all(isinstance(v, int) for v in present):
            return [str(v) for v in sorted({int(v) for v in present})]
        return sorted(found)

    def _encode_labels(self, labels: list[Any], split: str, label_names: list[str]) -> tuple[list[int], list[Any]]:
        """The rows to keep and their label values (id, multi-hot vector or number)."""
        missing = [i for i, v in enumerate(labels) if v is None]
        if missing:
            raise UserError(
                f"{_count(len(missing), 'row')} of the {split} split {'has' if len(missing) == 1 else 'have'} no label "
                f"in column '{self.config.columns.label}' ({_first_rows(missing)}); fill them in or remove them"
            )
        if self.kind == "regression":
            try:
                return list(range(len(labels))), [float(v) for v in labels]
            except (TypeError, ValueError):
                bad = next(v for v in labels if not _is_number(v))
                raise UserError(
                    f"problem_type=regression needs numbers in column '{self.config.columns.label}'; "
                    f"the {split} split has {bad!r}"
                ) from None
        ids = {name: i for i, name in enumerate(label_names)}
        dropped = {str(v) for v in self.config.drop_labels or []}
        rows, values, unknown = [], [], Counter()
        for row, value in enumerate(labels):
            if self.kind == "multi_label":
                vector = [0.0] * len(ids)
                for item in value:
                    if str(item) in dropped:
                        continue
                    name = self._mapped(item)
                    if name in ids:
                        vector[ids[name]] = 1.0
                    else:
                        unknown[str(item)] += 1
                rows.append(row)
                values.append(vector)
                continue
            if str(value) in dropped:
                continue
            name = self._mapped(value)
            if name not in ids:
                unknown[str(value)] += 1
                continue
            rows.append(row)
            values.append(ids[name])
        if unknown:
            shown = dict(unknown.most_common(10))
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise UserError(
                f"the {split} split has label values not seen in train or task.labels: {shown}{more}; "
                "add them to task.labels, map them with task.label_map, or drop them with task.drop_labels"
            )
        if len(rows) < len(labels):
            log.info("%s: dropped %s with labels in task.drop_labels", split, _count(len(labels) - len(rows), "row"))
        return rows, values

    def _label_feature(self, label_names: list[str]) -> Any:
        from datasets import ClassLabel, Sequence, Value

        if self.kind == "single_label":
            return ClassLabel(names=label_names)
        if self.kind == "multi_label":
            return Sequence(Value("float32"), length=len(label_names))
        return Value("float32")

    def _drop_empty_texts(self, dataset: Dataset, split: str) -> Dataset:
        """Rows whose text (or pair text) is missing or blank are left out, and said so."""
        from datasets import Value

        columns = [c for c in ("text", "text_pair") if c in dataset.column_names]
        for column in columns:
            dtype = getattr(dataset.features[column], "dtype", "string")
            if dtype not in ("string", "large_string"):  # a file of numbers (codes, years) reads as numbers
                original = self.config.columns.text if column == "text" else self.config.columns.text_pair
                log.warning("%s: column '%s' holds numbers only (%s); read as text", split, original, dtype)
                dataset = dataset.cast_column(column, Value("string"))
        values = zip(*(dataset[c] for c in columns))
        empty = [i for i, texts in enumerate(values) if not all(isinstance(t, str) and t.strip() for t in texts)]
        if not empty:
            return dataset
        log.warning("%s: dropped %s with an empty text (%s)", split, _count(len(empty), "row"), _first_rows(empty))
        if len(empty) == len(dataset):
            raise UserError(f"every text of the {split} split is empty (column '{self.config.columns.text}')")
        dropped = set(empty)
        return dataset.select([i for i in range(len(dataset)) if i not in dropped])

    def _class_weights(self, train: Dataset, label_names: list[str]) -> list[float] | None:
        """task.class_weights as one weight per label: "balanced" is inverse class frequency."""
        weights = self.config.class_weights
        if weights is None:
            return None
        num_labels = len(label_names)
        if weights == "balanced":
            counts = np.bincount(np.asarray(train["label"]), minlength=num_labels)
            if (counts == 0).any():
                absent = [label_names[i] for i in np.flatnonzero(counts == 0)]
                raise UserError(f"task.class_weights=balanced: labels {absent} have no train examples")
            values = (counts.sum() / (num_labels * counts)).tolist()
        else:
            if len(weights) != num_labels:
                raise UserError(
                    f"task.class_weights has {len(weights)} weights for {num_labels} labels ({label_names})"
                )
            values = list(weights)
        log.info("class weights: %s", ", ".join(f"{n}={w:.4f}" for n, w in zip(label_names, values)))
        return values

    # -- model ---------------------------------------------------------------------------
    def model_config_kwargs(self, data: TaskData) -> dict[str, Any]:
        names = data.labels if self.kind != "regression" else ["score"]
        return {**label_config(names), "problem_type": PROBLEM_TYPES[self.kind]}

    def uses_text_pairs(self) -> bool:
        return self.config.columns.text_pair is not None

    def adapt_tokenizer(self, tokenizer: Any, family: str) -> None:
        if family == "decoder" and self.uses_text_pairs():
            ensure_pair_separator(tokenizer)

    # -- preprocessing -------------------------------------------------------------------
    def tokenize(self, data: TaskData, tokenizer: Any, max_length: int) -> Encoded:
        from datasets import DatasetDict

        pairs = self.uses_text_pairs()

        def encode(batch: dict[str, list[Any]]) -> Any:
            return tokenizer(
                batch["text"], batch["text_pair"] if pairs else None, truncation=True, max_length=max_length
            )

        tokenized = {}
        for name, split in data.splits.items():
            text_columns = [c for c in ("text", "text_pair") if c in split.column_names]
            split = split.map(encode, batched=True, remove_columns=text_columns, desc=f"Tokenizing {name}")
            if "label" in split.column_names:
                split = split.rename_column("label", "labels")
            tokenized[name] = split
        return Encoded(DatasetDict(tokenized))

    # -- training and evaluation ---------------------------------------------------------
    @property
    def best_metric(self) -> tuple[str, bool]:
        return self.metric, not self.metric.startswith(LOWER_IS_BETTER)

    def loss_function(self, data: TaskData, label_smoothing: float = 0.0) -> Any:
        if label_smoothing and self.kind != "single_label":
            log.warning("trainer.label_smoothing_factor applies to single-label classification only: ignored")
        return ClassificationLoss(self.kind, data.label_weights, label_smoothing)

    def scores(
        self, outputs: np.ndarray, references: np.ndarray, label_names: list[str], per_class: bool = False
    ) -> dict[str, Any]:
        if self.kind == "regression":
            scores = regression_scores(outputs.reshape(-1), references.reshape(-1))
            predictions = outputs.reshape(-1)
        elif self.kind == "multi_label":
            predicted = _sigmoid(outputs) >= self.config.threshold
            return multi_label_scores(predicted, references >= 0.5, label_names if per_class else None)
        else:
            predictions = np.argmax(outputs, axis=-1)
            scores = classification_scores(predictions, references, len(label_names))
        for metric in self.extra_metrics:
            scores.update(metric.compute(predictions, references))
        if per_class and self.kind == "single_label":
            scores["per_class"] = per_class_scores(predictions, references, label_names)
        return scores

    def metric_functions(self, data: TaskData, encoded: Encoded) -> MetricFunctions:
        def compute_metrics(eval_prediction: Any) -> dict[str, float]:
            return self.scores(eval_prediction.predictions, eval_prediction.label_ids, data.labels)

        return compute_metrics, None

    def evaluate(
        self, prediction: Any, split: str, data: TaskData, encoded: Encoded
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        examples = data.splits[split]
        records = self._records(prediction.predictions, examples, data.labels)
        if "label" not in examples.column_names:
            return None, records
        references = np.asarray(examples["label"])
        if not np.array_equal(references, prediction.label_ids):  # pragma: no cover - a bug guard
            raise RuntimeError("predictions came back in another order than the examples")
        results = dict(prediction.metrics or {})
        results.update(self.scores(prediction.predictions, references, data.labels, per_class=True))
        results["num_examples"] = len(references)
        return results, records

    def baseline(self, data: TaskData) -> Baseline | None:
        train = np.asarray(data.splits["train"]["label"])
        if self.kind == "regression":
            mean = float(train.astype(np.float64).mean())
            name, constant = f"the training mean, {mean:.4g}", np.array([mean])
        elif self.kind == "multi_label":
            # Each label as most training texts have it: present (a large logit) or absent.
            present = train.astype(np.float64).mean(axis=0) > 0.5
            name, constant = "each label as most training texts have it", np.where(present, 20.0, -20.0)
        else:
            counts = np.bincount(train, minlength=len(data.labels))
            tied = np.flatnonzero(counts == counts.max())
            majority = int(tied[0])
            if len(tied) > 1 and "validation" in data.splits:
                # A balanced label budget (8 a class) ties every class: the validation split's
                # counts break the tie, not the order of the label names.
                held_out = np.bincount(np.asarray(data.splits["validation"]["label"]), minlength=len(data.labels))
                majority = int(tied[held_out[tied].argmax()])
            name, constant = f"the majority class, '{data.labels[majority]}'", np.eye(len(data.labels))[majority]
        scores = {}
        for split, examples in data.splits.items():
            if split == "train" or "label" not in examples.column_names or not len(examples):
                continue
            references = np.asarray(examples["label"])
            outputs = np.tile(constant, (len(references), 1))
            scores[split] = self.scores(outputs, references, data.labels)
        return Baseline(name, scores)

    def _records(self, outputs: np.ndarray, examples: Dataset, label_names: list[str]) -> list[dict[str, Any]]:
        records = []
        for i, row in enumerate(examples):
            record = {"text": row["text"]}
            if "text_pair" in row:
                record["text_pair"] = row["text_pair"]
            record.update(self._record_labels(outputs[i], row.get("label"), label_names))
            records.append(record)
        return records

    def _record_labels(self, output: np.ndarray, label: Any, label_names: list[str]) -> dict[str, Any]:
        if self.kind == "regression":
            return {**({"label": label} if label is not None else {}), "prediction": round(float(output[0]), 6)}
        if self.kind == "multi_label":
            probabilities = _sigmoid(output)
            chosen = [n for n, p in zip(label_names, probabilities) if p >= self.config.threshold]
            record = {"labels": [n for n, v in zip(label_names, label) if v >= 0.5]} if label is not None else {}
            return {
                **record,
                "prediction": chosen,
                "scores": {n: round(float(p), 6) for n, p in zip(label_names, probabilities)},
            }
        probabilities = _softmax(output)
        best = int(probabilities.argmax())
        record = {"label": label_names[label]} if label is not None else {}
        return {**record, "prediction": label_names[best], "score": round(float(probabilities[best]), 6)}

    # -- prediction with a trained model -------------------------------------------------
    @classmethod
    def prediction_settings(cls, task_config: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
        return {"threshold": task_config.get("threshold", TextClassificationConfig.threshold),
                **recorded_max_length(metrics)}  # fmt: skip

    @classmethod
    def predictor(cls, model: str, settings: dict[str, Any], revision: str | None, device: str | None) -> Any:
        return ClassificationPredictor(settings, load_pipeline(cls.pipeline_task, model, revision, device))


class ClassificationPredictor(PipelinePredictor):
    """{"label", "score"}; multi-label: {"labels", "scores"}; regression: {"score"}."""

    def run(self, chunk: list[dict[str, Any]], batch_size: int) -> list[dict[str, Any]]:
        inputs = [r if "text_pair" in r else r["text"] for r in chunk]
        self.count_cut(inputs)
        return [self.output(o) for o in self.pipe(inputs, batch_size=batch_size, top_k=None, truncation=True)]

    def output(self, scores: list[dict[str, Any]]) -> dict[str, Any]:
        problem_type = getattr(self.pipe.model.config, "problem_type", None)
        if problem_type == "regression":
            return {"score": round(float(scores[0]["score"]), 6)}
        if problem_type == "multi_label_classification":
            threshold = self.settings.get("threshold", TextClassificationConfig.threshold)
            return {
                "labels": [s["label"] for s in scores if s["score"] >= threshold],
                "scores": {s["label"]: round(float(s["score"]), 6) for s in scores},
            }
        best = max(scores, key=lambda s: s["score"])
        return {"label": best["label"], "score": round(float(best["score"]), 6)}


class ClassificationLoss:
    """The head's loss, as the model computes it (cross-entropy, binary cross-entropy per label,
    or squared error: a mean over the batch), as its share of the whole optimizer step (see
    Task.loss_function). With class weights the cross-entropy is torch's weighted mean,
    sum(w[y] * loss) / sum(w[y]) over the batch."""

    def __init__(self, kind: str, weights: list[float] | None = None, label_smoothing: float = 0.0):
        self.kind = kind
        self.weights = weights
        self.smoothing = label_smoothing

    def __call__(self, outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        import torch.nn.functional as F

        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        if self.kind == "single_label":
            weight = logits.new_tensor(self.weights) if self.weights is not None else None
            loss = F.cross_entropy(
                logits.view(-1, logits.shape[-1]), labels.view(-1), weight=weight, label_smoothing=self.smoothing
            )
        elif self.kind == "multi_label":
            loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        else:  # one number per text, as the model's own MSELoss reads it
            loss = F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        return mean_share_of_step(loss, labels.numel(), num_items_in_batch)


def _warn_near_duplicates(names: set[Any], column: str) -> None:
    """Label names that differ only in case ('Pos' and 'pos'): likely one class written two ways."""
    groups: dict[str, list[str]] = {}
    for name in sorted(str(n) for n in names):
        groups.setdefault(name.casefold(), []).append(name)
    for spellings in groups.values():
        if len(spellings) > 1:
            log.warning(
                "column '%s': labels %s differ only in case and are separate classes; if they are one, map "
                "them to one name with task.label_map", column, " and ".join(repr(s) for s in spellings),
            )  # fmt: skip


def _set_labels(dataset: Dataset, column: str) -> list[Any]:
    """An extra set's label values as written: names for a ClassLabel (-1: none, as datasets
    says), else the values themselves (-1 is a label another corpus may well use)."""
    from datasets import ClassLabel

    feature, values = dataset.features[column], dataset[column]
    if isinstance(feature, ClassLabel):
        return [feature.int2str(v) if v is not None and v >= 0 else None for v in values]
    return list(values)


def _texts(split: Dataset) -> list[Any]:
    pairs = "text_pair" in split.column_names
    return list(zip(split["text"], split["text_pair"])) if pairs else list(split["text"])


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def _first_rows(rows: list[int], shown: int = 5) -> str:
    """'rows 3, 17 and 40' (numbered from 1, as a spreadsheet numbers the rows under its header)."""
    numbers = [str(r + 1) for r in rows[:shown]]
    more = f" and {len(rows) - shown:,} more" if len(rows) > shown else ""
    return f"row{'s' if len(rows) > 1 else ''} {', '.join(numbers)}{more}"


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _refuse_measurements(labels: list[Any], column: str) -> None:
    """Labels with decimals (0.158, 4.358, ...) are measurements, not classes: a classifier of
    them would have as many classes as rows."""
    fractional = sorted({v for v in labels if isinstance(v, float) and not math.isnan(v) and not v.is_integer()})
    if len(fractional) > 1:
        examples = ", ".join(f"{v:g}" for v in fractional[:3])
        raise UserError(
            f"column '{column}' holds numbers with decimals ({examples}, ...: {len(fractional)} distinct in the "
            "train split), not classes: for a number per text set task.problem_type=regression"
        )
