"""`hf-transfer report FOLDER ...`: one table comparing the runs found under the folders.

    hf-transfer -m recipe=bert_sentiment strategy=head_only,full,partial_unfreeze,lora
    hf-transfer report runs/bert_sentiment

Prints a markdown table (quality, time, throughput, trainable parameters, peak memory) and,
with --csv, writes the same rows as CSV, numbers as numbers. The quality column is each run's
own headline metric (the one that chose its best checkpoint, recorded in its metrics.json).
A run that did not finish is listed with the step it got to.

It also writes report.md and a self-contained report.html into the folder (or --out): a table
per task of the runs grouped by setting (model where there are several, strategy, start, label
budget; mean and spread over seeds), plots (report_plots.py, with matplotlib) and findings
computed from the numbers (report_summary.py). `hf-transfer compare` makes folders of runs to
report on this way.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hf_transfer import disk, report_plots, report_render, run_folder
from hf_transfer.errors import CommandParser, UserError
from hf_transfer.outputs import headline, minority_class, never_predicted, split_value, write_text
from hf_transfer.report_plots import INSTALL
from hf_transfer.report_summary import findings, summarise

COLUMNS = ["run", "strategy", "pretrained", "trainable", "trainable %", "metric", "validation", "test",
           "test f1_macro", "minority F1", "train s", "samples/s", "wall s", "peak MB"]  # fmt: skip


def collect(folders: list[Path]) -> list[dict[str, Any]]:
    rows = []
    for folder in folders:
        if not folder.exists():
            raise UserError(f"'{folder}' does not exist")
        runs = {p.parent for name in ("metrics.json", "config.yaml") for p in folder.rglob(name)}
        # Not run folders: Hydra's records (.hydra/config.yaml) and the Trainer's checkpoints.
        ours = [
            r for r in runs if not any(p == "checkpoints" or p.startswith(".") for p in r.relative_to(folder).parts)
        ]
        for run in sorted(r for r in ours if run_folder.state(r) != "empty"):
            if run_folder.state(run) == "complete":
                metrics = json.loads((run / "metrics.json").read_text())
                rows.append(row(run, metrics, folder))
                rows[-1]["_metrics"] = {**metrics, "_settings": settings_of(run)}
            else:
                rows.append(incomplete_row(run, folder))
    if not rows:
        raise UserError(f"no runs (metrics.json or config.yaml) under {', '.join(map(str, folders))}")
    return rows


# What makes two runs the same setting but for the seed: every key of their config.yaml but
# these (the seed, and what changes how a run is shown or published, not what it learns).
NOT_SETTINGS = ("seed", "name", "hub.", "expected_world_size", "trainer.disable_tqdm", "trainer.report_to",
                "trainer.logging_steps", "trainer.logging_strategy", "trainer.save_total_limit",
                "trainer.per_device_eval_batch_size", "trainer.dataloader_num_workers")  # fmt: skip


def settings_of(run: Path) -> dict[str, str]:
    """The run's config.yaml as flat `key: value` text, less NOT_SETTINGS ({} without one)."""

    config_file = run / "config.yaml"
    config = yaml.safe_load(config_file.read_text(encoding="utf-8")) if config_file.exists() else None
    flat: dict[str, str] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict) and value:
            for name, inner in value.items():
                walk(inner, f"{key}.{name}" if key else str(name))
        elif not any(key == skip or (skip.endswith(".") and key.startswith(skip)) for skip in NOT_SETTINGS):
            flat[key] = json.dumps(value, sort_keys=True, default=str)

    walk(config if isinstance(config, dict) else {}, "")
    return flat


def incomplete_row(run: Path, root: Path) -> dict[str, Any]:
    """A run that did not finish: its strategy, and how far it got."""

    config = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").exists() else {}
    checkpoint = run_folder.last_complete_checkpoint(run)
    progress = (
        f"incomplete: step {run_folder.checkpoint_step(checkpoint)}" if checkpoint else "incomplete: no checkpoint"
    )
    return {
        **dict.fromkeys(COLUMNS),
        "run": str(run.relative_to(root)) if run != root else run.name,
        "strategy": (config.get("strategy") or {}).get("name", "?"),
        "pretrained": (config.get("model") or {}).get("pretrained", True),
        "metric": progress,
    }


def row(run: Path, metrics: dict[str, Any], root: Path) -> dict[str, Any]:
    """One run's figures, as numbers (the table formats them; the CSV keeps them)."""
    metric = headline(metrics)

    return {
        "run": str(run.relative_to(root)) if run != root else run.name,
        "strategy": metrics.get("strategy", "?"),
        "pretrained": metrics.get("pretrained", True),
        "trainable": metrics["trainable_parameters"],
        "trainable %": round(100 * metrics["trainable_fraction"], 4),
        "metric": metric,
        "validation": split_value(metrics, "validation", metric),
        "test": split_value(metrics, "test", metric),
        "test f1_macro": split_value(metrics, "test", "f1_macro"),
        "minority F1": _minority_f1(metrics),
        "train s": metrics["train_runtime_s"],
        "samples/s": metrics["train_samples_per_second"],
        "wall s": metrics.get("wall_time_s"),
        "peak MB": metrics.get("peak_memory_mb"),
    }


def _minority_f1(metrics: dict[str, Any]) -> str | None:
    rarest = minority_class(metrics.get("test") if isinstance(metrics.get("test"), dict) else metrics.get("validation"))
    return f"{rarest[0]}: {rarest[1]['f1']:.4f}" if rarest else None


def warnings(metrics_of: dict[str, dict[str, Any]]) -> list[str]:
    """A line for each run with a class it never predicted on its test (or validation) split."""
    lines = []
    for name, metrics in metrics_of.items():
        split = "test" if isinstance(metrics.get("test"), dict) else "validation"
        missed = never_predicted(metrics.get(split))
        if missed:
            lines.append(f"warning: {name} never predicts {', '.join(missed)} on {split}")
    return lines


# How the table shows each column; the rest as they are ("-" for none).
FORMATS = {"trainable": "{:,}", "trainable %": "{:.2f}", "validation": "{:.4f}", "test": "{:.4f}", "test f1_macro": "{:.4f}",
           "train s": "{:.1f}", "samples/s": "{:.1f}", "wall s": "{:.1f}", "peak MB": "{:.0f}"}  # fmt: skip


def _cell(column: str, value: Any) -> str:
    if value is None or value == "-":
        return "-"
    if column in FORMATS and isinstance(value, (int, float)) and not isinstance(value, bool):
        return FORMATS[column].format(value)
    return str(value)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(c, r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parse = CommandParser(
        prog="hf-transfer report",
        description="Compare finished runs: a table here, report.md and a self-contained report.html.",
    )
    parse.add_argument("folders", nargs="+", help="run folders, or folders holding them (searched recursively)")
    parse.add_argument("--csv", help="also write the table as CSV to this file")
    parse.add_argument("--out", help="where report.md and report.html go (default: the first folder)")
    args = parse.parse_args(argv)
    if args.csv and Path(args.csv).is_dir():
        raise UserError(f"--csv {args.csv} is a folder: give the path of the CSV file to write")
    rows = collect([Path(f) for f in args.folders])
    print(markdown(rows))
    metrics_of = {r["run"]: r.pop("_metrics") for r in rows if "_metrics" in r}
    for line in warnings(metrics_of):
        print(line)
    out = Path(args.out or args.folders[0])

    if run_folder.state(out) == "incomplete":  # its files would be taken for the run's, and go stale
        raise UserError(f"'{out}' is an unfinished run: report.md and report.html do not go into it; give --out FOLDER")
    try:
        if args.csv:
            with open(args.csv, "w", newline="", encoding="utf-8") as stream:
                writer = csv.DictWriter(stream, fieldnames=COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
        written = write_documents(rows, list(metrics_of.values()), out, where=", ".join(args.folders))
    except OSError as err:
        if disk.read_only_error(err) is None and not disk.is_full(err):
            raise
        where = Path(err.filename) if err.filename else out
        raise disk.cannot_write(where, err, "give --out FOLDER (and --csv FILE) where you can write") from None
    for line in written.findings:
        print(line)
    print(f"wrote {written.markdown} and {written.html}" + ("" if written.plots else f" (no plots: {INSTALL})"))
    return 0


@dataclass
class Written:
    markdown: Path
    html: Path
    plots: bool
    findings: list[str]


def write_documents(rows: list[dict[str, Any]], runs: list[dict[str, Any]], out: Path, where: str) -> Written:
    """report.md (figures as files in report_files/) and report.html (figures inside) in `out`."""

    tasks = summarise(runs)
    plots = report_plots.available()
    images = {task.title: report_plots.figures(task) for task in tasks} if plots else None
    unfinished = sum(1 for r in rows if str(r.get("metric", "")).startswith("incomplete"))
    runs_table = (COLUMNS, [[_cell(c, r[c]) for c in COLUMNS] for r in rows])
    doc = report_render.build(tasks, images, runs_table, where, unfinished)
    out.mkdir(parents=True, exist_ok=True)
    pictures = {
        f"{report_render.slug(title)}-{stem}.png": png
        for title, figures in (images or {}).items()
        for stem, (_, png) in figures.items()
    }
    if pictures:
        (out / IMAGES).mkdir(exist_ok=True)
        for name, png in pictures.items():
            (out / IMAGES / name).write_bytes(png)
    write_text(out / "report.md", report_render.markdown(doc, IMAGES))
    write_text(out / "report.html", report_render.html_page(doc, pictures))
    lines = [line for task in tasks for line in [f"{task.title}:", *(f"  {s}" for s in findings(task))]]
    return Written(out / "report.md", out / "report.html", plots, lines)


IMAGES = "report_files"  # beside report.md
