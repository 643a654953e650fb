"""Text classification: one text or a pair of texts -> one of N labels.

Labels may be strings or integers in the data; `label_map` renames them, `drop_labels` drops
rows, `labels` fixes the order of the ids. The saved model config carries id2label/label2id,
so `pipeline("text-classification")` shows label names.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hf_transfer.data import DatasetConfig, require_columns
from hf_transfer.errors import UserError
from hf_transfer.metrics import classification_scores, load_extra_metrics, per_class_scores
from hf_transfer.tasks.base import Task

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

log = logging.getLogger(__name__)

BUILTIN_METRICS = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "loss")


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
    # Label names in id order; by default the data's own names, else the sorted values.
    labels: list[str] | None = None
    # Renames raw label values (strings or integers) to label names.
    label_map: dict[str | int, str] | None = None
    # Raw label values whose rows are dropped (the "plot" rows of Rotten Tomatoes).
    drop_labels: list[str | int] = field(default_factory=list)
    max_length: int | None = None
    # "balanced" (inverse class frequency in train) or one weight per label.
    class_weights: Literal["balanced"] | list[float] | None = None
    # Extra `evaluate` metrics: a hub name, a local path, or {path, name, kwargs}.
    metrics: list[str | dict[str, Any]] = field(default_factory=list)
    metric_for_best_model: str = "accuracy"


class TextClassification(Task):
    Config = TextClassificationConfig
    auto_model = "AutoModelForSequenceClassification"
    pipeline_task = "text-classification"
    peft_task_type = "SEQ_CLS"
    stratify_by = "label"

    def __init__(self, config: TextClassificationConfig, seed: int):
        super().__init__(config, seed)
        self.label_names: list[str] = []
        self.class_weight_values: list[float] | None = None
        self.extra_metrics = load_extra_metrics(config.metrics)
        known = list(BUILTIN_METRICS) + [m.name for m in self.extra_metrics]
        if not any(config.metric_for_best_model.startswith(k) for k in known):
            from hf_transfer.errors import did_you_mean

            raise UserError(
                f"task.metric_for_best_model '{config.metric_for_best_model}' is not a metric of this task"
                f"{did_you_mean(config.metric_for_best_model, known)}; choose one of: {', '.join(known)}"
            )

    # -- data ---------------------------------------------------------------------------
    def prepare(self, raw: DatasetDict) -> DatasetDict:
        from datasets import ClassLabel, DatasetDict

        columns = self.config.columns
        text_columns = {"task.columns.text": columns.text, "task.columns.text_pair": columns.text_pair}
        raw_labels: dict[str, list[Any]] = {}
        for split, dataset in raw.items():
            require_columns(dataset, text_columns, split)
            if split != "test" or columns.label in dataset.column_names:
                require_columns(dataset, {"task.columns.label": columns.label}, split)
                raw_labels[split] = self._raw_labels(dataset)
        self.label_names = self._label_names(raw_labels["train"])
        label_ids = {name: i for i, name in enumerate(self.label_names)}
        features = ClassLabel(names=self.label_names)

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
            rows, ids = self._map_labels(labels, label_ids, split)
            dataset = dataset.select(rows).add_column("label", ids)
            dataset = dataset.cast_column("label", features)
            prepared[split] = self._drop_empty_texts(dataset, split)
        self._set_class_weights(prepared["train"])
        log.info("labels: %s", ", ".join(f"{i}={n}" for i, n in enumerate(self.label_names)))
        return DatasetDict(prepared)

    def _raw_labels(self, dataset: Dataset) -> list[Any]:
        """Label values as written in the data; None for a missing one (null or a negative id)."""
        from datasets import ClassLabel

        feature = dataset.features[self.config.columns.label]
        values = dataset[self.config.columns.label]
        if isinstance(feature, ClassLabel):
            return [feature.int2str(v) if v is not None and v >= 0 else None for v in values]
        return [None if v is None or (isinstance(v, int) and v < 0) else v for v in values]

    def _mapped(self, value: Any) -> Any:
        label_map = self.config.label_map
        if label_map is None:
            return str(value)
        for key, name in label_map.items():
            if str(key) == str(value):
                return name
        return None

    def _label_names(self, train_labels: list[Any]) -> list[str]:
        dropped = {str(v) for v in self.config.drop_labels}
        present = [v for v in train_labels if v is not None and str(v) not in dropped]
        unmapped = sorted({str(v) for v in present if self._mapped(v) is None})
        if unmapped:
            raise UserError(
                f"label values {unmapped} of column '{self.config.columns.label}' are not in task.label_map; "
                "map them, or list them in task.drop_labels"
            )
        found = {self._mapped(v) for v in present}
        if self.config.labels is not None:
            names = list(self.config.labels)
            missing = sorted(found - set(names))
            if missing:
                raise UserError(f"labels {missing} occur in the train split but are not in task.labels")
            return names
        if self.config.label_map is not None:
            return list(dict.fromkeys(n for n in self.config.label_map.values() if n in found))
        if all(isinstance(v, int) for v in present):
            return [str(v) for v in sorted({int(v) for v in present})]
        return sorted(found)

    def _map_labels(self, labels: list[Any], label_ids: dict[str, int], split: str) -> tuple[list[int], list[int]]:
        dropped = {str(v) for v in self.config.drop_labels}
        rows, ids, unknown, missing = [], [], Counter(), 0
        for row, value in enumerate(labels):
            if value is None:
                missing += 1
                continue
            if str(value) in dropped:
                continue
            name = self._mapped(value)
            if name not in label_ids:
                unknown[str(value)] += 1
                continue
            rows.append(row)
            ids.append(label_ids[name])
        if missing:
            raise UserError(
                f"{missing} rows of the {split} split have no label in column '{self.config.columns.label}'; "
                "fill them in or remove them"
            )
        if unknown:
            raise UserError(
                f"the {split} split has label values not seen in train or task.labels: {dict(unknown)}; "
                "add them to task.labels, map them with task.label_map, or drop them with task.drop_labels"
            )
        if len(rows) < len(labels):
            log.info("%s: dropped %d rows with labels in task.drop_labels", split, len(labels) - len(rows))
        return rows, ids

    def _drop_empty_texts(self, dataset: Dataset, split: str) -> Dataset:
        columns = [c for c in ("text", "text_pair") if c in dataset.column_names]
        kept = dataset.filter(
            lambda batch: [all(isinstance(batch[c][i], str) for c in columns) for i in range(len(batch["text"]))],
            batched=True,
            desc=f"Checking {split} texts",
        )
        if len(kept) < len(dataset):
            log.warning("%s: dropped %d rows with an empty text", split, len(dataset) - len(kept))
        return kept

    def _set_class_weights(self, train: Dataset) -> None:
        weights = self.config.class_weights
        if weights is None:
            return
        num_labels = len(self.label_names)
        if weights == "balanced":
            counts = np.bincount(np.asarray(train["label"]), minlength=num_labels)
            if (counts == 0).any():
                absent = [self.label_names[i] for i in np.flatnonzero(counts == 0)]
                raise UserError(f"task.class_weights=balanced: labels {absent} have no train examples")
            self.class_weight_values = (counts.sum() / (num_labels * counts)).tolist()
        else:
            if len(weights) != num_labels:
                raise UserError(
                    f"task.class_weights has {len(weights)} weights for {num_labels} labels ({self.label_names})"
                )
            self.class_weight_values = list(weights)
        log.info("class weights: %s", dict(zip(self.label_names, np.round(self.class_weight_values, 4))))

    def is_labeled(self, split: Dataset) -> bool:
        return "label" in split.column_names

    # -- model ---------------------------------------------------------------------------
    def model_config_kwargs(self) -> dict[str, Any]:
        return {
            "num_labels": len(self.label_names),
            "id2label": dict(enumerate(self.label_names)),
            "label2id": {name: i for i, name in enumerate(self.label_names)},
            "problem_type": "single_label_classification",
        }

    def uses_text_pairs(self) -> bool:
        return self.config.columns.text_pair is not None

    # -- preprocessing -------------------------------------------------------------------
    def tokenize(self, splits: DatasetDict, tokenizer: Any, max_length: int) -> DatasetDict:
        pairs = self.uses_text_pairs()

        def encode(batch: dict[str, list[Any]]) -> Any:
            return tokenizer(
                batch["text"], batch["text_pair"] if pairs else None, truncation=True, max_length=max_length
            )

        tokenized = {}
        for name, split in splits.items():
            text_columns = [c for c in ("text", "text_pair") if c in split.column_names]
            split = split.map(encode, batched=True, remove_columns=text_columns, desc=f"Tokenizing {name}")
            if "label" in split.column_names:
                split = split.rename_column("label", "labels")
            tokenized[name] = split
        from datasets import DatasetDict

        return DatasetDict(tokenized)

    # -- training and evaluation ---------------------------------------------------------
    @property
    def best_metric(self) -> tuple[str, bool]:
        name = self.config.metric_for_best_model
        return name, name != "loss"

    def loss_function(self) -> Any:
        if self.class_weight_values is None:
            return None
        return WeightedCrossEntropy(self.class_weight_values)

    def compute_metrics(self, eval_prediction: Any) -> dict[str, float]:
        logits, references = eval_prediction.predictions, eval_prediction.label_ids
        predictions = np.argmax(logits, axis=-1)
        scores = classification_scores(predictions, references, len(self.label_names))
        for metric in self.extra_metrics:
            scores.update(metric.compute(predictions, references))
        return scores

    def evaluate(self, prediction: Any, split: Dataset) -> dict[str, Any]:
        predictions = np.argmax(prediction.predictions, axis=-1)
        references = np.asarray(split["label"])
        if not np.array_equal(references, prediction.label_ids):  # pragma: no cover - a bug guard
            raise RuntimeError("predictions came back in another order than the examples")
        results = dict(prediction.metrics or {})
        results.update(classification_scores(predictions, references, len(self.label_names)))
        results["per_class"] = per_class_scores(predictions, references, self.label_names)
        results["num_examples"] = len(references)
        return results

    def prediction_records(self, prediction: Any, split: Dataset) -> list[dict[str, Any]]:
        probabilities = _softmax(prediction.predictions)
        best = probabilities.argmax(axis=-1)
        records = []
        for i, row in enumerate(split):
            record = {"text": row["text"]}
            if "text_pair" in row:
                record["text_pair"] = row["text_pair"]
            if "label" in row:
                record["label"] = self.label_names[row["label"]]
            record["prediction"] = self.label_names[best[i]]
            record["score"] = round(float(probabilities[i, best[i]]), 6)
            records.append(record)
        return records


class WeightedCrossEntropy:
    """Cross-entropy with per-class weights: sum(w[y] * loss) / sum(w[y]) over the batch."""

    def __init__(self, weights: list[float]):
        self.weights = weights

    def __call__(self, outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        import torch

        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        weight = torch.tensor(self.weights, dtype=logits.dtype, device=logits.device)
        return torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), weight=weight)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
