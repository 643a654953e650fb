"""`hf-transfer report FOLDER ...`: one table comparing the runs found under the folders.

    hf-transfer -m recipe=bert_sentiment strategy=head_only,full,partial_unfreeze,lora
    hf-transfer report runs/bert_sentiment

Prints a markdown table (quality, time, throughput, trainable parameters, peak memory) and,
with --csv, writes the same rows as CSV.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from hf_transfer.errors import CommandParser, UserError
from hf_transfer.outputs import headline, split_score

COLUMNS = ["run", "strategy", "pretrained", "trainable", "trainable %", "metric", "validation", "test",
           "train s", "samples/s", "wall s", "peak MB"]  # fmt: skip


def collect(folders: list[Path]) -> list[dict[str, Any]]:
    rows = []
    for folder in folders:
        if not folder.exists():
            raise UserError(f"'{folder}' does not exist")
        for metrics_file in sorted(folder.rglob("metrics.json")):
            if "checkpoints" in metrics_file.parts:
                continue
            rows.append(row(metrics_file.parent, json.loads(metrics_file.read_text()), folder))
    if not rows:
        raise UserError(f"no finished runs (metrics.json) under {', '.join(map(str, folders))}")
    return rows


def row(run: Path, metrics: dict[str, Any], root: Path) -> dict[str, Any]:
    metric = headline(metrics)
    return {
        "run": str(run.relative_to(root)) if run != root else run.name,
        "strategy": metrics.get("strategy", "?"),
        "pretrained": metrics.get("pretrained", True),
        "trainable": f"{metrics['trainable_parameters']:,}",
        "trainable %": f"{100 * metrics['trainable_fraction']:.2f}",
        "metric": metric,
        "validation": split_score(metrics, "validation", metric),
        "test": split_score(metrics, "test", metric),
        "train s": f"{metrics['train_runtime_s']:.1f}",
        "samples/s": f"{metrics['train_samples_per_second']:.1f}",
        "wall s": f"{metrics.get('wall_time_s', 0):.1f}",
        "peak MB": f"{metrics.get('peak_memory_mb', 0):.0f}",
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parse = CommandParser(prog="hf-transfer report", description="Compare finished runs in one table.")
    parse.add_argument("folders", nargs="+", help="run folders, or folders holding them (searched recursively)")
    parse.add_argument("--csv", help="also write the table as CSV to this file")
    args = parse.parse_args(argv)
    rows = collect([Path(f) for f in args.folders])
    print(markdown(rows))
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return 0
