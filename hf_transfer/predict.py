"""`hf-transfer predict MODEL [TEXT ...]`: predictions from a run folder or a hub id, as JSON lines.

Texts come from the arguments, a file (txt: one per line; csv/tsv: a column; jsonl: a key) or
standard input. The model's own config says which pipeline to use, so one command serves every
task a run folder can hold.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hf_transfer.errors import UserError

# The pipeline for each AutoModelFor* head, by the ending of the architecture's name.
PIPELINES = {
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
    "ForCausalLM": "text-generation",
    "LMHeadModel": "text-generation",
}


def parser() -> argparse.ArgumentParser:
    from hf_transfer.cli import CommandParser

    parse = CommandParser(
        prog="hf-transfer predict",
        description="Predict with a run folder or a hub model; writes one JSON line per input.",
    )
    parse.add_argument("model", help="a run folder, or a model id on the hub")
    parse.add_argument("texts", nargs="*", help="texts to predict (else --file, else standard input)")
    parse.add_argument("-f", "--file", help="a .txt (one text per line), .csv/.tsv or .jsonl file; - for stdin")
    parse.add_argument("--column", default="text", help="the text column or key of a csv/jsonl file (text)")
    parse.add_argument("--pair-column", default="text_pair", help="the second text of a pair, where present")
    parse.add_argument("-o", "--output", help="write JSON lines here instead of standard output")
    parse.add_argument("--batch-size", type=int, default=32)
    parse.add_argument("--revision", help="a branch, tag or commit of a hub model")
    parse.add_argument("--device", help="cpu, cuda, cuda:1...; default: a GPU when there is one")
    return parse


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    records = list(read_inputs(args))
    if not records:
        raise UserError("no texts to predict: give them as arguments, with --file, or on standard input")
    predictor = load_predictor(args.model, args.revision, args.device)
    output = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for line in predictor.predict(records, args.batch_size):
            output.write(json.dumps(line, ensure_ascii=False) + "\n")
    finally:
        if output is not sys.stdout:
            output.close()
    return 0


def read_inputs(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
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
    if args.column not in columns:
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
        if not isinstance(row, dict) or args.column not in row:
            raise UserError(f"{path}, line {number}: no key '{args.column}' (--column)")
        yield _record(row, args)


def _record(row: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    record = {"text": row[args.column]}
    if row.get(args.pair_column) not in (None, ""):
        record["text_pair"] = row[args.pair_column]
    return record


class Predictor:
    """A transformers pipeline and how to turn its outputs into JSON lines."""

    def __init__(self, pipe: Any, task: str):
        self.pipe = pipe
        self.task = task

    def predict(self, records: list[dict[str, Any]], batch_size: int) -> Iterator[dict[str, Any]]:
        from tqdm.auto import tqdm

        batches = range(0, len(records), batch_size)
        progress = tqdm(batches, desc="Predicting", unit="batch", disable=len(batches) < 2, file=sys.stderr)
        for start in progress:
            chunk = records[start : start + batch_size]
            outputs = self.pipe(self._inputs(chunk), batch_size=batch_size, **self._call_kwargs())
            for record, output in zip(chunk, outputs):
                yield {**record, **self._format(output)}

    def _inputs(self, chunk: list[dict[str, Any]]) -> list[Any]:
        if self.task == "text-classification":
            return [r if "text_pair" in r else r["text"] for r in chunk]
        return [r["text"] for r in chunk]

    def _call_kwargs(self) -> dict[str, Any]:
        return {}

    def _format(self, output: Any) -> dict[str, Any]:
        if self.task == "text-classification":
            best = output[0] if isinstance(output, list) else output
            return {"label": best["label"], "score": round(float(best["score"]), 6)}
        return {"output": output}


def detect_task(config: Any) -> str:
    for architecture in getattr(config, "architectures", None) or []:
        for ending, task in PIPELINES.items():
            if architecture.endswith(ending):
                return task
    raise UserError(
        f"cannot tell what the model does from its config (architectures: {getattr(config, 'architectures', None)}); "
        "hf-transfer predict handles classification, token classification, question answering and generation"
    )


def load_predictor(model: str, revision: str | None = None, device: str | None = None) -> Predictor:
    from transformers import AutoConfig, pipeline

    if Path(model).exists() and not (Path(model) / "config.json").exists():
        raise UserError(f"'{model}' holds no model (no config.json): give a finished run folder")
    try:
        config = AutoConfig.from_pretrained(model, revision=revision)
    except (OSError, ValueError) as err:
        raise UserError(f"could not load '{model}': {str(err).splitlines()[0]}") from None
    task = detect_task(config)
    pipe = pipeline(task, model=model, revision=revision, device=device, dtype="float32")
    return Predictor(pipe, task)
