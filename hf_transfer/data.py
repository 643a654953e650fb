"""Raw data in, a DatasetDict with train / validation / test out.

Where the data comes from (a hub dataset, local files, a file inside a pinned package) and how
the splits are made is the same for every task; what the columns mean is the task's business.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from hf_transfer.errors import UserError, first_line

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

    def __post_init__(self) -> None:
        from hf_transfer.assets import is_package_source, parse_package_source

        if self.source is not None and is_package_source(self.source):
            parse_package_source(self.source, "task.data.source")
        if self.source is None and self.data_files is None:
            raise ValueError("task.data needs a source (hub dataset id, file or folder) or data_files")
        if not 0 < self.validation_fraction < 1:
            raise ValueError("task.data.validation_fraction must be between 0 and 1")
        if not 0 <= self.test_fraction < 1 or self.test_fraction + self.validation_fraction >= 1:
            raise ValueError(
                "task.data.test_fraction must be at least 0 and leave room for training "
                "(test_fraction + validation_fraction < 1)"
            )


def load_raw(cfg: DatasetConfig) -> DatasetDict:
    """Load the data as it is, with our split names (train/validation/test) where present."""
    from hf_transfer.assets import resolve_source

    source = resolve_source(cfg.source, kind="dataset") if cfg.source else None
    if cfg.data_files is not None:
        base = source if source is not None and source.is_dir() else Path.cwd()
        raw = _load_files(files_by_split(cfg.data_files, base), cfg.format)
    elif source is not None and source.is_file():
        raw = _load_files({"train": [source]}, cfg.format)
    elif source is not None and source.is_dir():
        raw = _load_folder(source, cfg.format)
    else:
        raw = _load_hub(cfg)
    return _rename_splits(raw, cfg.splits)


def make_splits(raw: DatasetDict, cfg: DatasetConfig, seed: int, stratify_by: str = "label") -> DatasetDict:
    """Carve the missing validation (and, if asked, test) split out of train; apply the caps.

    Fractions are of the whole train split, so 0.1 + 0.1 gives an 80/10/10 split. The test
    split is never used to make a validation split. Carved splits keep the class balance of
    the `stratify_by` column where it holds class labels (single-label classification).
    """
    from datasets import DatasetDict

    split_seed = cfg.split_seed if cfg.split_seed is not None else seed
    splits = dict(raw)
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
    return DatasetDict({name: splits[name] for name in SPLITS if name in splits})


def require_columns(dataset: Any, columns: dict[str, str | None], split: str) -> None:
    """Fail with the config key and the available columns when a named column is missing."""
    from hf_transfer.errors import did_you_mean

    available = list(dataset.column_names)
    for key, column in columns.items():
        if column is not None and column not in available:
            raise UserError(
                f"column '{column}' (key '{key}') is not in the {split} split"
                f"{did_you_mean(column, available)}; its columns are: {', '.join(available)}"
            )


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


def _load_files(files: dict[str, list[Path]], fmt: str | None) -> DatasetDict:
    import datasets

    formats = set()
    for split, paths in files.items():
        for path in paths:
            if not path.exists():
                raise UserError(f"data file '{path}' (task.data.data_files.{split}) does not exist")
            formats.add(fmt or _format_of(path))
    if len(formats) > 1:
        raise UserError(f"data files mix formats {sorted(formats)}; convert them to one, or set task.data.format")
    (builder,) = formats
    if builder == "conll":
        return datasets.DatasetDict({split: read_conll(paths) for split, paths in files.items()})
    kwargs: dict[str, Any] = {}
    if builder == "tsv":
        builder, kwargs["delimiter"] = "csv", "\t"
    if builder == "text":
        kwargs["keep_linebreaks"] = True  # line breaks are part of a text's shape
    # Each split on its own: a test file whose labels are -1 must not be cast to train's types.
    loaded = {}
    for split, paths in files.items():
        names = [str(p) for p in paths]
        try:
            loaded[split] = datasets.load_dataset(builder, data_files={split: names}, split=split, **kwargs)
        except (ValueError, datasets.exceptions.DatasetGenerationError) as err:
            cause = err.__cause__ or err
            raise UserError(f"could not read the {split} data {names} as {builder}: {cause}") from None
    return datasets.DatasetDict(loaded)


def read_conll(paths: list[Path]) -> Any:
    """CoNLL-style files: `token [...] tag` per line (first and last fields, tab or space
    separated), sentences separated by blank or whitespace-only lines; -DOCSTART- lines skipped.
    """
    import datasets

    sentences: list[list[str]] = []
    tags: list[list[str]] = []
    for path in paths:
        tokens_now: list[str] = []
        tags_now: list[str] = []
        for number, line in enumerate(_open_text(path), 1):
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if tokens_now:
                    sentences.append(tokens_now)
                    tags.append(tags_now)
                    tokens_now, tags_now = [], []
                continue
            if len(fields) < 2:
                raise UserError(f"{path}, line {number}: expected `token tag`, got {line.strip()!r}")
            tokens_now.append(fields[0])
            tags_now.append(fields[-1])
        if tokens_now:
            sentences.append(tokens_now)
            tags.append(tags_now)
    return datasets.Dataset.from_dict({"tokens": sentences, "tags": tags})


def _open_text(path: Path) -> Any:
    import bz2
    import gzip
    import lzma

    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix, open)
    with opener(path, "rt", encoding="utf-8") as stream:
        yield from stream


def _load_folder(folder: Path, fmt: str | None) -> DatasetDict:
    """A folder of files named after their splits (train.csv, test.jsonl, ...)."""
    files: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        split = path.name.split(".")[0]
        if path.is_file() and split in SPLITS:
            files.setdefault(split, []).append(path)
    if not files:
        raise UserError(
            f"folder '{folder}' holds no train/validation/test files; "
            "name its files after their splits (train.csv, ...) or set task.data.data_files"
        )
    return _load_files(files, fmt)


def _load_hub(cfg: DatasetConfig) -> DatasetDict:
    import datasets

    try:
        loaded = datasets.load_dataset(cfg.source, cfg.config_name, revision=cfg.revision)
    except Exception as err:  # the hub client raises many types; all mean "could not load"
        raise UserError(
            f"could not load dataset '{cfg.source}' (task.data.source) from the hub: "
            f"{first_line(err)}; check the name and "
            "your connection, or point task.data.source at a local file or folder"
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
