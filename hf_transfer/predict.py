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
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_transfer.errors import CommandParser, UserError, first_line
from hf_transfer.tasks import TASKS, task_class

if TYPE_CHECKING:
    from hf_transfer.tasks.base import Predictor, Task


def parser() -> argparse.ArgumentParser:
    parse = CommandParser(
        prog="hf-transfer predict",
        description="Predict with a run folder or a hub model; writes one JSON line per input.",
    )
    parse.add_argument("model", help="a run folder, or a model id on the hub")
    parse.add_argument("texts", nargs="*", help="texts (questions, for QA) to predict; else --file, else stdin")
    parse.add_argument("-f", "--file", help="a .txt (one text per line), .csv/.tsv or .jsonl file; - for stdin")
    parse.add_argument("--column", default="text", help="the text column or key of a csv/jsonl file (text)")
    parse.add_argument("--pair-column", default="text_pair", help="the second text of a pair, where present")
    parse.add_argument("--context", help="question answering: the context for questions given as arguments")
    parse.add_argument("--max-new-tokens", type=int, help="causal LM: tokens to generate (default: the run's, or 40)")
    parse.add_argument("-o", "--output", help="write JSON lines here instead of standard output")
    parse.add_argument("--batch-size", type=int, default=32)
    parse.add_argument("--revision", help="a branch, tag or commit of a hub model")
    parse.add_argument("--device", help="cpu, cuda, cuda:1...; default: a GPU when there is one")
    return parse


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    records = list(_read_records(args))  # input mistakes are found before the model loads
    if not records:
        raise UserError("no texts to predict: give them as arguments, with --file, or on standard input")
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
    return 0


# -- inputs -------------------------------------------------------------------------------
def _read_records(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    if args.texts:
        yield from ({"text": text} for text in args.texts)
        return
    if args.file in (None, "-"):
        if args.file is None and sys.stdin.isatty():
            raise UserError("no texts to predict: give them as arguments, with --file, or on standard input")
        yield from _lines(sys.stdin)
        return
    path = Path(args.file)
    if not path.is_file():
        raise UserError(f"input file '{path}' (--file) does not exist")
    name = path.name.lower()
    with path.open(encoding="utf-8") as stream:
        if name.endswith((".csv", ".tsv")):
            yield from _table(stream, path, args, "\t" if name.endswith(".tsv") else ",")
        elif name.endswith((".jsonl", ".json")):
            yield from _json_lines(stream, path, args)
        else:
            yield from _lines(stream)


def _lines(stream: io.TextIOBase) -> Iterator[dict[str, Any]]:
    for line in stream:
        if line.strip():
            yield {"text": line.rstrip("\n")}


def _table(stream: io.TextIOBase, path: Path, args: argparse.Namespace, delimiter: str) -> Iterator[dict[str, Any]]:
    reader = csv.DictReader(stream, delimiter=delimiter)
    columns = reader.fieldnames or []
    if args.column not in columns and not {"question", "context"} <= set(columns):
        raise UserError(f"column '{args.column}' (--column) is not in {path}; its columns are: {', '.join(columns)}")
    for row in reader:
        yield _record(row, args)


def _json_lines(stream: io.TextIOBase, path: Path, args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}, line {number}: not JSON ({err.msg})") from None
        if not isinstance(row, dict) or (args.column not in row and not {"question", "context"} <= set(row)):
            raise UserError(f"{path}, line {number}: no key '{args.column}' (--column)")
        yield _record(row, args)


def _record(row: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    if args.column not in row:  # question answering: question and context
        return {"question": row["question"], "context": row["context"]}
    record = {"text": row[args.column]}
    if row.get(args.pair_column) not in (None, ""):
        record["text_pair"] = row[args.pair_column]
    return record


# -- the model and what it does -----------------------------------------------------------
def run_task(model: str, revision: str | None = None) -> tuple[type[Task], dict[str, Any]]:
    """The task class a model was trained for and the settings it predicts with: from the run's
    config.yaml and metrics.json (in the run folder, or pushed with it), else, for a model no
    hf_transfer run made, from its architecture's name."""
    import yaml

    if Path(model).exists() and not (Path(model) / "config.json").exists():
        raise UserError(f"'{model}' holds no model (no config.json): give a finished run folder")
    config_file = _run_file(model, "config.yaml", revision)
    task_config = ((yaml.safe_load(config_file.read_text()) or {}).get("task") or {}) if config_file else {}
    task_type = task_config.get("type")
    if task_type not in TASKS:
        task_type = _task_of_architecture(model, revision)
    metrics_file = _run_file(model, "metrics.json", revision)
    metrics = json.loads(metrics_file.read_text()) if metrics_file else {}
    task = task_class(task_type)
    return task, task.prediction_settings(task_config, metrics)


def _task_of_architecture(model: str, revision: str | None) -> str:
    from transformers import AutoConfig

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
    if task is None:
        task, settings = run_task(model, revision)
    try:
        return task.predictor(model, settings or {}, revision, device)
    except (OSError, ValueError) as err:
        raise UserError(f"could not load '{model}': {first_line(err)}") from None
