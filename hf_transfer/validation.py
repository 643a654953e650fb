"""What can be checked before training, all of it reported together: `hf-transfer validate`.

Each stage runs on its own, so that a problem in one does not hide those of the next: the run
folder, the data (read and prepared as training will: files, encodings, columns, labels, empty
rows), the checkpoint's config and tokenizer (no weights), and the strategy against a skeleton
of the model (its modules, built on the meta device: no memory, no weights). Then a short
description of the data: rows per split, labels and their counts, lengths in tokens.

A training run describes its data the same way first (`describe`, logged).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_transfer import models, run_folder
from hf_transfer.errors import UserError
from hf_transfer.strategies import make_strategy
from hf_transfer.tasks import task_class

# Imported inside the functions that use them, not here: datasets, numpy and the assembly (torch,
# transformers). This module is on the path of --help and of a config error, which stay quick
# (tests/test_architecture.py).

if TYPE_CHECKING:
    from hf_transfer.config import RunConfig
    from hf_transfer.models import Checkpoint
    from hf_transfer.tasks import Task
    from hf_transfer.tasks.base import TaskData

log = logging.getLogger(__name__)

# Above this many rows, lengths are measured on a seeded sample (the percentiles barely move).
LENGTH_SAMPLE = 5000


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check(run_cfg: RunConfig, run_dir: Path | None = None) -> Findings:
    """Every check that needs no training (and no weights), for a validated RunConfig."""
    from hf_transfer import assembly  # heavy (torch, transformers): `validate --help` and a typo stay quick

    findings = Findings()
    if run_dir is not None:
        _stage(findings, lambda: run_folder.check_free(run_dir))
    task = _stage(findings, lambda: task_class(run_cfg.task.type)(run_cfg.task, run_cfg.seed))
    if task is None:
        return findings
    with _warnings_into(findings.notes):
        data = _stage(findings, task.load)
    if data is not None:
        findings.problems += problems_of(data)
    checkpoint = _stage(findings, lambda: assembly.checkpoint(run_cfg, task))
    if checkpoint is not None:  # the checkpoint's config loads: its modules can be checked
        _stage(findings, lambda: models.check_settings_fit(checkpoint, run_cfg.task, run_cfg.strategy))
        strategy = make_strategy(run_cfg.strategy, run_cfg.model, task.new_head, task.peft_task_type)
        _stage(findings, lambda: strategy.check(skeleton(checkpoint, task, data)))
        if task.auto_model == models.SEQUENCE_CLASSIFICATION:
            findings.notes.append(_head_note(checkpoint, getattr(run_cfg.task, "problem_type", None)))
    if data is not None and checkpoint is not None:
        few = assembly.few_labels_plan(run_cfg, task, data, checkpoint)
        if few is not None:
            findings.notes.append(few.summary())
    if data is not None:
        tokenizer = checkpoint.tokenizer if checkpoint else None
        max_length = checkpoint.max_length if checkpoint else run_cfg.task.max_length
        findings.notes = describe(data, tokenizer, max_length) + findings.notes
    return findings


def _head_note(checkpoint: Checkpoint, problem_type: str | None) -> str:
    pooling = checkpoint.settings.pooling
    if checkpoint.pooling == "mean":
        head = "a linear layer" if problem_type == "regression" else "a cosine classifier"
        return f"head: {head} on the mean of the token states (model.pooling={pooling})"
    return f"head: the architecture's own (model.pooling={pooling})"


def _stage(findings: Findings, step: Any) -> Any:
    try:
        return step()
    except UserError as err:
        findings.problems.append(str(err))
        return None


class _warnings_into:
    """Collect the warnings a step logs (rows dropped, a tag scheme guessed) as notes."""

    def __init__(self, notes: list[str]):
        self.notes = notes
        self.handler = logging.Handler(level=logging.WARNING)
        self.handler.emit = lambda record: self.notes.append(record.getMessage())  # type: ignore[method-assign]

    def __enter__(self) -> None:
        logging.getLogger("hf_transfer").addHandler(self.handler)

    def __exit__(self, *exc: Any) -> None:
        logging.getLogger("hf_transfer").removeHandler(self.handler)


def skeleton(checkpoint: Checkpoint, task: Task, data: TaskData | None) -> Any:
    """The task's model on the checkpoint's config, on the meta device: the modules a
    strategy will meet, without weights or memory."""
    # Without data (it failed to load) the head's size is a guess; the base's modules are not.
    return models.skeleton(checkpoint, task.auto_model, **(task.model_config_kwargs(data) if data else {}))


def problems_of(data: TaskData) -> list[str]:
    """What is wrong with prepared data although each split could be read."""
    problems = [f"the {name} split has no rows" for name, split in data.splits.items() if len(split) == 0]
    counts = label_counts(data)
    if counts:
        train = counts.get("train", {})
        for name, split_counts in counts.items():
            unseen = [label for label, n in split_counts.items() if n and not train.get(label)]
            if name != "train" and unseen:
                problems.append(
                    f"labels {unseen} occur in the {name} split but never in train: the model cannot learn them "
                    "(add train examples, or drop them with task.drop_labels)"
                )
    return problems


def label_counts(data: TaskData) -> dict[str, dict[str, int]]:
    """Rows per label name in each split, where the rows hold one class label."""

    from datasets import ClassLabel

    counts = {}
    for name, split in data.splits.items():
        feature = split.features.get("label")
        if isinstance(feature, ClassLabel):
            found = Counter(list(split["label"]))
            counts[name] = {label: found.get(i, 0) for i, label in enumerate(feature.names)}
    return counts


def describe(
    data: TaskData, tokenizer: Any = None, max_length: int | None = None, lengths: list[int] | None = None
) -> list[str]:
    """A few lines about prepared data: rows, labels, tag scheme, lengths in tokens (`lengths`:
    the train split's `token_lengths`, where already counted)."""
    lines = ["rows: " + ", ".join(f"{name} {len(split):,}" for name, split in data.splits.items())]
    for name, counts in label_counts(data).items():
        total = sum(counts.values()) or 1
        shares = ", ".join(f"{label} {n:,} ({n / total:.1%})" for label, n in counts.items())
        lines.append(f"labels ({name}): {shares}")
    if data.scheme is not None:
        lines.append(f"tag scheme: {data.scheme}; {len(data.labels)} tags")
    if lengths is None:
        lengths = token_lengths(data.splits["train"], tokenizer) if tokenizer is not None else []
    if lengths:
        import numpy as np

        p50, p90, p99 = np.percentile(lengths, [50, 90, 99]).round().astype(int)
        line = f"train length in tokens: median {p50}, 90% {p90}, 99% {p99}, longest {max(lengths)}"
        if max_length is not None:
            line += f"; {share_longer(lengths, max_length):.1%} longer than max_length {max_length} (cut)"
        lines.append(line)
    return lines


def share_longer(lengths: list[int], max_length: int) -> float:
    """The share of `lengths` over `max_length`: texts the model reads only the start of."""
    return sum(n > max_length for n in lengths) / len(lengths) if lengths else 0.0


def token_lengths(split: Any, tokenizer: Any) -> list[int]:
    """Token counts of a split's inputs (texts, pairs, word lists, questions with contexts)."""
    if len(split) > LENGTH_SAMPLE:
        split = split.shuffle(seed=0).select(range(LENGTH_SAMPLE))
    columns = split.column_names

    def col(name: str) -> list[Any]:
        return list(split[name])

    if "text" in columns and "text_pair" in columns:
        encoded = tokenizer(col("text"), col("text_pair"))
    elif "text" in columns:
        encoded = tokenizer(col("text"))
    elif "tokens" in columns:
        encoded = tokenizer(col("tokens"), is_split_into_words=True)
    elif {"question", "context"} <= set(columns):
        encoded = tokenizer(col("question"), col("context"))
    else:
        return []
    return [len(ids) for ids in encoded["input_ids"]]
