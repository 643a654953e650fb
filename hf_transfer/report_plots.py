"""The report's figures, as PNG bytes: matplotlib (the `report` extra), drawn off-screen.

Each figure is one question: how quality grows with labelled data (the learning curve), what
it costs in training time, in trainable parameters, and how much of it holds out of domain.
Colour is the strategy; a solid line or filled marker the pretrained start, a dashed line or
hollow marker the random one; where a task's runs have several models, the marker's shape is
the model (and the legend names it: "full, mpnet (pretrained)").
"""

from __future__ import annotations

import io
from typing import Any

from hf_transfer.report_summary import Cell, Task

# Imported inside the functions that use them, not here: matplotlib (optional, and slow to import).
# This module is on the path of --help and of a config error, which stay quick
# (tests/test_architecture.py).

INSTALL = "pip install 'hf-transfer-learning[report]'"  # the extra that brings matplotlib
MARKERS = "o^sDvP*X"  # one shape per model, or per out-of-domain set


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def figures(task: Task) -> dict[str, tuple[str, bytes]]:
    """{file stem: (title, PNG bytes)} of one task's figures."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    drawn = {
        "learning_curve": (f"Test {task.metric} against training-set size", _learning_curve(task)),
        "metric_vs_time": (f"Test {task.metric} against training time", _scatter(task, "time")),
        "metric_vs_parameters": (f"Test {task.metric} against trainable parameters", _scatter(task, "parameters")),
    }
    if task.extra_sets:
        drawn["out_of_domain"] = (f"In-domain against out-of-domain {task.metric}", _out_of_domain(task))
    return drawn


def _colours(task: Task) -> dict[str, Any]:
    import matplotlib

    palette = matplotlib.colormaps["tab10"]
    strategies = list(dict.fromkeys(c.strategy for c in task.cells))
    return {name: palette(i % 10) for i, name in enumerate(strategies)}


def _figure() -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    axes.grid(True, which="both", alpha=0.3)
    return figure, axes


def _log_x(axes: Any) -> None:
    """A log x axis with plain numbers (16, 100, 1,000), not powers of ten."""
    from matplotlib.ticker import FuncFormatter

    axes.set_xscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 1 else f"{value:g}")
    axes.xaxis.set_major_formatter(plain)
    axes.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: ""))


def _png(figure: Any, axes: Any) -> bytes:
    import matplotlib.pyplot as plt

    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="small", loc="best")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def _label(task: Task, cell: Cell) -> str:
    """'full (pretrained)'; 'full, mpnet (pretrained)' where the task has several models."""
    model = f", {cell.model}" if task.several_models else ""
    return f"{cell.strategy}{model} ({cell.start})"


def _model_number(task: Task, cell: Cell) -> int:
    return task.models.index(cell.model) if task.several_models else 0


def _series(task: Task) -> dict[tuple[str, str, str], list[Cell]]:
    """A line per model, strategy and start, its cells from the least training data to the most."""
    series: dict[tuple[str, str, str], list[Cell]] = {}
    for cell in task.cells:
        series.setdefault((cell.model, cell.strategy, cell.start), []).append(cell)
    return {key: sorted(cells, key=lambda c: c.examples) for key, cells in series.items()}


def _learning_curve(task: Task) -> bytes:
    colours = _colours(task)
    figure, axes = _figure()
    for (_, strategy, start), cells in _series(task).items():
        pretrained = start == "pretrained"
        # One model: a circle for the pretrained start, a square for the random one (as always);
        # several: the model's shape, filled or hollow.
        marker = MARKERS[_model_number(task, cells[0]) % len(MARKERS)] if task.several_models else "os"[not pretrained]
        axes.errorbar(
            [c.examples for c in cells],
            [c.mean for c in cells],
            yerr=[c.spread or 0 for c in cells],
            color=colours[strategy],
            linestyle="-" if pretrained else "--",
            marker=marker,
            markerfacecolor=colours[strategy] if pretrained else "white",
            capsize=3,
            label=_label(task, cells[0]),
        )
    _log_x(axes)
    axes.set_xlabel("training examples (log scale)")
    axes.set_ylabel(f"test {task.metric}")
    axes.set_title(f"{task.title}: learning curve", fontsize="medium")
    return _png(figure, axes)


def _scatter(task: Task, against: str) -> bytes:
    colours = _colours(task)
    figure, axes = _figure()
    labelled = set()
    for cell in task.cells:
        x = cell.seconds if against == "time" else cell.trainable[0]
        key = (cell.model, cell.strategy, cell.start)
        axes.scatter(
            [x],
            [cell.mean],
            s=20 + 12 * len(str(int(cell.examples))),  # a larger marker, more training data
            marker=MARKERS[_model_number(task, cell) % len(MARKERS)],
            color=colours[cell.strategy] if cell.start == "pretrained" else "white",
            edgecolors=colours[cell.strategy],
            linewidths=1.5,
            label=_label(task, cell) if key not in labelled else None,
        )
        labelled.add(key)
    _log_x(axes)
    what = "training time, s" if against == "time" else "trainable parameters"
    axes.set_xlabel(f"{what} (log scale); a larger marker, more training examples")
    axes.set_ylabel(f"test {task.metric}")
    axes.set_title(f"{task.title}: quality against {what.split(',')[0]}", fontsize="medium")
    return _png(figure, axes)


def _out_of_domain(task: Task) -> bytes:
    colours = _colours(task)
    figure, axes = _figure()
    labelled = set()
    values = []
    for cell in task.cells:
        for number, name in enumerate(task.extra_sets):
            outside = cell.extra_mean(name)
            if outside is None:
                continue
            values += [cell.mean, outside]
            key = (cell.model, cell.strategy, cell.start, name)
            shape = _model_number(task, cell) * len(task.extra_sets) + number  # one per model and set
            axes.scatter(
                [cell.mean],
                [outside],
                marker=MARKERS[shape % len(MARKERS)],
                color=colours[cell.strategy] if cell.start == "pretrained" else "white",
                edgecolors=colours[cell.strategy],
                linewidths=1.5,
                label=f"{_label(task, cell)} on {name}" if key not in labelled else None,
            )
            labelled.add(key)
    if values:
        low, high = min(values), max(values)
        axes.plot([low, high], [low, high], color="grey", linewidth=1, linestyle=":", label="as good as in domain")
    axes.set_xlabel(f"in-domain test {task.metric}")
    axes.set_ylabel(f"out-of-domain {task.metric}")
    axes.set_title(f"{task.title}: in domain against out of domain", fontsize="medium")
    return _png(figure, axes)
