"""The run folder: the model at its root, the resolved config, metrics, predictions, a model card.

RUN_DIR/
  config.json, model.safetensors, tokenizer files   the best model, ready for pipeline()
  adapter/                                          LoRA runs: the adapter with its head
  checkpoints/                                      the Trainer's checkpoints (a few kept)
  config.yaml                                       the resolved run configuration
  metrics.json                                      validation and test results, cost figures
  predictions_test.jsonl                            one line per test example
  README.md                                         the model card
  tensorboard/                                      when trainer.report_to=tensorboard
  COMPLETE                                          written last: the run finished (run_folder.py)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from hf_transfer import baselines
from hf_transfer.assets import hub_id, is_package_source

# Imported inside the functions that use them, not here: huggingface_hub. This module is on the path
# of --help and of a config error, which stay quick (tests/test_architecture.py).


def write_json(path: Path, data: Any) -> None:
    _atomic_write(path, json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def write_yaml(path: Path, data: Any) -> None:
    _atomic_write(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def write_text(path: Path, text: str) -> None:
    _atomic_write(path, text)


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    _atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def _atomic_write(path: Path, text: str) -> None:
    """Write to a temporary file and rename: a reader never sees half a file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; give it the usual mode
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_whole_files(folder: Path, save: Any) -> None:
    """`save(temporary_folder)` (a save_pretrained), then each file it wrote moved into `folder`
    by a rename: a run killed while saving leaves whole files or none, never a 0-byte one."""

    work = Path(tempfile.mkdtemp(dir=folder, prefix=".saving-"))
    try:
        save(work)
        for file in sorted(p for p in work.rglob("*") if p.is_file()):
            target = folder / file.relative_to(work)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(file, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def use_usual_modes(folder: Path) -> None:
    """Give the files of a run folder the mode the user's umask gives new files: libraries that
    write through a private temporary file (safetensors) leave them readable by their owner only."""
    mode = 0o666 & ~_umask()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink() and (path.stat().st_mode & 0o777) != mode:
            os.chmod(path, mode)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def ships_model_code(folder: Path) -> bool:
    """Whether the saved model's class is in a file beside its weights (an `auto_map` in its
    config.json): loading it without hf_transfer then takes trust_remote_code=True."""
    config = folder / "config.json"
    return config.is_file() and "auto_map" in json.loads(config.read_text(encoding="utf-8"))


def model_card(
    *,
    name: str,
    base_model: str,
    base_on_hub: bool,
    dataset: str,
    dataset_on_hub: bool,
    pipeline_task: str,
    strategy: str,
    trainable_modules: list[str],
    metrics: dict[str, Any],
    settings: dict[str, Any],
    usage: str,
    recipe: dict[str, Any],
    extra_sets: dict[str, Any] | None = None,
    dataset_name: str | None = None,
) -> str:
    """The README.md of the run folder, with the metadata block the hub reads: the base model
    and datasets by hub id where they have one, and the scores (`model-index`). `extra_sets`:
    the task's extra test sets by name (their configs: source, data_files, split);
    `dataset_name`: what the card calls the training data (default: the run's name)."""

    extra_sets = extra_sets or {}
    base_id = base_model if base_on_hub else hub_id(base_model)
    datasets = [dataset] if dataset_on_hub else []
    extra_ids = {n: _set_hub_id(s) for n, s in extra_sets.items()}
    datasets += [i for i in extra_ids.values() if i is not None and i not in datasets]
    front = card_metadata(
        name=name,
        base_model=base_id,
        datasets=datasets,
        pipeline_task=pipeline_task,
        tags=["hf_transfer", strategy],
        results=eval_results(
            name, pipeline_task, metrics, dataset if dataset_on_hub else None, extra_sets, extra_ids, dataset_name
        ),
        # Where this run took the base model from, beside the hub id it is a copy of.
        extra={"base_model_source": base_model} if base_id is not None and is_package_source(base_model) else {},
    )
    trainable, total = metrics["trainable_parameters"], metrics["total_parameters"]
    copy_of = f" (a copy of the hub's `{base_id}`)" if base_id is not None and base_id != base_model else ""
    lines = [
        "---",
        front,
        "---",
        "",
        f"# {name}",
        "",
        f"`{base_model}`{copy_of} fine-tuned on `{dataset}` with hf_transfer, using the **{strategy}** strategy.",
        "",
        f"- Trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)",
        f"- What trained: {', '.join(trainable_modules) or '-'}",
        "",
        "## Results",
        "",
        _results_table(metrics),
        "",
        *_baseline_lines(metrics),
        *_calibration_lines(metrics),
        *_extra_sets_lines(extra_sets),
        "## Training",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in settings.items()],
        "",
        "## How to use",
        "",
        "```python",
        usage.rstrip(),
        "```",
        "",
        "## Recipe",
        "",
        "The resolved configuration that produced this model (`config.yaml` beside it):",
        "",
        "```yaml",
        yaml.safe_dump(recipe, sort_keys=False).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def _results_table(metrics: dict[str, Any]) -> str:
    columns = {s: metrics[s] for s in ("validation", "test") if isinstance(metrics.get(s), dict)}
    columns.update({n: r for n, r in (metrics.get("extra_test") or {}).items() if isinstance(r, dict)})
    names: list[str] = []
    for results in columns.values():
        for key, value in results.items():
            if isinstance(value, (int, float)) and key not in names and not key.endswith(("runtime", "per_second")):
                names.append(key)
    if not names:
        return "No labelled evaluation data."
    rows = ["| metric | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for key in names:
        cells = [_fmt(results.get(key)) for results in columns.values()]
        rows.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _baseline_lines(metrics: dict[str, Any]) -> list[str]:
    """The trivial baseline beside the results: its headline score per split, and the verdict."""
    verdict = metrics.get("baseline")
    if not verdict or not verdict.get("scores"):
        return []
    name = verdict["metric"]
    scores = ", ".join(f"{split} {_fmt(results.get(name))}" for split, results in verdict["scores"].items())
    said = {True: "This model clearly beats it.", False: "**This model does not clearly beat it.**"}
    return [f"Trivial baseline ({verdict['predictor']}), {name}: {scores}. {said.get(verdict['beaten'], '')}".rstrip(),
            ""]  # fmt: skip


def _calibration_lines(metrics: dict[str, Any]) -> list[str]:
    """What the validation split did to a regression head (calibration.py), where it did anything."""
    line = metrics.get("head_calibration") or {}
    if not line.get("applied"):
        return []
    said = (f"The output was drawn toward the mean after training: prediction x {line['slope']:.3f} "
            f"{line['intercept']:+.3f}, fitted on the validation split (its scores above are after the fit).")  # fmt: skip
    return [said, ""]


def _extra_sets_lines(extra_sets: dict[str, Any]) -> list[str]:
    if not extra_sets:
        return []
    lines = ["Extra test sets (`task.extra_test`), scored after training as the test split is:", ""]
    for set_name, cfg in extra_sets.items():
        lines.append(f"- {set_name}: `{cfg.source or cfg.data_files}`")
    return [*lines, ""]


# Scores the model-index lists: what a split's results hold, less the cost figures and counts.
_NOT_SCORES = ("loss", "runtime", "samples_per_second", "steps_per_second", "num_examples")


def card_metadata(
    *,
    name: str,
    base_model: str | None,
    datasets: list[str],
    pipeline_task: str,
    tags: list[str],
    results: list[Any],
    extra: dict[str, Any] | None = None,
) -> str:
    """The model card's YAML front matter, as huggingface_hub writes it (its ModelCardData
    turns the EvalResults into the `model-index` layout the hub reads)."""
    from huggingface_hub import ModelCardData

    data = ModelCardData(
        base_model=base_model,
        datasets=datasets or None,
        library_name="transformers",
        pipeline_tag=pipeline_task,
        tags=tags,
        model_name=name if results else None,
        eval_results=results or None,
        **(extra or {}),
    )
    return data.to_yaml()


def eval_results(
    name: str,
    pipeline_task: str,
    metrics: dict[str, Any],
    dataset_id: str | None,
    extra_sets: dict[str, Any],
    extra_ids: dict[str, str | None],
    dataset_name: str | None = None,
) -> list[Any]:
    """EvalResults of the test split and of each extra test set: one per score. A dataset
    with no hub id is named by `dataset_name` (else the run: the test split) or by the set's name."""
    from huggingface_hub import EvalResult

    own = dataset_name or name
    sets = [("test", metrics.get("test"), dataset_id or own, f"{own} (test split)", "test")]
    for set_name, results in (metrics.get("extra_test") or {}).items():
        cfg = extra_sets.get(set_name)
        split = getattr(cfg, "split", None) or "test"
        sets.append((set_name, results, extra_ids.get(set_name) or set_name, set_name, split))
    found = []
    for _, results, dataset_type, dataset_name, split in sets:
        if not isinstance(results, dict):
            continue
        for key, value in results.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or key.endswith(_NOT_SCORES):
                continue
            metric, _, average = key.partition("_")
            averaged = average in ("macro", "micro", "weighted")
            found.append(
                EvalResult(
                    task_type=pipeline_task,
                    dataset_type=dataset_type,
                    dataset_name=dataset_name,
                    dataset_split=split,
                    metric_type=metric if averaged else key,
                    metric_value=value,
                    metric_name=key,
                    metric_args={"average": average} if averaged else None,
                )
            )
    return found


def _set_hub_id(cfg: Any) -> str | None:
    return hub_id(cfg.source) if cfg.source is not None and cfg.data_files is None else None


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def headline(metrics: dict[str, Any]) -> str:
    """The metric a run chose its best checkpoint by, as its metrics.json records it (runs of
    earlier versions did not record it: the first of the usual headline metrics they have)."""
    if "best_metric" in metrics:
        return metrics["best_metric"]["name"]
    for name in ("accuracy", "f1", "exact_match", "perplexity", "pearson"):
        if any(isinstance(metrics.get(s), dict) and name in metrics[s] for s in ("test", "validation")):
            return name
    return "loss"


def split_value(metrics: dict[str, Any], split: str, name: str) -> Any:
    """A split's score as metrics.json holds it, or None."""
    results = metrics.get(split)
    return results.get(name) if isinstance(results, dict) else None


def split_score(metrics: dict[str, Any], split: str, name: str) -> str:
    """A split's score as the summary and the model card show it ("-" if none)."""
    return _fmt(split_value(metrics, split, name))


def summary(metrics: dict[str, Any], folder: Path) -> str:
    """A few lines for the end of a run: quality, cost, and where the result is."""
    metric = headline(metrics)

    trainable, total = metrics["trainable_parameters"], metrics["total_parameters"]
    scores = [metric] + [m for m in ("f1_macro",) if m != metric and _any_split_has(metrics, m)]
    lines = [
        "",
        f"  run folder      {folder}",
        f"  strategy        {metrics['strategy']}",
        f"  trainable       {trainable:,} / {total:,} parameters ({100 * trainable / total:.2f}%)",
        *(
            f"  {name:<15} validation {split_score(metrics, 'validation', name)}   "
            f"test {split_score(metrics, 'test', name)}"
            for name in scores
        ),
        *([line] if (line := baselines.summary_line(metrics)) else []),
        *class_balance_lines(metrics),
        *(
            f"  {'out of domain' if i == 0 else '':<15} {set_name} {metric} {_fmt(_score(results, metric))}"
            for i, (set_name, results) in enumerate((metrics.get("extra_test") or {}).items())
        ),
        f"  train time      {metrics['train_runtime_s']:.1f} s   ({metrics['train_samples_per_second']:.1f} samples/s"
        + (f"; evaluating {metrics['train_evaluation_s']:.1f} s of it)" if metrics.get("train_evaluation_s") else ")"),
        f"  wall time       {metrics['wall_time_s']:.1f} s"
        + (
            f"   (+ {metrics['one_time_setup_s']:.1f} s fetching assets, once)"
            if metrics.get("one_time_setup_s")
            else ""
        ),
        f"  peak memory     {metrics['peak_memory_mb']:.0f} MB ({metrics['peak_memory_kind']})",
        "",
    ]
    return "\n".join(lines)


def _score(results: Any, name: str) -> Any:
    return results.get(name) if isinstance(results, dict) else None


def _any_split_has(metrics: dict[str, Any], name: str) -> bool:
    return any(isinstance(metrics.get(split), dict) and name in metrics[split] for split in ("validation", "test"))


# A class this much rarer than the commonest one is called out: accuracy can hide it.
IMBALANCE = 0.5


def minority_class(results: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The rarest class of a split's per-class results, when the classes are imbalanced."""
    per_class = results.get("per_class") if isinstance(results, dict) else None
    supports = {name: row["support"] for name, row in (per_class or {}).items() if row.get("support")}
    if len(supports) < 2 or min(supports.values()) >= IMBALANCE * max(supports.values()):
        return None
    name = min(supports, key=supports.get)
    return name, per_class[name]


def never_predicted(results: dict[str, Any]) -> list[str]:
    """Classes of a split that occur in it but that the model never predicted."""
    per_class = results.get("per_class") if isinstance(results, dict) else None
    return [n for n, row in (per_class or {}).items() if row.get("support") and row.get("predicted") == 0]


def class_balance_lines(metrics: dict[str, Any]) -> list[str]:
    """What a headline figure can hide on imbalanced classes: the rarest class's F1, and the
    classes never predicted (a warning)."""
    split = "test" if isinstance(metrics.get("test"), dict) else "validation"
    results = metrics.get(split)
    lines = []
    rarest = minority_class(results)
    if rarest:
        name, row = rarest
        share = row["support"] / sum(r["support"] for r in results["per_class"].values())
        lines.append(f"  minority class  '{name}' ({share:.0%} of {split}): F1 {row['f1']:.4f}")
    missed = never_predicted(results)
    if missed:
        # Below the baseline the cause is the training, not the classes' balance.
        learned = (metrics.get("baseline") or {}).get("beaten") is not False
        hint = "try task.class_weights=balanced" if learned else "the model did not learn: see baseline"
        lines.append(f"  WARNING         never predicted on {split}: {', '.join(missed)} ({hint})")
    return lines
