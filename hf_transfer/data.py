"""Raw data in, a DatasetDict with train / validation / test out.

Where the data comes from (a hub dataset, local files, a file inside a pinned package) and how
the splits are made is the same for every task; what the columns mean is the task's business.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from hf_transfer.assets import is_package_source, parse_package_source, resolve_source
from hf_transfer.encodings import check_encoding, open_binary, refuse_undecodable
from hf_transfer.errors import UserError, did_you_mean, first_line

# Imported inside the functions that use them, not here: datasets and numpy. This module is on the
# path of --help and of a config error, which stay quick (tests/test_architecture.py).

if TYPE_CHECKING:
    from datasets import DatasetDict

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".lz4")
_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".txt": "text",
    ".conll": "conll",
}
# What a file's name says wins over task.data.format when it names another kind of data (a
# recipe's `format: conll` is for the recipe's own file, not the .jsonl a user gives instead);
# .txt says little (plain text, CoNLL, ...); csv/tsv differ only by delimiter, which the
# file's header shows (format_for).
_KINDS = {"csv": "table", "tsv": "table"}


@dataclass
class SplitNames:
    """The names the data uses for our three splits (GLUE MNLI says validation_matched)."""

    train: str = "train"
    validation: str = "validation"
    test: str = "test"


@dataclass
class DatasetConfig:
    # A hub dataset id, a local file or folder, or a package asset (see assets.py).
    source: str | None = None
    config_name: str | None = None
    revision: str | None = None
    # Local files: one path, a list, or {split: path(s)}; relative to `source` when it is a folder.
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    # conll: `token ... tag` per line, sentences separated by blank lines -> tokens, tags columns.
    format: Literal["csv", "tsv", "json", "parquet", "text", "conll"] | None = None
    # The text encoding of local csv, tsv, json, txt and CoNLL files; null: utf-8.
    encoding: str | None = None
    # csv/tsv: a field in double quotes may hold delimiters, line breaks and quotes ("").
    # false: quotes are plain characters, as in the many corpora whose TSV never quotes (a text
    # that starts with a quote would otherwise swallow the lines up to the next one).
    quoted: bool = True
    splits: SplitNames = field(default_factory=SplitNames)
    # Carved from train when the data has no such split, as fractions of all of train.
    validation_fraction: float = 0.1
    test_fraction: float = 0.0
    # random: a seeded (stratified) sample; contiguous: the last rows (held-out text stays whole).
    split_mode: Literal["random", "contiguous"] = "random"
    split_seed: int | None = None  # defaults to the run's seed
    # Caps for quick runs: a seeded random subset of this many examples.
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_test_samples: int | None = None
    # Label budgets (see `label_budget`): a seeded subset of train, drawn after the splits are
    # made, so that validation and test stay the same whatever the budget.
    train_per_class: int | None = None  # this many training examples of each class
    train_size: int | None = None  # this many training examples in all, classes in proportion

    def __post_init__(self) -> None:
        if self.source is not None and is_package_source(self.source):
            parse_package_source(self.source, "task.data.source")
        if self.source is None and self.data_files is None:
            raise ValueError("task.data needs a source (hub dataset id, file or folder) or data_files")
        if self.encoding is not None:
            check_encoding(self.encoding, "task.data.encoding")
        if not 0 < self.validation_fraction < 1:
            raise ValueError("task.data.validation_fraction must be between 0 and 1")
        for key in ("max_train_samples", "max_eval_samples", "max_test_samples", "train_per_class", "train_size"):
            cap = getattr(self, key)
            if cap is not None and cap < 1:
                raise ValueError(f"key 'task.data.{key}' must be at least 1 (or null: all of the split), got {cap}")
        if not 0 <= self.test_fraction < 1 or self.test_fraction + self.validation_fraction >= 1:
            raise ValueError(
                "task.data.test_fraction must be at least 0 and leave room for training "
                "(test_fraction + validation_fraction < 1)"
            )
        if self.train_per_class is not None and self.train_size is not None:
            raise ValueError("set task.data.train_per_class or task.data.train_size, not both")


def load_raw(cfg: DatasetConfig) -> DatasetDict:
    """Load the data as it is, with our split names (train/validation/test) where present."""
    return _rename_splits(load_source(cfg), cfg.splits)


def load_source(cfg: DatasetConfig, key: str = "task.data") -> DatasetDict:
    """The data as it is, with the source's own split names (a single file is "train"). `key`
    is where the config names it, for the messages (extra test sets have their own)."""

    source = resolve_source(cfg.source, kind="dataset") if cfg.source else None
    if cfg.data_files is not None:
        base = source if source is not None and source.is_dir() else Path.cwd()
        files = files_by_split(cfg.data_files, base)
        keys = None if key == "task.data" else f"{key}.data_files"
        return _load_files(files, cfg.format, cfg.encoding, key=keys, quoted=cfg.quoted)
    if source is not None and source.is_file():
        return _load_files({"train": [source]}, cfg.format, cfg.encoding, key=f"{key}.source", quoted=cfg.quoted)
    if source is not None and source.is_dir():
        return _load_folder(source, cfg.format, cfg.encoding, key=f"{key}.source", quoted=cfg.quoted)
    return _load_hub(cfg, key=f"{key}.source")


def make_splits(raw: DatasetDict, cfg: DatasetConfig, seed: int, stratify_by: str = "label") -> DatasetDict:
    """Carve the missing validation (and, if asked, test) split out of train; apply the caps.

    Fractions are of the whole train split, so 0.1 + 0.1 gives an 80/10/10 split. The test
    split is never used to make a validation split. Carved splits keep the class balance of
    the `stratify_by` column where it holds class labels (single-label classification).
    """
    from datasets import DatasetDict

    split_seed = cfg.split_seed if cfg.split_seed is not None else seed
    splits = dict(raw)
    for name, split in splits.items():
        if len(split) == 0:
            raise UserError(
                f"the {name} split has no examples left after checking its rows (empty texts or labels "
                "are dropped): check the data and task.columns"
            )
    train = splits["train"]
    stratify = stratify_by if _is_class_label(train, stratify_by) else None
    if cfg.split_mode == "contiguous":
        stratify = None
    total = len(train)
    if "test" not in splits and cfg.test_fraction > 0:
        parts = _split(train, cfg.test_fraction, split_seed, stratify, cfg.split_mode == "contiguous")
        train, splits["test"] = parts["train"], parts["test"]
        log.info(
            "carved a test split of %d examples from train (seed %d%s)",
            len(splits["test"]),
            split_seed,
            ", stratified" if stratify else "",
        )
    if "validation" not in splits:
        fraction = cfg.validation_fraction * total / len(train)
        parts = _split(train, fraction, split_seed, stratify, cfg.split_mode == "contiguous")
        train, splits["validation"] = parts["train"], parts["test"]
        log.info(
            "carved a validation split of %d examples from train (seed %d%s)",
            len(splits["validation"]),
            split_seed,
            ", stratified" if stratify else "",
        )
    splits["train"] = train
    caps = {"train": cfg.max_train_samples, "validation": cfg.max_eval_samples, "test": cfg.max_test_samples}
    for name, cap in caps.items():
        if cap is not None and name in splits and len(splits[name]) > cap:
            splits[name] = splits[name].shuffle(seed=split_seed).select(range(cap))
    splits["train"] = label_budget(splits["train"], cfg, seed, stratify_by)
    return DatasetDict({name: splits[name] for name in SPLITS if name in splits})


def budget_name(cfg: DatasetConfig) -> str:
    """How a run's label budget reads: '8/class', '1000' or 'all'."""
    if cfg.train_per_class is not None:
        return f"{cfg.train_per_class}/class"
    return "all" if cfg.train_size is None else str(cfg.train_size)


def label_budget(train: Any, cfg: DatasetConfig, seed: int, stratify_by: str = "label") -> Any:
    """The training examples a label budget allows: `train_per_class` of each class, or
    `train_size` in all with each class in its share (largest remainders), chosen in the order
    of one shuffle by the run's seed. Another seed draws another subset; with one seed a
    smaller budget's subset lies inside a larger one's, so a learning curve adds examples."""
    import numpy as np

    per_class, total = cfg.train_per_class, cfg.train_size
    if per_class is None and (total is None or total >= len(train)):
        return train
    order = np.random.default_rng(seed).permutation(len(train))
    if not _is_class_label(train, stratify_by):
        if per_class is not None:
            raise UserError(
                f"task.data.train_per_class needs a single-label class column ('{stratify_by}'), which this "
                "task's data has not; give a budget in all with task.data.train_size=N"
            )
        chosen = order[:total]
    else:
        labels = np.asarray(train[stratify_by])[order]
        classes, counts = np.unique(labels, return_counts=True)
        if per_class is not None:
            quota = np.minimum(counts, per_class)
            short = [train.features[stratify_by].int2str(int(c)) for c, n in zip(classes, counts) if n < per_class]
            if short:
                log.warning("label budget %d/class: classes %s have fewer examples; all of theirs are used",
                            per_class, ", ".join(short))  # fmt: skip
        else:
            share = counts * total / len(train)
            quota = np.floor(share).astype(int)
            for index in np.argsort(-(share - quota), kind="stable")[: total - quota.sum()]:
                quota[index] += 1
        chosen = np.concatenate([order[labels == c][:q] for c, q in zip(classes, quota)])
    log.info("label budget %s: %d of %d training examples (seed %d)", budget_name(cfg), len(chosen), len(train), seed)
    return train.select(sorted(int(i) for i in chosen))


def require_columns(dataset: Any, columns: dict[str, str | None], split: str) -> None:
    """Fail with the config key and the available columns when a named column is missing."""

    available = list(dataset.column_names)
    for key, column in columns.items():
        if column is not None and column not in available:
            raise UserError(
                f"column '{column}' (key '{key}') is not in the {split} split"
                f"{did_you_mean(column, available)}; its columns are: {', '.join(map(shown, available))}"
            )


def shown(name: str) -> str:
    """A column name as a message shows it: as it is, or quoted where it holds line breaks or
    other invisible characters (a message is one line)."""
    name = str(name)
    return name if name.isprintable() and name == name.strip() and name else repr(name)


def _split(dataset: Any, fraction: float, seed: int, stratify: str | None, contiguous: bool = False) -> Any:
    if len(dataset) < 2 or round(len(dataset) * fraction) < 1:
        raise UserError(
            f"train has {len(dataset)} examples: too few to carve a split of fraction {fraction:.2f} "
            "(give the data a validation split, or raise task.data.validation_fraction)"
        )
    if contiguous:
        cut = len(dataset) - max(1, round(len(dataset) * fraction))
        return {"train": dataset.select(range(cut)), "test": dataset.select(range(cut, len(dataset)))}
    try:
        return dataset.train_test_split(test_size=fraction, seed=seed, stratify_by_column=stratify)
    except ValueError:
        # Too few examples of some class to stratify: an unstratified split is the best we can do.
        log.warning("some classes are too small to stratify the split; splitting at random")
        return dataset.train_test_split(test_size=fraction, seed=seed)


def _is_class_label(dataset: Any, column: str) -> bool:
    from datasets import ClassLabel

    return isinstance(dataset.features.get(column), ClassLabel)


def list_class_label(feature: Any) -> Any:
    """The ClassLabel of a list feature (tags per word, labels per text), or None."""
    from datasets import ClassLabel, Sequence

    inner = (
        feature.feature
        if isinstance(feature, Sequence)
        else (feature[0] if isinstance(feature, list) and feature else None)
    )
    return inner if isinstance(inner, ClassLabel) else None


def files_by_split(data_files: Any, base: Path) -> dict[str, list[Path]]:
    if isinstance(data_files, (str, list)):
        data_files = {"train": data_files}
    files = {}
    for split, paths in data_files.items():
        paths = [paths] if isinstance(paths, str) else list(paths)
        files[split] = [p if p.is_absolute() else base / p for p in map(Path, paths)]
    return files


def _load_files(
    files: dict[str, list[Path]],
    fmt: str | None,
    encoding: str | None = None,
    key: str | None = None,
    quoted: bool = True,
) -> DatasetDict:
    """Local files by split. `key` is the config key that named them (default:
    task.data.data_files.SPLIT), for the messages; `quoted`: see DatasetConfig.quoted."""
    import datasets

    keys = {split: key or f"task.data.data_files.{split}" for split in files}
    formats = {}
    for split, paths in files.items():
        for path in paths:
            _check_data_file(path, keys[split])
            formats[path] = format_for(path, fmt) or _format_of(path)
            if fmt is not None and formats[path] != fmt:
                log.info(
                    "reading '%s' as %s, as its name says (task.data.format=%s applies to files whose names "
                    "say no other format)", path, formats[path], fmt,
                )  # fmt: skip
    if len(set(formats.values())) > 1:
        raise UserError(
            f"data files mix formats {sorted(set(formats.values()))}; convert them to one, or set task.data.format"
        )
    (builder,) = set(formats.values())
    if builder == "conll":
        return datasets.DatasetDict({split: read_conll(paths, encoding, keys[split]) for split, paths in files.items()})
    textual = builder != "parquet"
    utf8 = codecs.lookup(encoding or "utf-8").name == "utf-8"
    kwargs: dict[str, Any] = {}
    if builder == "tsv":
        builder, kwargs["delimiter"] = "csv", "\t"
    if builder == "csv":
        # pandas would take a first column without a header (a trailing delimiter on each row)
        # for an index and shift every column left by one: the texts would be the labels.
        kwargs["index_col"] = False
        if not quoted:
            kwargs["quoting"] = csv.QUOTE_NONE
        for split, paths in files.items():
            for path in paths:
                _refuse_duplicate_columns(path, kwargs.get("delimiter", ","), encoding, keys[split])
    if builder == "text":
        kwargs["keep_linebreaks"] = True  # line breaks are part of a text's shape
    if textual and encoding is not None and builder != "json":
        kwargs["encoding"] = encoding
    if builder == "json" and utf8:
        # datasets hands utf-8 JSON to pyarrow undecoded, which keeps invalid bytes and fails
        # only when a row is read: check the bytes here.
        for split, paths in files.items():
            for path in paths:
                refuse_undecodable(path, encoding, keys[split])
    # Each split on its own: a test file whose labels are -1 must not be cast to train's types.
    loaded = {}
    for split, paths in files.items():
        names = [str(p) for p in paths]
        transcode = builder == "json" and not utf8
        try:
            with (
                _quiet_reader_errors(),
                _as_utf8(paths, encoding, keys[split]) if transcode else contextlib.nullcontext(paths) as readable,
            ):
                loaded[split] = datasets.load_dataset(
                    builder, data_files={split: [str(p) for p in readable]}, split=split, **kwargs
                )
        except (ValueError, StopIteration, datasets.exceptions.DatasetGenerationError) as err:
            if textual:
                for path in paths:  # a decoding error: say where, whatever datasets made of it
                    refuse_undecodable(path, encoding, keys[split])
            if "corresponds to no data" in str(err):
                raise _no_rows(paths, keys[split]) from None
            cause = (builder == "json" and _first_bad_json_line(paths, encoding)) or first_line(err.__cause__ or err)
            what = f"the {split} data {names}" if keys[split].startswith("task.data") else ", ".join(names)
            raise UserError(f"could not read {what} ({keys[split]}) as {builder}: {cause}") from None
        if len(loaded[split]) == 0:
            raise _no_rows(paths, keys[split])
    return datasets.DatasetDict(loaded)


def _first_bad_json_line(paths: list[Path], encoding: str | None) -> str | None:
    """'FILE, line N: what is wrong' for the first line of a JSON Lines file that is not JSON
    (a whole-file JSON document gets the reader's own message)."""

    for path in paths:
        lines = Path(path).read_text(encoding=encoding or "utf-8", errors="replace").splitlines()
        if len([line for line in lines if line.strip()]) < 2 or lines[0].lstrip().startswith("["):
            continue
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except json.JSONDecodeError as err:
                return f"{path}, line {number}: not a JSON object ({err.msg} at column {err.colno})"
    return None


@contextlib.contextmanager
def _as_utf8(paths: list[Path], encoding: str | None, key: str) -> Iterator[list[Path]]:
    """utf-8 copies of JSON files in another encoding, in a temporary folder (not next to the
    data): datasets' JSON reader parses a JSON array before it decodes anything, and cuts JSON
    lines at newline bytes (not characters, in utf-16). The rows land in datasets' cache."""

    with tempfile.TemporaryDirectory(prefix="hf-transfer-json-") as folder:
        copies = []
        for number, path in enumerate(paths):
            name = path.name.lower()
            copy = Path(folder) / f"{number}.{'jsonl' if '.jsonl' in name else 'json'}"
            try:
                with (
                    open_binary(path) as raw,
                    io.TextIOWrapper(raw, encoding=encoding) as source,
                    copy.open("w", encoding="utf-8") as target,
                ):
                    shutil.copyfileobj(source, target, 1 << 20)
            except UnicodeDecodeError:
                refuse_undecodable(path, encoding, key)
                raise  # pragma: no cover - the scan finds what the copy found
            copies.append(copy)
        yield copies


class _ReaderFailure(logging.Filter):
    """datasets' readers log "Failed to read file ..." before they raise; the raise becomes our one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and str(record.msg).startswith("Failed to "))


@contextlib.contextmanager
def _quiet_reader_errors() -> Iterator[None]:
    loggers = [
        logging.getLogger(f"datasets.packaged_modules.{name}.{name}") for name in ("csv", "json", "text", "parquet")
    ]
    quiet = _ReaderFailure()
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


def format_for(path: Path, configured: str | None) -> str | None:
    """The format `path` is read in: task.data.format (`configured`), unless the file's name
    names another kind of data (see _KINDS); with no format set, what the name says (None:
    it says nothing)."""
    named = format_from_name(path.name)
    if _KINDS.get(named) == "table" and (configured is None or _KINDS.get(configured) == "table"):
        # csv or tsv: the header's delimiter decides (a recipe's `format: tsv` is for its own
        # file, not a user's .csv; a tab-separated file named .csv is still read right).
        return _delimiter_of(path) or configured or named
    if configured is None or named is None or named == "text":
        return configured or named
    return configured if _KINDS.get(named, named) == _KINDS.get(configured, configured) else named


def _delimiter_of(path: Path) -> str | None:
    """"csv" or "tsv" by the first line's delimiter, where it has one and not the other."""
    try:
        with open_binary(path) as stream:
            header = stream.readline(1 << 16).decode("utf-8", errors="replace")
    except (OSError, EOFError, ValueError):
        return None
    tabs, commas = "\t" in header, "," in header
    return "tsv" if tabs and not commas else "csv" if commas and not tabs else None


def _check_data_file(path: Path, key: str) -> None:
    """A data file that exists, is a file, can be read and holds something."""
    if path.is_dir():
        raise UserError(
            f"data file '{path}' ({key}) is a folder: name a file in it, or give the folder as "
            "task.data.source (with files named after their splits: train.csv, test.csv, ...)"
        )
    if not path.exists():
        raise UserError(f"data file '{path}' ({key}) does not exist")
    if not path.is_file():  # a pipe would block the reader, a socket cannot be read
        raise UserError(f"data file '{path}' ({key}) is not a regular file: give a file")
    try:
        with open_binary(path) as stream:
            first = stream.read(1)
    except PermissionError:
        raise UserError(
            f"data file '{path}' ({key}) cannot be read: permission denied (give your user read "
            "permission: chmod u+r FILE)"
        ) from None
    except (OSError, EOFError, ValueError) as err:  # not a file, a broken archive
        raise UserError(f"data file '{path}' ({key}) cannot be read: {first_line(err)}") from None
    if not first:
        raise UserError(f"data file '{path}' ({key}) is empty: put the data in it, or leave it out")


def _no_rows(paths: list[Path], key: str) -> UserError:
    if len(paths) == 1:
        return UserError(f"data file '{paths[0]}' ({key}) has no rows (a header only?): add rows, or leave it out")
    return UserError(f"data files {[str(p) for p in paths]} ({key}) have no rows (headers only?): add rows")


def read_conll(paths: list[Path], encoding: str | None = None, key: str = "task.data.source") -> Any:
    """CoNLL-style files: `token [...] tag` per line (tab or space separated), sentences
    separated by blank or whitespace-only lines; -DOCSTART- lines skipped. Columns: `tokens`
    (the first field), `tags` (the last) and `column_K` for each field K from the second
    (1-based: `task.columns.tags=3` picks a 4-column file's chunk tags). Every line of a file
    has as many fields as its first: one that has not (a lost tab) is named with its number."""
    import datasets

    rows: list[list[list[str]]] = []  # sentences of lines of fields
    width, first_at, first_path = None, 0, None
    for path in paths:
        now: list[list[str]] = []
        try:
            for number, line in enumerate(_open_text(path, encoding), 1):
                # Tab-separated where the line has tabs (a token may hold a non-breaking space).
                fields = [f for f in line.rstrip("\r\n").split("\t") if f.strip()] if "\t" in line else line.split()
                if not fields or fields[0] == "-DOCSTART-":
                    if now:
                        rows.append(now)
                        now = []
                    continue
                if len(fields) < 2:
                    raise UserError(f"{path}, line {number}: expected `token tag`, got {line.strip()!r}")
                if width is None:
                    width, first_at, first_path = len(fields), number, path
                elif len(fields) != width:
                    where = f"line {first_at}" if first_path == path else f"{first_path}, line {first_at},"
                    raise UserError(
                        f"{path}, line {number}: {len(fields)} fields, but {where} has {width} "
                        f"({line.strip()!r}: a lost or extra tab?); fix the line"
                    )
                now.append(fields)
        except UnicodeDecodeError:
            refuse_undecodable(path, encoding, key)
            raise  # pragma: no cover - the scan finds what the reader found
        if now:
            rows.append(now)
    columns: dict[str, list[list[str]]] = {
        "tokens": [[fields[0] for fields in sentence] for sentence in rows],
        "tags": [[fields[-1] for fields in sentence] for sentence in rows],
    }
    for k in range(2, (width or 2) + 1):
        columns[f"column_{k}"] = [[fields[k - 1] for fields in sentence] for sentence in rows]
    return datasets.Dataset.from_dict(columns)


def _refuse_duplicate_columns(path: Path, delimiter: str, encoding: str | None, key: str) -> None:
    """A table whose header names a column twice: pandas would read the second as 'NAME.1' and
    task.columns would silently take the first."""
    try:
        header = next(csv.reader(_open_text(path, encoding), delimiter=delimiter), [])
    except (UnicodeError, csv.Error, OSError, EOFError, LookupError):
        return  # the reader's own checks say what is wrong with the file
    positions: dict[str, list[int]] = {}
    for number, name in enumerate(header, 1):
        positions.setdefault(name.strip(), []).append(number)
    twice = {name: where for name, where in positions.items() if name and len(where) > 1}
    if twice:
        name, where = next(iter(twice.items()))
        raise UserError(
            f"data file '{path}' ({key}) names the column '{name}' {len(where)} times (columns "
            f"{', '.join(map(str, where))}): rename them in its header, so that task.columns can tell them apart"
        )


def _open_text(path: Path, encoding: str | None = None) -> Any:
    # utf-8-sig reads utf-8 and drops a byte-order mark, which would otherwise start the first token.
    with io.TextIOWrapper(open_binary(path), encoding=encoding or "utf-8-sig") as stream:
        yield from stream


def _load_folder(
    folder: Path, fmt: str | None, encoding: str | None = None, key: str = "task.data.source", quoted: bool = True
) -> DatasetDict:
    """A folder of files named after their splits (train.csv, test.jsonl, ...)."""
    files = _split_files(folder)
    if not files:
        raise UserError(
            f"folder '{folder}' ({key}) holds no train/validation/test files; "
            f"name its files after their splits (train.csv, ...) or set {key.rsplit('.', 1)[0]}.data_files"
        )
    read_as = "; ".join(f"{split} <- {', '.join(p.name for p in paths)}" for split, paths in files.items())
    log.info("data files: %s", read_as)
    return _load_files(files, fmt, encoding, key=key, quoted=quoted)


def _split_files(folder: Path) -> dict[str, list[Path]]:
    """A folder's files by split: those named after a split (train.csv, dev.tsv) where there are
    any, else the data files whose name holds a split's word (questions_train.csv,
    train-00000-of-00002.parquet). Hidden and lock files (.~lock.train.csv#) never count."""
    paths = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith((".", "~", "#"))]
    named: dict[str, list[Path]] = {}
    for path in paths:
        split = FOLDER_SPLIT_NAMES.get(path.name.split(".")[0].lower())
        if split is not None:
            named.setdefault(split, []).append(path)
    if named:
        return named
    worded: dict[str, list[Path]] = {}
    for path in paths:
        split = _split_word(path.name) if format_from_name(path.name) else None  # not data: notes.md, args.bin
        if split is not None:
            worded.setdefault(split, []).append(path)
    for split, found in worded.items():
        if len(found) > 1:  # train.csv and train_backup.csv would be one split: say so loudly
            log.warning("%s split read from %d files together: %s", split, len(found), ", ".join(p.name for p in found))
    return worded


def _split_word(file_name: str) -> str | None:
    """The split a file's name holds as a word (questions_train.csv, imdb.dev.tsv); None where
    it holds none, or two."""
    words = re.split(r"[-._ ]+", file_name.lower())[:-1]  # less the extension
    named = {FOLDER_SPLIT_NAMES[word] for word in words if word in FOLDER_SPLIT_NAMES}
    return next(iter(named)) if len(named) == 1 else None


# A folder's files by the usual names of their splits (train.txt, valid.txt, dev.csv, ...).
FOLDER_SPLIT_NAMES = {
    "train": "train", "training": "train",
    "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation", "eval": "validation",
    "test": "test", "testing": "test",
}  # fmt: skip


def _load_hub(cfg: DatasetConfig, key: str = "task.data.source") -> DatasetDict:
    import datasets

    try:
        loaded = datasets.load_dataset(cfg.source, cfg.config_name, revision=cfg.revision)
    except Exception as err:  # the hub client raises many types; all mean "could not load"
        raise UserError(
            f"could not load dataset '{cfg.source}' ({key}) from the hub: "
            f"{first_line(err)}; check the name and "
            f"your connection, or point {key} at a local file or folder"
        ) from None
    return loaded


def _rename_splits(raw: DatasetDict, names: SplitNames) -> DatasetDict:
    from datasets import DatasetDict

    wanted = {"train": names.train, "validation": names.validation, "test": names.test}
    if names.train not in raw:
        raise UserError(
            f"the data has no split '{names.train}' (task.data.splits.train); its splits are: {', '.join(raw)}"
        )
    defaults = SplitNames()
    for ours, theirs in wanted.items():
        if theirs not in raw and theirs != getattr(defaults, ours):
            raise UserError(
                f"the data has no split '{theirs}' (task.data.splits.{ours}); its splits are: {', '.join(raw)}"
            )
    return DatasetDict({ours: raw[theirs] for ours, theirs in wanted.items() if theirs in raw})


def format_from_name(name: str) -> str | None:
    """The data format a file's name says (compression suffixes aside), or None."""
    name = name.lower()
    for suffix in _COMPRESSION:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return _FORMATS.get(Path(name).suffix)


def _format_of(path: Path) -> str:
    fmt = format_from_name(path.name)
    if fmt is None:
        raise UserError(
            f"cannot tell the format of '{path}' from its name; set task.data.format "
            f"to one of: {', '.join(dict.fromkeys(_FORMATS.values()))}"
        )
    return fmt
