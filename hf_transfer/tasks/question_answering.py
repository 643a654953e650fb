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
from hf_transfer.errors import UserError
from hf_transfer.tasks.base import Task

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
    sort_eval_by_length = False  # windows are matched back to their examples by position
    training_defaults = {"label_names": ["start_positions", "end_positions"]}

    def __init__(self, config: QuestionAnsweringConfig, seed: int):
        super().__init__(config, seed)
        self.windows: dict[str, Dataset] = {}  # per split: example id and offsets of each window
        self.examples: dict[str, Dataset] = {}

    # -- data ---------------------------------------------------------------------------
    def prepare(self, raw: DatasetDict) -> DatasetDict:
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
        return DatasetDict(prepared)

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

    def tokenize(self, splits: DatasetDict, tokenizer: Any, max_length: int) -> DatasetDict:
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

        tokenized = {}
        for name, split in splits.items():
            if name == "train":
                tokenized[name] = split.map(train_features, batched=True, remove_columns=split.column_names,
                                            desc="Tokenizing train")  # fmt: skip
            else:
                features = split.map(eval_features, batched=True, remove_columns=split.column_names,
                                     desc=f"Tokenizing {name}")  # fmt: skip
                self.windows[name] = features.select_columns(["example_id", "offset_mapping"])
                self.examples[name] = split
                tokenized[name] = features.remove_columns(["example_id", "offset_mapping"])
        return DatasetDict(tokenized)

    # -- training and evaluation ---------------------------------------------------------
    @property
    def best_metric(self) -> tuple[str, bool]:
        return self.config.metric_for_best_model, True

    def compute_metrics(self, eval_prediction: Any) -> dict[str, float]:
        # During training the Trainer evaluates the validation split, in its order.
        answers = self.answers(eval_prediction.predictions, "validation")
        return squad_scores(answers, self.examples["validation"])

    def answers(self, predictions: Any, split: str) -> dict[str, str]:
        start_logits, end_logits = predictions[:2]
        return best_answers(
            self.examples[split], self.windows[split], start_logits, end_logits, self.config.n_best,
            self.config.max_answer_length,
        )  # fmt: skip

    def decode(self, prediction: Any, name: str) -> dict[str, str]:
        return self.answers(prediction.predictions, name)

    def evaluate(self, prediction: Any, split: Dataset, decoded: Any = None) -> dict[str, Any]:
        results = dict(prediction.metrics or {})
        results.update(squad_scores(decoded, split))
        results["num_examples"] = len(split)
        return results

    def prediction_records(self, prediction: Any, split: Dataset, decoded: Any = None) -> list[dict[str, Any]]:
        answers = decoded
        return [
            {
                "id": row["id"],
                "question": row["question"],
                "answer": answers[row["id"]],
                "answers": row["answers"]["text"],
            }
            for row in split
        ]

    def usage_snippet(self, model_ref: str) -> str:
        # transformers 5 has no question-answering pipeline: hf_transfer's own reader does the
        # windowing and span search the run used.
        return (
            "from hf_transfer.predict import load_predictor\n\n"
            f'reader = load_predictor("{model_ref}")\n'
            'print(next(reader.predict([{"question": "Where does Alice live?", "context": "Alice lives in Paris."}], 8)))\n'
            "# or, on the command line: hf-transfer predict MODEL --file questions.jsonl  (question, context keys)\n"
        )


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
