"""Extra test sets (`task.extra_test`): data from elsewhere, scored after training like the test split.

    task:
      extra_test:
        tweets: {source: tweets.csv, columns: {text: tweet}, label_map: {"-1": negative, "1": positive}}

Each set is read as the task's own data is (a file, a folder, a package file, a hub dataset:
data.py), brought to the task's columns and labels by the task (`Task.prepare_extra`), and
joins the prepared splits under its own name. From there on it is one more held-out split:
checked and described like the others, tokenized and scored with the test split's code, and
written as `predictions_NAME.jsonl` and metrics.json's `"extra_test": {NAME: scores}`.

Labels are matched to the task's labels by name; a set's `label_map` renames its raw values
first (as `task.label_map` does the task's), and without one the task's own `label_map`
applies to values that are not label names already. A set whose labels do not all map is
refused before any model loads, with the labels of both sides.

This module imports nothing heavy: config checks use it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from hf_transfer.assets import is_package_source, looks_like_path, parse_package_source
from hf_transfer.data import DatasetConfig, load_source
from hf_transfer.encodings import check_encoding
from hf_transfer.errors import UserError, did_you_mean

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

log = logging.getLogger(__name__)

# A name is part of a file name (predictions_NAME.jsonl) and of config keys: plain characters.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# The splits a run writes already; compared without case, as some file systems do.
_TAKEN = ("train", "validation", "test")


@dataclass
class NumericLabels:
    """Labels from a number (a mean rating, a score): its side of `cut` is the label, and rows
    exactly at `cut` (neutral) are dropped."""

    below: str | None = None  # required: checked with the key's name by check_sets
    above: str | None = None
    cut: float = 0.0


@dataclass
class ExtraTestConfig:
    """`task.extra_test.NAME`: where the set comes from and how it reads as the task's data."""

    # A hub dataset id, a local file or folder, or a package asset (see assets.py); or data_files.
    source: str | None = None
    config_name: str | None = None
    revision: str | None = None
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    format: Literal["csv", "tsv", "json", "parquet", "text", "conll"] | None = None
    encoding: str | None = None
    quoted: bool = True  # csv/tsv: see task.data.quoted
    # The split of the source to score; null: its test split, else its only one.
    split: str | None = None
    # The set's column names, where they differ from the task's (task.columns).
    columns: dict[str, str | None] = field(default_factory=dict)
    # Renames the set's raw label values to the task's labels (null: by name, then task.label_map).
    label_map: dict[str | int, str] | None = None
    # Raw label values whose rows are left out.
    drop_labels: list[str | int] | None = None
    numeric_labels: NumericLabels | None = None
    # A seeded random subset of this many rows; null: task.data.max_test_samples, as the test split.
    max_samples: int | None = None


def check_sets(sets: dict[str, ExtraTestConfig], columns: type) -> None:
    """What can be said of `task.extra_test` without reading anything (ValueError: the schema
    turns it into one line). `columns` is the task's Columns dataclass: the keys a set may rename."""

    seen: dict[str, str] = {}
    for name, cfg in sets.items():
        key = f"task.extra_test.{name}"
        if not _NAME.match(name):
            raise ValueError(
                f"extra test set name '{name}' (key '{key}') must be letters, digits, '_' or '-' (at most 64, "
                "starting with a letter or digit): it names the file predictions_NAME.jsonl"
            )
        if name.lower() in _TAKEN:
            raise ValueError(
                f"extra test set name '{name}' (key '{key}') is taken by the run's own {name.lower()} split: "
                "choose another name"
            )
        if name.lower() in seen:
            raise ValueError(
                f"extra test sets '{seen[name.lower()]}' and '{name}' differ only in case: their files would "
                "collide on some file systems; rename one"
            )
        seen[name.lower()] = name
        if cfg.source is None and cfg.data_files is None:
            raise ValueError(f"key '{key}' needs a source (a file, folder, package asset or hub id) or data_files")
        if cfg.source is not None and is_package_source(cfg.source):
            parse_package_source(cfg.source, f"{key}.source")
        if cfg.encoding is not None:
            check_encoding(cfg.encoding, f"{key}.encoding")
        known = [f.name for f in dataclasses.fields(columns)]
        for column in cfg.columns:
            if column not in known:
                raise ValueError(
                    f"unknown key '{key}.columns.{column}'{did_you_mean(column, known)}; "
                    f"valid keys under '{key}.columns': {', '.join(known)}"
                )
        if cfg.max_samples is not None and cfg.max_samples < 1:
            raise ValueError(f"key '{key}.max_samples' must be at least 1 (or null), got {cfg.max_samples}")
        numeric = cfg.numeric_labels
        if numeric is not None and (numeric.below is None or numeric.above is None):
            raise ValueError(
                f"key '{key}.numeric_labels' needs below and above: the task's labels for values below and above "
                f"cut ({numeric.cut:g}), e.g. {{below: negative, above: positive}}"
            )
        if numeric is not None and cfg.label_map is not None:
            raise ValueError(
                f"key '{key}': numeric_labels names the labels already; label_map applies to label values, "
                "not to numbers: give one of them"
            )


def set_columns(cfg: ExtraTestConfig, task_columns: Any) -> Any:
    """The task's Columns, with the set's own names where it gives them."""

    return dataclasses.replace(task_columns, **cfg.columns)


def column_key(name: str, cfg: ExtraTestConfig, column: str) -> str:
    """The key that names a set's column, for messages: its own, or the task's it inherits."""
    key = f"task.extra_test.{name}.columns.{column}"
    return key if column in cfg.columns else f"{key}, else task.columns.{column}"


def split_name(name: str) -> str:
    """How messages call a set ("the 'tweets' extra test split ...")."""
    return f"'{name}' extra test"


def load_extra_sets(task: Any, data: Any) -> Any:
    """Each of the task's extra test sets, read, prepared by the task and capped, added to
    `data.splits` under its name (and listed in `data.extra_test`)."""
    sets: dict[str, ExtraTestConfig] = getattr(task.config, "extra_test", None) or {}
    split_seed = task.config.data.split_seed if task.config.data.split_seed is not None else task.seed
    for name, cfg in sets.items():
        log.info("loading extra test set %s: %s", name, cfg.source or cfg.data_files)
        prepared = task.prepare_extra(read_set(name, cfg), name, cfg, data)
        if len(prepared) == 0:
            raise UserError(
                f"the {split_name(name)} split has no rows left (its labels all dropped, or its texts empty): "
                f"check task.extra_test.{name}"
            )
        cap = cfg.max_samples if cfg.max_samples is not None else task.config.data.max_test_samples
        if cap is not None and len(prepared) > cap:
            prepared = prepared.shuffle(seed=split_seed).select(range(cap))
        data.splits[name] = prepared
        data.extra_test.append(name)
    return data


def read_set(name: str, cfg: ExtraTestConfig) -> Dataset:
    """The rows of one extra set as the source holds them (one split of it)."""

    key = f"task.extra_test.{name}"
    if cfg.source is not None and not is_package_source(cfg.source):
        if looks_like_path(cfg.source) and not Path(cfg.source).expanduser().exists():
            raise UserError(f"data file '{cfg.source}' ({key}.source) does not exist: give an existing file or folder")
    source = DatasetConfig(
        source=cfg.source, config_name=cfg.config_name, revision=cfg.revision, data_files=cfg.data_files,
        format=cfg.format, encoding=cfg.encoding, quoted=cfg.quoted,
    )  # fmt: skip
    return _one_split(load_source(source, key=key), name, cfg)


def _one_split(raw: DatasetDict, name: str, cfg: ExtraTestConfig) -> Dataset:
    key = f"task.extra_test.{name}"
    splits = list(raw)
    if cfg.split is not None:
        if cfg.split not in raw:
            raise UserError(
                f"the {key} data has no split '{cfg.split}' ({key}.split){did_you_mean(cfg.split, splits)}; "
                f"its splits are: {', '.join(splits)}"
            )
        return raw[cfg.split]
    if "test" in raw:
        return raw["test"]
    if len(raw) == 1:
        return raw[splits[0]]
    raise UserError(f"the {key} data has splits {', '.join(splits)} and none is 'test': choose one with {key}.split")


def label_names_of(
    values: list[Any],
    name: str,
    cfg: ExtraTestConfig,
    task_labels: list[str],
    task_label_map: dict | None,
    unit: str = "rows",
) -> tuple[list[int], list[str]]:
    """The rows to keep and the task's label name for each: the set's raw values mapped by
    name, through the set's label_map, or through the task's; refused when any does not map.
    `unit`: what a value is, for the message (rows; tags, where each word has one)."""

    key = f"task.extra_test.{name}"
    dropped = {str(v) for v in cfg.drop_labels or []}
    missing = sum(v is None for v in values)
    if cfg.numeric_labels is not None:
        values = _by_number(values, name, cfg.numeric_labels)
    rows, names, unmapped = [], [], Counter()
    for row, value in enumerate(values):
        if value is None or str(value) in dropped:
            continue
        mapped = _map(value, cfg.label_map, task_labels, task_label_map)
        if mapped in task_labels:
            rows.append(row)
            names.append(mapped)
        else:
            unmapped[str(value) if mapped is None else f"{value} -> {mapped}"] += 1
    left_out = sum(v is not None and str(v) in dropped for v in values)
    if missing or left_out:
        log.info("%s: left out %d rows with no label, %d in drop_labels", split_name(name), missing, left_out)
    if unmapped:
        found = sorted({str(v) for v in values if v is not None and str(v) not in dropped}, key=_label_order)
        how = f" through {key}.label_map" if cfg.label_map is not None else " by name"
        raise UserError(
            f"labels of the {split_name(name)} set do not map to the task's labels{how}: "
            f"{', '.join(f'{v} ({n:,} {unit})' for v, n in sorted(unmapped.items()))}; the set's labels: "
            f"{', '.join(found)}; the task's labels: {', '.join(task_labels)}. Map them with {key}.label_map "
            f"(e.g. {{{found[0]}: {task_labels[0]}}}), or leave their rows out with {key}.drop_labels"
        )
    return rows, names


def _label_order(value: str) -> tuple[int, float, str]:
    """Numbers in numeric order (-1, 0, 1, 10), then words."""
    try:
        return 0, float(value), value
    except ValueError:
        return 1, 0.0, value


def _map(value: Any, set_map: dict | None, task_labels: list[str], task_map: dict | None) -> str | None:
    # Keys compare as text, as task.label_map's do: a YAML key 1 and a CSV value "1" are one label.
    if set_map is not None:
        return next((str(n) for k, n in set_map.items() if str(k) == str(value)), None)
    if str(value) in task_labels:
        return str(value)
    return next((str(n) for k, n in (task_map or {}).items() if str(k) == str(value)), None)


def _by_number(values: list[Any], name: str, numeric: NumericLabels) -> list[Any]:
    labels, neutral = [], 0
    for value in values:
        if value is None:
            labels.append(None)
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UserError(
                f"task.extra_test.{name}.numeric_labels needs numbers in the label column; the set has {value!r}"
            ) from None
        neutral += number == numeric.cut
        labels.append(numeric.below if number < numeric.cut else numeric.above if number > numeric.cut else None)
    if neutral:
        log.info("%s: dropped %d rows rated exactly %g (neutral)", split_name(name), neutral, numeric.cut)
    return labels


def warn_overlap(train_texts: list[Any], set_texts: list[Any], name: str) -> None:
    """Texts of the extra set that training saw too: an out-of-domain figure they inflate."""
    seen = set(train_texts)
    shared = sum(text in seen for text in set_texts)
    if shared:
        log.warning(
            "%d of the %d texts of the %s set also occur in train: its scores are not fully out of sample",
            shared,
            len(set_texts),
            split_name(name),
        )
