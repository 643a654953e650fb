"""Causal language modelling: go on training a GPT-family decoder on your text.

Data: plain text files (one row per line, line breaks kept) or a text column. With `packing`
the texts are joined (an end-of-text token after each document) and cut into blocks of
`max_length` tokens; without it, each row is one example, padded, and its end-of-text token
stays a learned target even where it doubles as the pad token (padding is masked by the
attention mask, not by token id). Metric: perplexity. Held-out perplexity is measured before
and after training, and continuations of `generation.prompts` are written to the run folder
from the model before and after training, so the change is visible.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from hf_transfer.data import DatasetConfig, files_by_split, format_for, require_columns
from hf_transfer.errors import UserError
from hf_transfer.models import CAUSAL_LM_ENDINGS
from hf_transfer.tasks.base import (
    Encoded,
    MetricFunctions,
    PipelinePredictor,
    Task,
    TaskData,
    labelled_cross_entropy,
    load_pipeline,
    trust_remote_code,
)

# Imported inside the functions that use them, not here: torch, transformers and datasets. This module
# is on the path of --help and of a config error, which stay quick (tests/test_architecture.py).

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

log = logging.getLogger(__name__)

BLOCK_CAP = 1024  # a default block beyond this is rarely what a fine-tuning run wants
IGNORED = -100


@dataclass
class Columns:
    text: str = "text"


@dataclass
class Generation:
    prompts: list[str] = field(default_factory=list)
    max_new_tokens: int = 40
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0


@dataclass
class CausalLMConfig:
    type: Literal["causal_lm"]
    data: DatasetConfig
    name: str | None = None
    columns: Columns = field(default_factory=Columns)
    # Join texts and cut them into blocks of max_length tokens (else one padded example per row).
    packing: bool = True
    # The block (packing) or truncation length; default: the model's limit, at most 1024.
    max_length: int | None = None
    # An end-of-text token after each text; default: yes, unless the rows are lines of a file.
    add_eos: bool | None = None
    generation: Generation = field(default_factory=Generation)
    metric_for_best_model: Literal["loss", "perplexity"] = "loss"


class CausalLM(Task):
    Config = CausalLMConfig
    auto_model = "AutoModelForCausalLM"
    pipeline_task = "text-generation"
    peft_task_type = "CAUSAL_LM"
    new_head = False  # the pretrained output layer is the head
    evaluate_before_training = True
    cuts_long_inputs = False  # texts are packed into blocks (task.packing), and the block is its own length

    @classmethod
    def architecture_endings(cls) -> tuple[str, ...]:
        return CAUSAL_LM_ENDINGS

    # -- data ---------------------------------------------------------------------------
    def _rows_are_lines(self) -> bool:
        data = self.config.data
        files = files_by_split(data.data_files or {}, Path())
        names = [data.source or ""] + [str(path) for paths in files.values() for path in paths]
        return any(format_for(Path(name.split("#")[0]), data.format) == "text" for name in names if name)

    def prepare(self, raw: DatasetDict) -> TaskData:
        from datasets import DatasetDict

        column = self.config.columns.text
        prepared = {}
        for split, dataset in raw.items():
            require_columns(dataset, {"task.columns.text": column}, split)
            dataset = (
                dataset.select_columns([column]).rename_column(column, "text")
                if column != "text"
                else dataset.select_columns(["text"])
            )
            prepared[split] = dataset.filter(
                lambda row: isinstance(row["text"], str) and row["text"] != "", desc=f"Checking {split}"
            )
        return TaskData(DatasetDict(prepared))

    # -- preprocessing -------------------------------------------------------------------
    def tokenize(self, data: TaskData, tokenizer: Any, max_length: int) -> Encoded:
        from datasets import DatasetDict

        block = min(max_length, BLOCK_CAP) if self.config.max_length is None else max_length
        add_eos = self.config.add_eos if self.config.add_eos is not None else not self._rows_are_lines()
        if tokenizer.eos_token_id is None and (add_eos or not self.config.packing):
            raise UserError("the tokenizer has no end-of-text token: set task.add_eos=false and task.packing=true")
        log.info("causal LM: %s of %d tokens%s", "packed blocks" if self.config.packing else "rows cut at", block,
                 ", end-of-text after each text" if add_eos else "")  # fmt: skip
        tokenized = {}
        for name, split in data.splits.items():
            if self.config.packing:
                tokenized[name] = self._packed(split, tokenizer, block, add_eos, name)
            else:
                tokenized[name] = self._rows(split, tokenizer, block, name)
            if len(tokenized[name]) == 0:
                raise UserError(f"the {name} split holds no text to train or evaluate on")
        return Encoded(DatasetDict(tokenized))

    def _packed(self, split: Dataset, tokenizer: Any, block: int, add_eos: bool, name: str) -> Dataset:
        eos = [tokenizer.eos_token_id] if add_eos else []

        def encode(batch: dict[str, list[str]]) -> dict[str, Any]:
            ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
            return {"input_ids": [row + eos for row in ids]}

        def group(batch: dict[str, list[list[int]]]) -> dict[str, Any]:
            joined = list(chain.from_iterable(batch["input_ids"]))
            # Whole blocks; a split shorter than one block is kept as one shorter block.
            size = len(joined) - len(joined) % block if len(joined) >= block else len(joined)
            blocks = [joined[i : i + block] for i in range(0, size, block)]
            return {
                "input_ids": blocks,
                "attention_mask": [[1] * len(b) for b in blocks],
                "labels": [[IGNORED, *b[1:]] for b in blocks],  # the first token is no target
            }

        encoded = split.map(encode, batched=True, remove_columns=split.column_names, desc=f"Tokenizing {name}")
        # One batch for the whole split: blocks run across documents, as packing means.
        return encoded.map(group, batched=True, batch_size=None, desc=f"Packing {name}")

    def _rows(self, split: Dataset, tokenizer: Any, block: int, name: str) -> Dataset:
        def encode(batch: dict[str, list[str]]) -> dict[str, Any]:
            # One example per row: a line's own line break is not part of it (end-of-text is).
            texts = [text.removesuffix("\n") for text in batch["text"]]
            encoded = tokenizer(texts, truncation=True, max_length=block - 1)
            return {
                "input_ids": [ids + [tokenizer.eos_token_id] for ids in encoded["input_ids"]],
                "attention_mask": [mask + [1] for mask in encoded["attention_mask"]],
            }

        return split.map(encode, batched=True, remove_columns=split.column_names, desc=f"Tokenizing {name}")

    def collator(self, tokenizer: Any, pad_to_multiple_of: int | None = None) -> Any:
        if self.config.packing:  # packed blocks all have one length already
            from transformers import default_data_collator

            return default_data_collator
        return PaddedCausalCollator(tokenizer, pad_to_multiple_of)

    # -- training and evaluation ---------------------------------------------------------
    @property
    def best_metric(self) -> tuple[str, bool]:
        # "perplexity" is per token over the split; "loss" the Trainer's mean of batch means.
        return self.config.metric_for_best_model, False

    def loss_function(self, data: TaskData, label_smoothing: float = 0.0) -> Any:
        return NextTokenLoss(label_smoothing)

    def metric_functions(self, data: TaskData, encoded: Encoded) -> MetricFunctions:
        def compute_metrics(eval_prediction: Any) -> dict[str, float]:
            loss = _token_mean_loss(eval_prediction.predictions)
            return {} if loss is None else {"perplexity": _perplexity(loss)}

        return compute_metrics, token_loss_sums

    def evaluate(
        self, prediction: Any, split: str, data: TaskData, encoded: Encoded
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        results = dict(prediction.metrics or {})
        token_loss = _token_mean_loss(prediction.predictions)
        if token_loss is not None:
            results["loss"] = token_loss
        results["perplexity"] = _perplexity(results.get("loss"))
        results["num_texts"] = len(data.splits[split])
        return results, []

    def generate(self, model: Any, tokenizer: Any) -> list[tuple[str, str]]:
        """Greedy (or sampled) continuations of the configured prompts."""
        import torch

        settings = self.config.generation
        if not settings.prompts:
            return []
        was_training = model.training
        model.eval()
        continuations = []
        device = next(model.parameters()).device
        for prompt in settings.prompts:
            inputs = tokenizer(prompt, return_tensors="pt").to(device)
            with torch.no_grad():
                output = model.generate(
                    **inputs,
                    max_new_tokens=settings.max_new_tokens,
                    do_sample=settings.do_sample,
                    temperature=settings.temperature if settings.do_sample else None,
                    top_p=settings.top_p if settings.do_sample else None,
                    pad_token_id=tokenizer.pad_token_id,
                )
            continuation = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            continuations.append((prompt, continuation))
        model.train(was_training)
        return continuations

    def usage_snippet(self, model_ref: str, custom_code: bool = False) -> str:
        return (
            "from transformers import pipeline\n\n"
            f'generate = pipeline("text-generation", model="{model_ref}"{trust_remote_code(custom_code)})\n'
            'print(generate("To be, or not to be", max_new_tokens=40)[0]["generated_text"])\n'
        )

    # -- prediction with a trained model -------------------------------------------------
    @classmethod
    def prediction_settings(cls, task_config: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
        generation = task_config.get("generation") or {}
        return {"max_new_tokens": generation.get("max_new_tokens", Generation.max_new_tokens)}

    @classmethod
    def prediction_inputs(cls, records: list[dict[str, Any]], context: str | None) -> list[dict[str, Any]]:
        for number, record in enumerate(records, 1):
            if not record["text"].strip():
                raise UserError(
                    f"input {number}: an empty prompt: a causal LM needs text to continue "
                    "(--skip-empty leaves empty inputs out)"
                )
        return records

    @classmethod
    def predictor(cls, model: str, settings: dict[str, Any], revision: str | None, device: str | None) -> Any:
        pipe = load_pipeline(cls.pipeline_task, model, revision, device)
        # Batched generation continues every row from its last token: pad on the left.
        pipe.tokenizer.padding_side = "left"
        if pipe.tokenizer.pad_token is None:
            pipe.tokenizer.pad_token = pipe.tokenizer.eos_token
        return GenerationPredictor(settings, pipe)


class GenerationPredictor(PipelinePredictor):
    """{"generated_text"}: greedy continuations of `max_new_tokens` tokens. A prompt and its
    continuation must fit the model's positions: a longer prompt keeps its last tokens."""

    long_texts = "continued from their last {max_length} tokens"

    def __init__(self, settings: dict[str, Any], pipe: Any):
        super().__init__(settings, pipe)
        self.new_tokens = settings.get("max_new_tokens", Generation.max_new_tokens)
        if self.max_length - self.new_tokens < 1:
            raise UserError(
                f"--max-new-tokens {self.new_tokens} leaves no room for a prompt in the model's {self.max_length} "
                "positions: ask for fewer new tokens"
            )
        self.max_length -= self.new_tokens
        pipe.tokenizer.model_max_length = self.max_length
        pipe.tokenizer.truncation_side = "left"  # the end of a prompt is what is continued

    def run(self, chunk: list[dict[str, Any]], batch_size: int) -> list[dict[str, Any]]:
        prompts = [r["text"] for r in chunk]
        self.count_cut(prompts)
        outputs = self.pipe(
            prompts,
            batch_size=batch_size,
            max_new_tokens=self.new_tokens,
            do_sample=False,
            return_full_text=False,
            truncation=True,
        )
        return [{"generated_text": output[0]["generated_text"]} for output in outputs]


def token_loss_sums(logits: Any, labels: Any) -> Any:
    """Each row's summed negative log-likelihood and its count of target tokens (the Trainer's
    preprocess_logits_for_metrics).

    The Trainer's evaluation loss is a mean of batch means, each weighted by its rows:
    unpacked rows differ in length, and that is not the corpus perplexity. These sums
    are (and the vocabulary-sized logits are not kept).
    """
    import torch

    if isinstance(logits, tuple):
        logits = logits[0]
    targets = labels[:, 1:]
    sums = torch.stack(
        [
            torch.nn.functional.cross_entropy(
                row_logits[:-1].float(), row_targets, ignore_index=IGNORED, reduction="sum"
            )
            for row_logits, row_targets in zip(logits, targets)
        ]
    )
    return torch.stack([sums, (targets != IGNORED).sum(dim=1).to(sums.dtype)], dim=1)


class NextTokenLoss:
    """Each position predicts the next token: cross-entropy over the targets as a share of the
    whole step's (every token weighs the same, however the step is split). The first label of
    each row is -100, so the Trainer's count of labels is the count of targets whether or not it
    knows that the loss shifts them."""

    def __init__(self, label_smoothing: float = 0.0):
        self.smoothing = label_smoothing

    def __call__(self, outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        return labelled_cross_entropy(logits[:, :-1], labels[:, 1:], num_items_in_batch, self.smoothing)


class PaddedCausalCollator:
    """Pads rows; labels copy the inputs, with -100 wherever the attention mask is 0.

    Masking by the attention mask, not by the pad token id, keeps the end-of-text token a
    target where it doubles as the pad token (DataCollatorForLanguageModeling would drop it).
    """

    def __init__(self, tokenizer: Any, pad_to_multiple_of: int | None = None):
        self.tokenizer = tokenizer
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.tokenizer.pad(
            [{"input_ids": f["input_ids"], "attention_mask": f["attention_mask"]} for f in features],
            padding=True,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_tensors="pt",
        )
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = IGNORED
        labels[:, 0] = IGNORED  # no token predicts the first one
        batch["labels"] = labels
        return batch


def _token_mean_loss(sums_and_counts: Any) -> float | None:
    """Mean loss per target token over the whole split (None when the Trainer kept no outputs,
    as with trainer.prediction_loss_only=true)."""
    if sums_and_counts is None:
        return None
    total, count = sums_and_counts.astype("float64").sum(axis=0)
    return float(total / count) if count else None


def _perplexity(loss: float | None) -> float | None:
    if loss is None:
        return None
    return math.exp(loss) if loss < 50 else float("inf")
