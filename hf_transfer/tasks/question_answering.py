"""Extractive question answering (SQuAD format): find the answer's span in the context.

Columns: an id, the context, the question, and `answers` as SQuAD writes them
({"text": [...], "answer_start": [...]}). Long contexts are split into windows of
`max_length` tokens overlapping by `doc_stride`; the model's start and end logits are mapped
back to character offsets in the context, and the best span (the `n_best` starts and ends of
each window, spans of at most `max_answer_length` tokens) is the answer. Metrics: exact match
and F1 over answer words, as the SQuAD script computes them.
"""

from __future__ import annotations

import collections
import logging
import re
import string
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hf_transfer.data import DatasetConfig, require_columns
from hf_transfer.device import hub_kernels
from hf_transfer.errors import UserError
from hf_transfer.tasks.base import Encoded, MetricFunctions, Predictor, Task, TaskData

# Imported inside the functions that use them, not here: torch, transformers and datasets. This module
# is on the path of --help and of a config error, which stay quick (tests/test_architecture.py).

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

log = logging.getLogger(__name__)


@dataclass
class Columns:
    id: str | None = "id"  # made from the row number when null
    context: str = "context"
    question: str = "question"
    answers: str = "answers"


@dataclass
class QuestionAnsweringConfig:
    type: Literal["question_answering"]
    data: DatasetConfig
    name: str | None = None
    columns: Columns = field(default_factory=Columns)
    max_length: int | None = 384
    doc_stride: int = 128
    n_best: int = 20
    max_answer_length: int = 30
    metric_for_best_model: Literal["f1", "exact_match"] = "f1"

    def __post_init__(self) -> None:
        if self.max_length is not None and self.doc_stride >= self.max_length:
            raise ValueError("task.doc_stride must be smaller than task.max_length")


class QuestionAnswering(Task):
    Config = QuestionAnsweringConfig
    auto_model = "AutoModelForQuestionAnswering"
    pipeline_task = "question-answering"
    peft_task_type = "QUESTION_ANS"
    sort_eval_by_length = False  # the Trainer's evaluations match windows to examples by position
    cuts_long_inputs = False  # a long context is read in overlapping windows
    training_defaults = {"label_names": ["start_positions", "end_positions"]}

    # -- data ---------------------------------------------------------------------------
    def prepare(self, raw: DatasetDict) -> TaskData:
        from datasets import DatasetDict

        columns = self.config.columns
        keys = {"task.columns.context": columns.context, "task.columns.question": columns.question,
                "task.columns.answers": columns.answers, "task.columns.id": columns.id}  # fmt: skip
        prepared = {}
        for split, dataset in raw.items():
            require_columns(dataset, keys, split)
            if columns.id is None:
                dataset = dataset.add_column("id", [f"{split}-{i}" for i in range(len(dataset))])
            renames = {columns.context: "context", columns.question: "question", columns.answers: "answers"}
            if columns.id:
                renames[columns.id] = "id"
            dataset = dataset.rename_columns({k: v for k, v in renames.items() if k != v})
            dataset = dataset.select_columns(["id", "context", "question", "answers"])
            self._check_answers(dataset, split)
            prepared[split] = dataset
        return TaskData(DatasetDict(prepared))

    def _check_answers(self, dataset: Dataset, split: str) -> None:
        for row in dataset.select(range(min(len(dataset), 1000))):
            answers = row["answers"]
            if not isinstance(answers, dict) or set(answers) < {"text", "answer_start"}:
                raise UserError(
                    f"column 'answers' of the {split} split must be SQuAD-style: "
                    '{"text": [...], "answer_start": [...]}; got ' + repr(answers)[:80]
                )
            for text, start in zip(answers["text"], answers["answer_start"]):
                if row["context"][start : start + len(text)] != text:
                    raise UserError(
                        f"{split} example {row['id']}: answer {text!r} is not at character {start} of its context"
                    )

    # -- preprocessing -------------------------------------------------------------------
    def adapt_tokenizer(self, tokenizer: Any, family: str) -> None:
        # Checked before the model loads: the answer spans need both.
        if not getattr(tokenizer, "is_fast", False):
            raise UserError("question answering needs a fast tokenizer (to map tokens back to characters)")
        if tokenizer.padding_side != "right":
            raise UserError("question answering needs a tokenizer that pads on the right")

    def tokenize(self, data: TaskData, tokenizer: Any, max_length: int) -> Encoded:
        from datasets import DatasetDict

        def windows(batch: dict[str, list[Any]]) -> Any:
            return encode_windows(tokenizer, batch["question"], batch["context"], max_length, self.config.doc_stride)

        def positions(batch: dict[str, list[Any]], encoded: Any) -> None:
            # Evaluation windows get them too: the Trainer then reports a loss, and scores.
            starts, ends = [], []
            for i, offsets in enumerate(encoded["offset_mapping"]):
                answer = batch["answers"][encoded["overflow_to_sample_mapping"][i]]
                start, end = _answer_tokens(answer, offsets, encoded.sequence_ids(i))
                starts.append(start)
                ends.append(end)
            encoded["start_positions"], encoded["end_positions"] = starts, ends

        def train_features(batch: dict[str, list[Any]]) -> Any:
            encoded = windows(batch)
            positions(batch, encoded)
            encoded.pop("offset_mapping")
            encoded.pop("overflow_to_sample_mapping")
            return encoded

        def eval_features(batch: dict[str, list[Any]]) -> Any:
            encoded = windows(batch)
            positions(batch, encoded)
            encoded["example_id"] = [batch["id"][i] for i in encoded.pop("overflow_to_sample_mapping")]
            encoded["offset_mapping"] = context_offsets(encoded)
            return encoded

        tokenized, spans = {}, {}
        for name, split in data.splits.items():
            if name == "train":
                tokenized[name] = split.map(train_features, batched=True, remove_columns=split.column_names,
                                            desc="Tokenizing train")  # fmt: skip
            else:
                features = split.map(eval_features, batched=True, remove_columns=split.column_names,
                                     desc=f"Tokenizing {name}")  # fmt: skip
                spans[name] = features.select_columns(["example_id", "offset_mapping"])  # answers back to text
                tokenized[name] = features.remove_columns(["example_id", "offset_mapping"])
        return Encoded(DatasetDict(tokenized), decoding=spans)

    # -- training and evaluation ---------------------------------------------------------
    @property
    def best_metric(self) -> tuple[str, bool]:
        return self.config.metric_for_best_model, True

    def answers(self, predictions: Any, examples: Dataset, windows: Dataset) -> dict[str, str]:
        start_logits, end_logits = predictions[:2]
        return best_answers(
            examples, windows, start_logits, end_logits, self.config.n_best, self.config.max_answer_length
        )

    def metric_functions(self, data: TaskData, encoded: Encoded) -> MetricFunctions:
        # During training the Trainer evaluates the validation split, in its order.
        examples, windows = data.splits["validation"], encoded.decoding["validation"]

        def compute_metrics(eval_prediction: Any) -> dict[str, float]:
            return squad_scores(self.answers(eval_prediction.predictions, examples, windows), examples)

        return compute_metrics, None

    def evaluate(
        self, prediction: Any, split: str, data: TaskData, encoded: Encoded
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        examples = data.splits[split]
        answers = self.answers(prediction.predictions, examples, encoded.decoding[split])
        results = dict(prediction.metrics or {})
        results.update(squad_scores(answers, examples))
        results["num_examples"] = len(examples)
        records = [
            {
                "id": row["id"],
                "question": row["question"],
                "answer": answers[row["id"]],
                "answers": row["answers"]["text"],
            }
            for row in examples
        ]
        return results, records

    def usage_snippet(self, model_ref: str, custom_code: bool = False) -> str:
        # transformers 5 has no question-answering pipeline: hf_transfer's own reader does the
        # windowing and span search the run used.
        return (
            "from hf_transfer.predict import load_predictor\n\n"
            f'reader = load_predictor("{model_ref}")\n'
            'print(next(reader.predict([{"question": "Where does Alice live?", "context": "Alice lives in Paris."}], 8)))\n'
            "# or, on the command line: hf-transfer predict MODEL --file questions.jsonl  (question, context keys)\n"
        )

    # -- prediction with a trained model -------------------------------------------------
    @classmethod
    def prediction_settings(cls, task_config: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
        defaults = QuestionAnsweringConfig
        settings = {
            key: task_config.get(key, getattr(defaults, key)) for key in ("doc_stride", "n_best", "max_answer_length")
        }
        # Left to its default (null), the length was the model's limit: the run recorded what it used.
        settings["max_length"] = task_config.get("max_length", defaults.max_length) or metrics.get("max_length")
        return settings

    @classmethod
    def predictor(cls, model: str, settings: dict[str, Any], revision: str | None, device: str | None) -> Predictor:
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        qa_model = AutoModelForQuestionAnswering.from_pretrained(model, revision=revision, use_kernels=hub_kernels())
        if device:
            qa_model = qa_model.to(device)
        return Reader(settings, qa_model, AutoTokenizer.from_pretrained(model, revision=revision))

    @classmethod
    def prediction_inputs(cls, records: list[dict[str, Any]], context: str | None) -> list[dict[str, Any]]:
        """Questions with their contexts: a file's question and context columns, or texts given
        as arguments with --context."""
        shaped = []
        for number, record in enumerate(records, 1):
            if "question" not in record:
                record = {"question": record["text"], "context": context}
            if not record.get("context"):
                raise UserError(
                    f"input {number}: a question needs a context: give --context, or a file with question and "
                    "context columns (keys)"
                )
            shaped.append(record)
        return shaped


class Reader(Predictor):
    """transformers 5 has no question-answering pipeline: the run's own windowing and span
    search, {"answer", "start", "end", "score"} per question."""

    def __init__(self, settings: dict[str, Any], model: Any, tokenizer: Any):
        super().__init__(settings)
        self.model = model.eval()
        self.tokenizer = tokenizer

    def run(self, chunk: list[dict[str, Any]], batch_size: int) -> list[dict[str, Any]]:
        import torch

        defaults = QuestionAnsweringConfig
        max_length = self.settings.get("max_length") or defaults.max_length
        stride = self.settings.get("doc_stride", defaults.doc_stride)
        encoded = encode_windows(
            self.tokenizer, [r["question"] for r in chunk], [r["context"] for r in chunk], max_length, stride
        )
        inputs = {k: encoded[k] for k in self.tokenizer.model_input_names if k in encoded}
        starts, ends = [], []
        device = next(self.model.parameters()).device
        for begin in range(0, len(encoded["input_ids"]), batch_size):
            batch = self.tokenizer.pad(
                {k: v[begin : begin + batch_size] for k, v in inputs.items()}, return_tensors="pt"
            )
            with torch.no_grad():
                out = self.model(**{k: v.to(device) for k, v in batch.items()})
            starts += list(out.start_logits.float().cpu().numpy())
            ends += list(out.end_logits.float().cpu().numpy())
        examples = [{"id": str(i), "context": r["context"]} for i, r in enumerate(chunk)]
        windows = {
            "example_id": [str(i) for i in encoded["overflow_to_sample_mapping"]],
            "offset_mapping": context_offsets(encoded),
        }
        width = max(len(s) for s in starts)
        padded = [np.pad(a, (0, width - len(a)), constant_values=-1e4) for a in starts]
        padded_ends = [np.pad(a, (0, width - len(a)), constant_values=-1e4) for a in ends]
        spans = best_answers(
            examples, windows, np.stack(padded), np.stack(padded_ends),
            self.settings.get("n_best", defaults.n_best),
            self.settings.get("max_answer_length", defaults.max_answer_length), with_spans=True,
        )  # fmt: skip
        return [spans[str(i)] for i in range(len(chunk))]


def encode_windows(tokenizer: Any, questions: list[str], contexts: list[str], max_length: int, stride: int) -> Any:
    """Question + context, the context cut into overlapping windows, with character offsets.
    The overlap is at most half a window (a longer one would leave little new context each)."""
    return tokenizer(
        [q.lstrip() for q in questions],
        contexts,
        truncation="only_second",
        max_length=max_length,
        stride=min(stride, max_length // 2),
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )


def context_offsets(encoded: Any) -> list[list[tuple[int, int] | None]]:
    """Each window's character offsets, None outside the context (answers come from it alone)."""
    return [
        [offset if sequence == 1 else None for offset, sequence in zip(offsets, encoded.sequence_ids(i))]
        for i, offsets in enumerate(encoded["offset_mapping"])
    ]


def _answer_tokens(
    answer: dict[str, list[Any]], offsets: list[tuple[int, int]], sequence: list[int | None]
) -> tuple[int, int]:
    """The token span of the first answer inside this window; (0, 0) (the first token) if none."""
    if not answer["text"]:
        return 0, 0
    start_char = answer["answer_start"][0]
    end_char = start_char + len(answer["text"][0])
    context = [i for i, s in enumerate(sequence) if s == 1]
    first, last = context[0], context[-1]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return 0, 0
    start = first
    while start <= last and offsets[start][0] <= start_char:
        start += 1
    end = last
    while end >= first and offsets[end][1] >= end_char:
        end -= 1
    return start - 1, end + 1


def best_answers(
    examples: Dataset,
    windows: Dataset,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best: int,
    max_answer_length: int,
    with_spans: bool = False,
) -> dict[str, Any]:
    """The highest-scoring valid span (start + end logit) of each example, as context text
    (with `with_spans`: {"answer", "start", "end", "score"}, character offsets)."""
    by_example = collections.defaultdict(list)
    for index, example_id in enumerate(windows["example_id"]):
        by_example[example_id].append(index)
    offsets_of = windows["offset_mapping"]
    answers: dict[str, Any] = {}
    for example in examples:
        best_score, best_text, best_span = -np.inf, "", (0, 0)
        for index in by_example[example["id"]]:
            offsets = offsets_of[index]
            starts, ends = start_logits[index][: len(offsets)], end_logits[index][: len(offsets)]
            for start in np.argsort(starts)[::-1][:n_best]:
                for end in np.argsort(ends)[::-1][:n_best]:
                    if offsets[start] is None or offsets[end] is None:
                        continue
                    if end < start or end - start + 1 > max_answer_length:
                        continue
                    score = starts[start] + ends[end]
                    if score > best_score:
                        best_score, best_span = score, (offsets[start][0], offsets[end][1])
                        best_text = example["context"][best_span[0] : best_span[1]]
        if with_spans:
            found = bool(np.isfinite(best_score))
            answers[example["id"]] = {"answer": best_text, "start": int(best_span[0]), "end": int(best_span[1]),
                                      "score": round(float(best_score), 6) if found else None}  # fmt: skip
        else:
            answers[example["id"]] = best_text
    return answers


# -- SQuAD metrics ------------------------------------------------------------------------
def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (the SQuAD v1.1 script)."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def answer_f1(prediction: str, truth: str) -> float:
    predicted, actual = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = collections.Counter(predicted) & collections.Counter(actual)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(actual)
    return 2 * precision * recall / (precision + recall)


def squad_scores(answers: dict[str, str], examples: Dataset) -> dict[str, float]:
    """Exact match and F1 in percent, each the best over an example's gold answers."""
    exact = f1 = 0.0
    for example in examples:
        truths = example["answers"]["text"] or [""]
        prediction = answers.get(example["id"], "")
        exact += max(float(normalize_answer(prediction) == normalize_answer(t)) for t in truths)
        f1 += max(answer_f1(prediction, t) for t in truths)
    count = max(len(examples), 1)
    return {"exact_match": 100 * exact / count, "f1": 100 * f1 / count}
