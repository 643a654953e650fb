"""What a set of finished runs says: runs grouped into cells (the seeds of one setting), their
means and spreads, and the findings, as plain sentences computed from those numbers.

A cell is one task, model, strategy, start (pretrained or random weights) and label budget;
its runs differ by seed only. Every figure is read from the runs' metrics.json: the headline
metric is each run's own `best_metric`, out-of-domain scores are under `extra_test`, the model
is `model_name` (the model group's option: minilm, mpnet). Where a task's runs have more than
one model, the table, the plots and the sentences name each cell's model; with one, they read
as they did before there was a model dimension.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from typing import Any

from hf_transfer.outputs import headline, split_value
from hf_transfer.strategies import STRATEGIES


@dataclass
class Cell:
    task: str  # the task the run is of: its name (less a -MODEL ending) and task type
    strategy: str
    start: str  # "pretrained" or "random"
    budget: str  # "8/class", "1000" or "all" (metrics.json's train_budget)
    metric: str
    greater_is_better: bool
    seeds: list[int] = field(default_factory=list)
    train_examples: list[int] = field(default_factory=list)
    test: list[float] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=dict)  # out-of-domain set -> scores
    train_s: list[float] = field(default_factory=list)
    samples_per_s: list[float] = field(default_factory=list)
    trainable: list[int] = field(default_factory=list)
    peak_mb: list[float] = field(default_factory=list)
    # The trivial baseline's test score (metrics.json's baseline), and the runs that did not clearly beat it.
    baseline: list[float] = field(default_factory=list)
    baseline_predictor: str | None = None
    not_beaten: int = 0
    # What sets this cell apart from others of the same model, strategy, start and budget ("" if
    # none): runs are one cell only when all their settings but the seed are the same.
    variant: str = ""
    model: str = ""  # metrics.json's model_name (see model_of)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.test)

    @property
    def spread(self) -> float | None:
        """The standard deviation over seeds (None with one seed)."""
        return statistics.stdev(self.test) if len(self.test) > 1 else None

    @property
    def examples(self) -> float:
        return statistics.fmean(self.train_examples)

    @property
    def seconds(self) -> float:
        return statistics.fmean(self.train_s)

    def extra_mean(self, name: str) -> float | None:
        scores = self.extra.get(name)
        return statistics.fmean(scores) if scores else None

    def better(self, a: float, b: float) -> bool:
        """Whether score `a` is at least as good as `b`."""
        return a >= b if self.greater_is_better else a <= b


@dataclass
class Task:
    title: str
    metric: str
    greater_is_better: bool
    cells: list[Cell]
    extra_sets: list[str]
    models: list[str] = field(default_factory=list)

    @property
    def several_models(self) -> bool:
        """Whether the cells are told apart by model too (a model column, lines per model)."""
        return len(self.models) > 1


def strategy_order() -> list[str]:
    return list(STRATEGIES)


def summarise(runs: list[dict[str, Any]]) -> list[Task]:
    """Finished runs' metrics -> one Task per task, its cells in a stable order (model,
    strategy, start, training-set size). Runs without a test score are left out (nothing to compare)."""
    cells: dict[tuple[str, ...], Cell] = {}
    titles: dict[str, set[str]] = {}
    scored = [m for m in runs if isinstance(split_value(m, "test", headline(m)), (int, float))]
    variants = _variants(scored)
    for metrics, variant in zip(scored, variants):
        metric = headline(metrics)
        test = split_value(metrics, "test", metric)
        best = metrics.get("best_metric") or {}
        task, model, strategy, start, budget, _ = group = _group(metrics)
        titles.setdefault(task, set()).add(_run_title(metrics))
        cell = cells.setdefault(
            (*group, variant),
            Cell(task, strategy, start, budget, metric, best.get("greater_is_better", metric != "loss"),
                 variant=variant, model=model),
        )  # fmt: skip
        cell.seeds.append(metrics.get("seed"))
        cell.train_examples.append((metrics.get("examples") or {}).get("train", 0))
        cell.test.append(float(test))
        for name, scores in (metrics.get("extra_test") or {}).items():
            value = scores.get(metric) if isinstance(scores, dict) else None
            if isinstance(value, (int, float)):
                cell.extra.setdefault(name, []).append(float(value))
        cell.train_s.append(metrics["train_runtime_s"])
        cell.samples_per_s.append(metrics["train_samples_per_second"])
        cell.trainable.append(metrics["trainable_parameters"])
        if metrics.get("peak_memory_mb") is not None:
            cell.peak_mb.append(metrics["peak_memory_mb"])
        verdict = metrics.get("baseline") or {}
        if verdict.get("split") == "test" and verdict.get("metric") == metric:
            cell.baseline.append(verdict["baseline_score"])
            cell.baseline_predictor = verdict["predictor"]
            cell.not_beaten += verdict.get("beaten") is False
    order = {name: i for i, name in enumerate(strategy_order())}
    tasks: dict[str, Task] = {}
    for cell in sorted(cells.values(), key=lambda c: (c.task, c.model, order.get(c.strategy, 99), c.strategy,
                                                      c.start != "pretrained", c.examples, c.variant)):  # fmt: skip
        if cell.task not in tasks:
            # Titled as before where the runs agree on their name (one model, or a recipe's name).
            shown = titles[cell.task]
            title = next(iter(shown)) if len(shown) == 1 else cell.task
            tasks[cell.task] = Task(title, cell.metric, cell.greater_is_better, [], [])
        task = tasks[cell.task]
        task.cells.append(cell)
        if cell.model not in task.models:
            task.models.append(cell.model)
        for name in cell.extra:
            if name not in task.extra_sets:
                task.extra_sets.append(name)
    return list(tasks.values())


def model_of(metrics: dict[str, Any]) -> str:
    """The run's model as the model group names it (metrics.json's model_name: minilm, mpnet).
    Runs of older versions lack it: their config.yaml's model.name, else the last part of the
    source they recorded (`model`: a hub id, a folder)."""
    if metrics.get("model_name"):
        return str(metrics["model_name"])
    recorded = (metrics.get("_settings") or {}).get("model.name")  # (report.settings_of: JSON text)
    if recorded and json.loads(recorded):
        return str(json.loads(recorded))
    source = str(metrics.get("model") or "?")
    return source.split("#")[0].rstrip("/").rsplit("/", 1)[-1] or source


def _run_title(metrics: dict[str, Any]) -> str:
    return f"{metrics.get('name', '?')} ({metrics.get('task', '?')})"


def _group(metrics: dict[str, Any]) -> tuple[str, str, str, str, str, str]:
    """(task, model, strategy, start, budget, metric): what a cell is, but for its other settings.

    The task is the run's name and task type, the name less a `-MODEL` ending: a run is named
    ${task.name}-${model.name} unless its recipe names it, and one task's runs of two models
    belong in one section of the report, side by side."""
    model = model_of(metrics)
    name = str(metrics.get("name", "?")).removesuffix(f"-{model}") or "?"
    task = f"{name} ({metrics.get('task', '?')})"
    start = "pretrained" if metrics.get("pretrained", True) else "random"
    return task, model, metrics.get("strategy", "?"), start, metrics.get("train_budget", "all"), headline(metrics)


def _variants(runs: list[dict[str, Any]]) -> list[str]:
    """Each run's label among the runs of its group: the settings (report.settings_of, under
    `_settings`) in which the group's runs differ, as `key=value`; "" where they agree."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, metrics in enumerate(runs):
        groups.setdefault(_group(metrics), []).append(i)
    labels = [""] * len(runs)
    for members in groups.values():
        settings = [runs[i].get("_settings") or {} for i in members]
        # A key some runs lack (written by an older version) is no difference between them.
        keys = sorted(set.intersection(*(set(s) for s in settings)) if settings else set())
        differing = [k for k in keys if len({s.get(k) for s in settings}) > 1]
        for i, own in zip(members, settings):
            labels[i] = ", ".join(f"{k}={own.get(k, 'unset')}" for k in differing)
    return labels


def one_point(task: Task) -> float:
    """'One point' of the headline metric: 0.01 on a metric that lives in [0, 1] (accuracy, F1),
    else 1% of the best score."""
    scores = [s for c in task.cells for s in c.test]
    if all(0 <= s <= 1 for s in scores):
        return 0.01
    return abs(best_cell(task).mean) / 100


def best_cell(task: Task, cells: list[Cell] | None = None) -> Cell:
    pool = task.cells if cells is None else cells
    return max(pool, key=lambda c: c.mean) if task.greater_is_better else min(pool, key=lambda c: c.mean)


def describe_budget(cell: Cell) -> str:
    examples = f"{cell.examples:,.0f}"
    if cell.budget == "all":
        return f"all {examples} training examples"
    if cell.budget.endswith("/class"):
        return f"{cell.budget.split('/')[0]} examples per class ({examples} in all)"
    return f"{examples} training examples"


def _score(cell: Cell) -> str:
    seeds = len(cell.test)
    if seeds == 1:
        return f"{cell.mean:.4f}"
    return f"{cell.mean:.4f} (mean of {seeds} seeds, ± {cell.spread:.4f})"


def shown_name(task: Task, cell: Cell) -> str:
    """The cell's strategy, and its model where the task has several: 'full on mpnet'."""
    return f"{cell.strategy} on {cell.model}" if task.several_models else cell.strategy


def _setting(task: Task, cell: Cell) -> str:
    variant = f" ({cell.variant})" if cell.variant else ""
    return f"{shown_name(task, cell)}{variant} from the {cell.start} start with {describe_budget(cell)}"


def findings(task: Task) -> list[str]:
    """The plain sentences of the report, each computed from the cells."""
    metric = task.metric
    best = best_cell(task)
    lines = [f"The best test {metric}, {_score(best)}, came from {_setting(task, best)}."]

    point = one_point(task)
    near = [c for c in task.cells if abs(c.mean - best.mean) <= point + 1e-12]  # (a float's last bit aside)
    fastest = min(near, key=lambda c: c.seconds)
    if fastest is best:
        lines.append(
            f"No other setting got within one point ({point:g}) of it in less training time: it took "
            f"{best.seconds:.1f} s of training."
        )
    else:
        lines.append(
            f"The fastest to get within one point ({point:g}) of it was {_setting(task, fastest)}: "
            f"{fastest.mean:.4f} in {fastest.seconds:.1f} s of training, against {best.seconds:.1f} s for the best "
            f"({best.seconds / max(fastest.seconds, 1e-9):.1f}x the time)."
        )

    random_all = [c for c in task.cells if c.start == "random" and c.budget == "all"]
    pretrained = [c for c in task.cells if c.start == "pretrained"]
    if not random_all:
        lines.append(
            "No run started from random weights with all the data, so what pretraining saves in labels is not "
            "measured (compare --starts pretrained,random, or model.pretrained=false)."
        )
    elif pretrained and not task.several_models:
        lines.append(_labels_saved(task, best_cell(task, random_all), pretrained))
    elif pretrained:
        # Per model: its own random start where it has one, else the best random start of the task.
        for model in dict.fromkeys(c.model for c in pretrained):
            own = [c for c in random_all if c.model == model] or random_all
            lines.append(_labels_saved(task, best_cell(task, own), [c for c in pretrained if c.model == model]))

    lines += _baseline_findings(task)
    if not task.extra_sets:
        lines.append("No out-of-domain test sets were scored (task.extra_test).")
    for name in task.extra_sets:
        parts = []
        for model, strategy in dict.fromkeys((c.model, c.strategy) for c in pretrained):
            cells = [c for c in pretrained if (c.model, c.strategy) == (model, strategy)]
            cells = [c for c in cells if c.extra_mean(name) is not None]
            if not cells:
                continue
            cell = max(cells, key=lambda c: c.examples)  # the most data it had
            outside = cell.extra_mean(name)
            who = shown_name(task, cell)
            if task.greater_is_better and cell.mean > 0:
                parts.append(f"{who} kept {outside / cell.mean:.0%} ({cell.mean:.4f} -> {outside:.4f})")
            else:
                parts.append(f"{who} went from {cell.mean:.4f} to {outside:.4f}")
        if parts:
            lines.append(
                f"Out of domain on {name} (pretrained start, the most training data), of its in-domain test "
                f"{metric}: " + "; ".join(parts) + "."
            )
    return lines


def _labels_saved(task: Task, target: Cell, pretrained: list[Cell]) -> str:
    """How many labelled examples the pretrained start (of one model, where the task has
    several) needed to match `target`, the random start's best with all the data."""
    several = task.several_models
    weights = f"{target.model}'s random weights" if several else "random weights"
    head = (
        f"From {weights} the best test {task.metric} with all the data ({target.examples:,.0f} examples) "
        f"was {target.mean:.4f} ({target.strategy})"
    )
    model = pretrained[0].model
    matched = [c for c in pretrained if c.better(c.mean, target.mean)]
    if not matched:
        return f"{head}; no pretrained run{f' of {model}' if several else ''} matched it."
    fewest = min(matched, key=lambda c: (c.examples, -c.mean if task.greater_is_better else c.mean))
    ratio = target.examples / max(fewest.examples, 1)
    saving = f"{ratio:.1f}x fewer" if ratio > 1 else "no fewer than the random start had"
    whose = f"{model}'s" if several else "the"
    return (
        f"{head}; {whose} pretrained start matched it with {fewest.examples:,.0f} labelled examples "
        f"({fewest.strategy}, budget {fewest.budget}: {fewest.mean:.4f}), {saving}."
    )


def _baseline_findings(task: Task) -> list[str]:
    """Which settings did not clearly beat the trivial baseline (metrics.json's verdict)."""
    measured = [c for c in task.cells if c.baseline]
    if not measured:
        return []
    scores = sorted({round(score, 4) for c in measured for score in c.baseline})
    shown = f"{scores[0]:.4f}" if len(scores) == 1 else f"{scores[0]:.4f} to {scores[-1]:.4f}"
    head = f"The trivial baseline ({measured[0].baseline_predictor}) scores test {task.metric} {shown}"
    below = [c for c in measured if c.not_beaten]
    if not below:
        return [f"{head}; every setting clearly beat it."]
    parts = [f"{_setting(task, c)} ({c.not_beaten} of {len(c.test)} runs, mean {c.mean:.4f})" for c in below]
    return [f"{head}; not clearly beaten by: " + "; ".join(parts) + ". Those runs learned next to nothing."]
