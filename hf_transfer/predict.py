"""`hf-transfer predict MODEL [TEXT ...]`: predictions from a run folder or a hub id, as JSON lines.

Inputs come from the arguments, a file (txt: one per line; csv/tsv: columns; jsonl: keys) or
standard input. The model's config says what it does:

    classification         {"text", "label", "score"}   (multi-label: "labels", "scores";
                                                          regression: "score")
    token classification   {"text", "entities": [{"entity_group", "word", "start", "end", "score"}]}
    question answering     {"question", "context", "answer", "start", "end", "score"}
    causal LM              {"text", "generated_text"}

For a run folder, the settings the run used (multi-label threshold, QA windows, generation
length) come from its config.yaml.
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

from hf_transfer.errors import UserError, first_line

# What a model does, by the ending of its architecture's name.
TASKS = {
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
    predictor = load_predictor(args.model, args.revision, args.device)
    if args.max_new_tokens is not None:
        predictor.settings["max_new_tokens"] = args.max_new_tokens
    records = list(for_task(records, args, predictor.task))
    output = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for line in predictor.predict(records, args.batch_size):
            output.write(json.dumps(line, ensure_ascii=False) + "\n")
    finally:
        if output is not sys.stdout:
            output.close()
    return 0


# -- inputs -------------------------------------------------------------------------------
def for_task(records: list[dict[str, Any]], args: argparse.Namespace, task: str) -> Iterator[dict[str, Any]]:
    """Question answering takes questions with contexts; other tasks take the records as read."""
    if task != "question-answering":
        yield from records
        return
    for number, record in enumerate(records, 1):
        if "question" not in record:
            record = {"question": record["text"], "context": args.context}
        if not record.get("context"):
            raise UserError(
                f"input {number}: a question needs a context: give --context, or a file with question and context "
                "columns (keys)"
            )
        yield record


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


# -- predictors ---------------------------------------------------------------------------
class Predictor:
    """Runs a model over records in batches (a progress bar on long inputs); one dict each."""

    def __init__(self, task: str, settings: dict[str, Any]):
        self.task = task
        self.settings = settings

    def predict(self, records: list[dict[str, Any]], batch_size: int) -> Iterator[dict[str, Any]]:
        from tqdm.auto import tqdm

        batches = range(0, len(records), batch_size)
        progress = tqdm(batches, desc="Predicting", unit="batch", disable=len(batches) < 2, file=sys.stderr)
        for start in progress:
            chunk = records[start : start + batch_size]
            for record, output in zip(chunk, self.run(chunk, batch_size)):
                yield {**record, **output}

    def run(self, chunk: list[dict[str, Any]], batch_size: int) -> list[dict[str, Any]]:
        raise NotImplementedError


class PipelinePredictor(Predictor):
    """Classification, token classification and generation: a transformers pipeline."""

    def __init__(self, task: str, settings: dict[str, Any], pipe: Any):
        super().__init__(task, settings)
        self.pipe = pipe
        self.problem_type = getattr(pipe.model.config, "problem_type", None)

    def run(self, chunk: list[dict[str, Any]], batch_size: int) -> list[dict[str, Any]]:
        if self.task == "text-classification":
            inputs = [r if "text_pair" in r else r["text"] for r in chunk]
            outputs = self.pipe(inputs, batch_size=batch_size, top_k=None)
            return [self._classification(output) for output in outputs]
        from hf_transfer.tasks.causal_lm import Generation

        texts = [r["text"] for r in chunk]
        if self.task == "token-classification":
            outputs = self.pipe(texts, batch_size=batch_size, aggregation_strategy="simple")
            return [{"entities": [_entity(e) for e in entities]} for entities in outputs]
        outputs = self.pipe(
            texts,
            batch_size=batch_size,
            max_new_tokens=self.settings.get("max_new_tokens", Generation.max_new_tokens),
            do_sample=False,
            return_full_text=False,
        )
        return [{"generated_text": output[0]["generated_text"]} for output in outputs]

    def _classification(self, scores: list[dict[str, Any]]) -> dict[str, Any]:
        if self.problem_type == "regression":
            return {"score": round(float(scores[0]["score"]), 6)}
        if self.problem_type == "multi_label_classification":
            from hf_transfer.tasks.text_classification import TextClassificationConfig

            threshold = self.settings.get("threshold", TextClassificationConfig.threshold)
            return {
                "labels": [s["label"] for s in scores if s["score"] >= threshold],
                "scores": {s["label"]: round(float(s["score"]), 6) for s in scores},
            }
        best = max(scores, key=lambda s: s["score"])
        return {"label": best["label"], "score": round(float(best["score"]), 6)}


def _entity(entity: dict[str, Any]) -> dict[str, Any]:
    return {
        "entity_group": entity["entity_group"],
        "word": entity["word"],
        "start": int(entity["start"]),
        "end": int(entity["end"]),
        "score": round(float(entity["score"]), 6),
    }


class QuestionAnsweringPredictor(Predictor):
    """transformers 5 has no question-answering pipeline: the run's own windowing and span search."""

    def __init__(self, task: str, settings: dict[str, Any], model: Any, tokenizer: Any):
        super().__init__(task, settings)
        self.model = model.eval()
        self.tokenizer = tokenizer

    def run(self, chunk: list[dict[str, Any]], batch_size: int) -> list[dict[str, Any]]:
        import numpy as np
        import torch

        from hf_transfer.tasks.question_answering import QuestionAnsweringConfig as defaults
        from hf_transfer.tasks.question_answering import best_answers, context_offsets, encode_windows

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
            examples, windows, np.stack(padded), np.stack(padded_ends), self.settings.get("n_best", defaults.n_best),
            self.settings.get("max_answer_length", defaults.max_answer_length), with_spans=True,
        )  # fmt: skip
        return [spans[str(i)] for i in range(len(chunk))]


def detect_task(config: Any) -> str:
    for architecture in getattr(config, "architectures", None) or []:
        for ending, task in TASKS.items():
            if architecture.endswith(ending):
                return task
    raise UserError(
        f"cannot tell what the model does from its config (architectures: {getattr(config, 'architectures', None)}); "
        "hf-transfer predict handles classification, token classification, question answering and generation"
    )


def run_settings(model: str, revision: str | None = None) -> dict[str, Any]:
    """The task settings the run was trained with, from its config.yaml and metrics.json (in
    the run folder, or pushed with it to the hub); empty for a model hf_transfer did not make."""
    import json

    import yaml

    from hf_transfer.tasks.causal_lm import Generation

    config_file = _run_file(model, "config.yaml", revision)
    task = ((yaml.safe_load(config_file.read_text()) or {}).get("task") or {}) if config_file else {}
    settings = {
        k: task[k] for k in ("threshold", "max_length", "doc_stride", "n_best", "max_answer_length") if k in task
    }
    if "max_length" in settings and settings["max_length"] is None:
        # Left to its default, the length was the model's limit: the run recorded what it used.
        metrics_file = _run_file(model, "metrics.json", revision)
        settings["max_length"] = json.loads(metrics_file.read_text()).get("max_length") if metrics_file else None
    if isinstance(task.get("generation"), dict):
        settings["max_new_tokens"] = task["generation"].get("max_new_tokens", Generation.max_new_tokens)
    return settings


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


def load_predictor(model: str, revision: str | None = None, device: str | None = None) -> Predictor:
    from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoTokenizer, pipeline

    if Path(model).exists() and not (Path(model) / "config.json").exists():
        raise UserError(f"'{model}' holds no model (no config.json): give a finished run folder")
    try:
        config = AutoConfig.from_pretrained(model, revision=revision)
    except (OSError, ValueError) as err:
        raise UserError(f"could not load '{model}': {first_line(err)}") from None
    task = detect_task(config)
    settings = run_settings(model, revision)
    if task == "question-answering":
        qa_model = AutoModelForQuestionAnswering.from_pretrained(model, revision=revision, config=config)
        if device:
            qa_model = qa_model.to(device)
        return QuestionAnsweringPredictor(
            task, settings, qa_model, AutoTokenizer.from_pretrained(model, revision=revision)
        )
    pipe = pipeline(task, model=model, config=config, revision=revision, device=device, dtype="float32")
    if task == "text-generation":
        # Batched generation continues every row from its last token: pad on the left.
        pipe.tokenizer.padding_side = "left"
        if pipe.tokenizer.pad_token is None:
            pipe.tokenizer.pad_token = pipe.tokenizer.eos_token
    return PipelinePredictor(task, settings, pipe)
