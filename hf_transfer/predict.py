"""`hf-transfer predict MODEL [TEXT ...]`: predictions from a run folder or a hub id, as JSON lines.

Inputs come from the arguments, a file (txt: one per line; csv/tsv: columns; jsonl: keys) or
standard input. The model's config says what it does:

    classification         {"text", "label", "score"}   (multi-label: "labels", "scores";
                                                          regression: "score")
    token classification   {"text", "entities": [{"entity_group", "word", "start", "end", "score"}]}
    question answering     {"question", "context", "answer", "start", "end", "score"}
    causal LM              {"text", "generated_text"}

A run folder's config.yaml names its task (else the model's architecture does); the task's
class says how to predict and which of the run's settings it needs (multi-label threshold,
QA windows, generation length).
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hf_transfer import run_folder
from hf_transfer.assets import looks_like_path
from hf_transfer.data import shown
from hf_transfer.encodings import check_encoding, decode_text
from hf_transfer.errors import CommandParser, UserError, did_you_mean, first_line
from hf_transfer.tasks import TASKS, task_class

# Imported inside the functions that use them, not here: transformers, huggingface_hub and
# mean_pooling (torch). This module is on the path of --help and of a config error, which stay quick
# (tests/test_architecture.py).

if TYPE_CHECKING:
    from hf_transfer.tasks.base import Predictor, Task


def parser() -> argparse.ArgumentParser:
    parse = CommandParser(
        prog="hf-transfer predict",
        description="Predict with a run folder or a hub model; writes one JSON line per input.",
    )
    parse.add_argument("model", help="a run folder, or a model id on the hub")
    parse.add_argument(
        "texts",
        nargs="*",
        help="texts (questions, for QA) to predict, before or after the options; else --file, else stdin",
    )
    parse.add_argument("-f", "--file", help="a .txt (one text per line), .csv/.tsv or .jsonl file; - for stdin")
    parse.add_argument(
        "--column",
        help="the text column or key of a csv/tsv/jsonl file (default: the run's own, task.columns.text in its "
        "config.yaml; else text)",
    )
    parse.add_argument(
        "--pair-column",
        help="the second text of a pair, where present (default: the run's task.columns.text_pair; else text_pair)",
    )
    parse.add_argument("--encoding", help="the text encoding of --file or standard input (default: utf-8)")
    parse.add_argument(
        "--skip-empty",
        action="store_true",
        help="leave out empty texts (by default they are predicted, with a warning naming their lines)",
    )
    parse.add_argument("--context", help="question answering: the context for questions given as arguments")
    parse.add_argument(
        "--max-new-tokens", type=_positive_int, help="causal LM: tokens to generate (default: the run's, or 40)"
    )
    parse.add_argument("-o", "--output", help="write JSON lines here instead of standard output")
    parse.add_argument("--batch-size", type=_positive_int, default=32, help="inputs per batch (32)")
    parse.add_argument("--revision", help="a branch, tag or commit of a hub model")
    parse.add_argument("--device", help="cpu, cuda, cuda:1...; default: a GPU when there is one")
    return parse


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {value!r}")
    return number


def main(argv: list[str]) -> int:
    # Intermixed: texts may come after options (`predict RUN --batch-size 8 "a text"`).
    args = parser().parse_intermixed_args(argv)
    if args.encoding is not None:
        check_encoding(args.encoding, "--encoding")
    records = _inputs(args)  # input mistakes are found before the model loads
    task, settings = run_task(args.model, args.revision)
    records = task.prediction_inputs(records, args.context)
    if args.max_new_tokens is not None:
        settings["max_new_tokens"] = args.max_new_tokens
    predictor = load_predictor(args.model, args.revision, args.device, task, settings)
    output = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for line in predictor.predict(records, args.batch_size):
            output.write(json.dumps(line, ensure_ascii=False) + "\n")
    finally:
        if output is not sys.stdout:
            output.close()
    if predictor.cut:
        how = predictor.long_texts.format(max_length=getattr(predictor, "max_length", "the model's"))
        print(f"hf-transfer predict: {predictor.cut} of {len(records)} texts were longer than the model takes: {how}",
              file=sys.stderr)  # fmt: skip
    return 0


# -- inputs -------------------------------------------------------------------------------
@dataclass
class _Input:
    record: dict[str, Any]
    where: str  # "line 3", "argument 2": for messages about it


def _inputs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The records to predict; empty texts are warned about (and kept) or, with --skip-empty, left out."""
    inputs = list(_read_inputs(args))
    empty = [i for i in inputs if _is_empty(i.record)]
    if empty:
        source = "arguments" if args.texts else ("standard input" if args.file in (None, "-") else args.file)
        places = ", ".join(i.where for i in empty[:10]) + (", ..." if len(empty) > 10 else "")
        several = len(empty) > 1
        if args.skip_empty:
            inputs = [i for i in inputs if not _is_empty(i.record)]
            print(
                f"hf-transfer predict: left out {len(empty)} empty text{'s' if several else ''} ({source}: {places})",
                file=sys.stderr,
            )
        else:
            print(
                f"hf-transfer predict: warning: {len(empty)} empty text{'s' if several else ''} ({source}: {places}): "
                f"predicted like the others; --skip-empty leaves {'them' if several else 'it'} out",
                file=sys.stderr,
            )
    if not inputs:
        if empty:
            raise UserError(f"no texts to predict: the {len(empty)} given are empty (left out by --skip-empty)")
        if args.file not in (None, "-"):
            raise UserError(f"input file '{args.file}' (--file) holds no texts: give a file with a text a line "
                            "(or a .csv, .tsv or .jsonl file with a text column)")  # fmt: skip
        raise UserError("no texts to predict: give them as arguments, with --file, or on standard input")
    return [i.record for i in inputs]


def _is_empty(record: dict[str, Any]) -> bool:
    text = record.get("text", record.get("question"))
    return not isinstance(text, str) or not text.strip()


def _read_inputs(args: argparse.Namespace) -> Iterator[_Input]:
    if args.texts and args.file is not None:
        raise UserError(f"give the texts as arguments or with --file, not both (--file {args.file!r} and "
                        f"{len(args.texts)} text argument{'s' if len(args.texts) > 1 else ''})")  # fmt: skip
    if args.texts:
        yield from _arguments(args)
        return
    if args.file in (None, "-"):
        if args.file is None and sys.stdin.isatty():
            raise UserError("no texts to predict: give them as arguments, with --file, or on standard input")
        stream = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else None
        if stream is None:  # a text stream with no bytes underneath
            text = sys.stdin.read()
        else:
            text = decode_text(stream.read(), args.encoding, "standard input", "add --encoding {encoding}")
        yield from _lines(text)
        return
    path = Path(args.file)
    if path.is_dir():
        raise UserError(f"input file '{path}' (--file) is a folder: give a .txt, .csv, .tsv or .jsonl file")
    if not path.is_file():
        raise UserError(f"input file '{path}' (--file) does not exist")
    try:
        data = path.read_bytes()
    except PermissionError:
        raise UserError(f"input file '{path}' (--file) cannot be read: permission denied") from None
    except OSError as err:
        raise UserError(f"input file '{path}' (--file) cannot be read: {first_line(err)}") from None
    text = decode_text(data, args.encoding, f"input file '{path}' (--file)", "add --encoding {encoding}")
    name = path.name.lower()
    if name.endswith((".csv", ".tsv")):
        yield from _table(text, path, _Columns(args), "\t" if name.endswith(".tsv") else ",")
    elif name.endswith((".jsonl", ".json")):
        yield from _json_lines(text, path, _Columns(args))
    else:
        yield from _lines(text)


def _arguments(args: argparse.Namespace) -> Iterator[_Input]:
    """One text an argument; for a model of text pairs (the run's task.columns.text_pair), two
    arguments a pair."""
    columns = task_config(args.model, args.revision).get("columns")
    pair = isinstance(columns, dict) and columns.get("text_pair")
    if not pair:
        yield from (_Input({"text": text}, f"argument {n}") for n, text in enumerate(args.texts, 1))
        return
    if len(args.texts) % 2:
        raise UserError(
            f"this model reads pairs of texts (its task.columns.text_pair is '{pair}'): give each pair as two "
            f"arguments, the text then its pair (got {len(args.texts)} arguments), or --file with both columns"
        )
    texts = args.texts
    for n in range(0, len(texts), 2):
        yield _Input({"text": texts[n], "text_pair": texts[n + 1]}, f"arguments {n + 1} and {n + 2}")


def _lines(text: str) -> Iterator[_Input]:
    """One text per line; blank lines at the end are no inputs (blank lines between are: empty texts)."""
    lines = [line.rstrip("\n") for line in io.StringIO(text, newline=None)]
    while lines and not lines[-1].strip():
        lines.pop()
    yield from (_Input({"text": line}, f"line {n}") for n, line in enumerate(lines, 1))


class _Columns:
    """The text and pair columns of a file: --column and --pair-column, else the run's own
    (task.columns in its config.yaml), else text and text_pair."""

    def __init__(self, args: argparse.Namespace):
        run_columns: dict[str, Any] = {}
        if args.column is None or args.pair_column is None:
            found = task_config(args.model, args.revision).get("columns")
            run_columns = found if isinstance(found, dict) else {}
        self.text = args.column or run_columns.get("text") or "text"
        self.pair = args.pair_column or run_columns.get("text_pair") or "text_pair"
        # Where the name came from, for messages.
        self.key = (
            "--column" if args.column or not run_columns.get("text") else "the run's task.columns.text; or --column"
        )


def _table(text: str, path: Path, columns: _Columns, delimiter: str) -> Iterator[_Input]:
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    names = reader.fieldnames or []
    if columns.text not in names and not {"question", "context"} <= set(names):
        raise UserError(
            f"column '{columns.text}' ({columns.key}) is not in {path}{did_you_mean(columns.text, names)}; "
            f"its columns are: {', '.join(map(shown, names)) or '(none)'}"
        )
    for row in reader:
        yield _Input(_record(row, columns), f"line {reader.line_num}")


def _json_lines(text: str, path: Path, columns: _Columns) -> Iterator[_Input]:
    for number, line in enumerate(io.StringIO(text, newline=None), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}, line {number}: not JSON ({err.msg})") from None
        if not isinstance(row, dict) or (columns.text not in row and not {"question", "context"} <= set(row)):
            raise UserError(f"{path}, line {number}: no key '{columns.text}' ({columns.key})")
        record = _record(row, columns)
        for key, value in record.items():
            if value is not None and not isinstance(value, str):
                raise UserError(f"{path}, line {number}: key '{key}' holds {value!r}, not a text")
        yield _Input(record, f"line {number}")


def _record(row: dict[str, Any], columns: _Columns) -> dict[str, Any]:
    if columns.text not in row:  # question answering: question and context
        return {key: row[key] if row[key] is not None else "" for key in ("question", "context")}
    record = {"text": row[columns.text] if row[columns.text] is not None else ""}  # null, a missing cell: empty
    if row.get(columns.pair) not in (None, ""):
        record["text_pair"] = row[columns.pair]
    return record


# -- the model and what it does -----------------------------------------------------------
def run_task(model: str, revision: str | None = None) -> tuple[type[Task], dict[str, Any]]:
    """The task class a model was trained for and the settings it predicts with: from the run's
    config.yaml and metrics.json (in the run folder, or pushed with it), else, for a model no
    hf_transfer run made, from its architecture's name."""
    config = task_config(model, revision)  # refuses a missing folder and an unfinished run first
    if Path(model).exists() and not (Path(model) / "config.json").exists():
        raise UserError(f"'{model}' holds no model (no config.json): give a finished run folder")
    task_type = config.get("type")
    if task_type not in TASKS:
        task_type = _task_of_architecture(model, revision)
    metrics_file = _run_file(model, "metrics.json", revision)
    metrics = json.loads(metrics_file.read_text()) if metrics_file else {}
    task = task_class(task_type)
    return task, task.prediction_settings(config, metrics)


def _refuse_unfinished_run(model: str) -> None:
    folder = Path(model)
    if folder.is_dir() and run_folder.state(folder) == "incomplete":
        raise UserError(f"'{model}' is not a finished run: {run_folder.resume_hint(folder)}")


@functools.lru_cache(maxsize=8)
def task_config(model: str, revision: str | None = None) -> dict[str, Any]:
    """The `task` section of the run's config.yaml (in the run folder, or pushed with it), or {}
    for a model no hf_transfer run made. Read once: the input columns and the task both need it."""

    _refuse_missing_folder(model)
    _refuse_unfinished_run(model)
    config_file = _run_file(model, "config.yaml", revision)
    if config_file is None:
        return {}
    loaded = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    section = loaded.get("task") if isinstance(loaded, dict) else None
    return section if isinstance(section, dict) else {}


def _refuse_missing_folder(model: str) -> None:
    """A model that is meant as a folder and is not there: not a question for the hub. A hub id
    is NAME or ORG/NAME; a path starts with . / or ~, has more parts, or lies in a folder that
    exists here (runs/NAME)."""
    path = Path(model).expanduser()
    if path.exists():
        return
    parent = path.parent
    meant_as_path = looks_like_path(model) or model.endswith("/") or (str(parent) not in ("", ".") and parent.is_dir())
    if not meant_as_path:
        return
    if not parent.is_dir():
        raise UserError(
            f"run folder '{model}' does not exist (nor does its folder '{parent}'): give a finished run folder"
        )
    hint = did_you_mean(path.name, [p.name for p in parent.iterdir() if p.is_dir()])
    raise UserError(f"run folder '{model}' does not exist{hint}: give a finished run folder, or a hub model id")


_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
            "adapter_model.safetensors", "adapter_model.bin")  # fmt: skip
_TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model", "tokenizer.model")


def _refuse_incomplete_folder(model: str) -> None:
    """A local folder without its weights or tokenizer (a run that did not finish, a file deleted):
    named here, in one line, rather than by every loader transformers tried."""
    folder = Path(model).expanduser()
    if not folder.is_dir() or any(folder.glob("*.gguf")):
        return

    unfinished = run_folder.state(folder) == "incomplete"
    fix = (f"the run did not finish: resume it (hf-transfer resume {model})" if unfinished
           else "the file was removed: train the run again, or give another run folder")  # fmt: skip
    if not any((folder / name).is_file() for name in _WEIGHTS):
        raise UserError(f"'{model}' holds no model weights (model.safetensors); {fix}")
    if not any((folder / name).is_file() for name in _TOKENIZER):
        raise UserError(f"'{model}' holds no tokenizer (tokenizer.json); {fix}")


def _task_of_architecture(model: str, revision: str | None) -> str:
    from transformers import AutoConfig

    from hf_transfer import mean_pooling

    mean_pooling.register()
    try:
        config = AutoConfig.from_pretrained(model, revision=revision)
    except (OSError, ValueError) as err:
        raise UserError(f"could not load '{model}': {first_line(err)}") from None
    architectures = getattr(config, "architectures", None) or []
    for task_type in TASKS:
        if any(a.endswith(task_class(task_type).architecture_endings()) for a in architectures):
            return task_type
    raise UserError(
        f"cannot tell what the model does from its config (architectures: {architectures or None}); "
        f"hf-transfer predict handles the tasks {', '.join(TASKS)}"
    )


def _run_file(model: str, name: str, revision: str | None) -> Path | None:
    if Path(model).is_dir():
        path = Path(model) / name
        return path if path.exists() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(model, name, revision=revision))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError):  # not there: not made by a run
        return None


def load_predictor(
    model: str,
    revision: str | None = None,
    device: str | None = None,
    task: type[Task] | None = None,
    settings: dict[str, Any] | None = None,
) -> Predictor:
    """A Predictor for a run folder or a hub model: `predictor.predict(records, batch_size)`."""
    _refuse_incomplete_folder(model)
    if task is None:
        task, settings = run_task(model, revision)
    try:
        return task.predictor(model, settings or {}, revision, device)
    except (OSError, ValueError) as err:
        raise UserError(f"could not load '{model}': {first_line(err)}") from None
