"""The shape of the package: imports run one way (no circles), and a task is one module.

Imports are read from the source (module level and inside functions; those under
`if TYPE_CHECKING:` only serve type checkers and are left out), so a circle that only shows
when some function runs is caught too.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hf_transfer"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The package's modules that `path` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_checking = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from hf_transfer import models` imports a module; `from x.y import name` imports x.y.
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in known}
    return found - {module_name(path)}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for other in sorted(graph.get(node, ())):
            # A package's __init__ is imported with any of its modules: not an edge back.
            if node.startswith(other + "."):
                continue
            if state.get(other) == 1:
                return path[path.index(other) :] + [other]
            if other not in state and (cycle := visit(other)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_circles():
    graph = import_graph()
    assert len(graph) > 20 and graph["hf_transfer.run"]  # the reader found the modules and their imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize(
    ("lower", "upper"),
    [
        ("hf_transfer.tasks.base", "hf_transfer.run"),
        ("hf_transfer.strategies", "hf_transfer.tasks"),
        ("hf_transfer.models", "hf_transfer.tasks"),
        ("hf_transfer.models", "hf_transfer.config"),
        ("hf_transfer.training", "hf_transfer.run"),
        ("hf_transfer.assembly", "hf_transfer.run"),  # builds the parts; the run orders them
        ("hf_transfer.assembly", "hf_transfer.head_first"),
        ("hf_transfer.training", "hf_transfer.assembly"),
        ("hf_transfer.models", "hf_transfer.assembly"),
        ("hf_transfer.strategies", "hf_transfer.assembly"),
        ("hf_transfer.feature_cache", "hf_transfer.assembly"),
        ("hf_transfer.predict", "hf_transfer.cli"),
        ("hf_transfer.report", "hf_transfer.cli"),
        ("hf_transfer.compare", "hf_transfer.cli"),
        ("hf_transfer.jobs", "hf_transfer.cli"),  # runs the jobs a command composed
        ("hf_transfer.jobs", "hf_transfer.compare"),
        ("hf_transfer.compose", "hf_transfer.jobs"),  # composes; never runs
        ("hf_transfer.report_summary", "hf_transfer.run"),  # reads run folders; never runs
        ("hf_transfer.report_render", "hf_transfer.run"),
        ("hf_transfer.hub", "hf_transfer.cli"),
        ("hf_transfer.asset_cache", "hf_transfer.cli"),
        ("hf_transfer.asset_cache", "hf_transfer.run"),  # reads the cache; never runs
        ("hf_transfer.device", "hf_transfer.models"),  # a shared piece: what the device decides
        ("hf_transfer.device", "hf_transfer.training"),
        ("hf_transfer.versions", "hf_transfer.run"),
    ],
)
def test_arrows_point_down(lower, upper):
    """Commands on top, then the run, then its steps, then the small shared pieces."""
    graph = import_graph()
    reachable, todo = set(), [lower]
    while todo:
        for other in graph[todo.pop()]:
            if other not in reachable:
                reachable.add(other)
                todo.append(other)
    assert upper not in reachable


def test_predict_report_and_push_know_no_task_by_name():
    """What a task is lives in its module: the commands ask the task registry and the run folder."""
    for command in ("predict.py", "report.py", "report_summary.py", "report_plots.py", "report_render.py",
                    "compare.py", "hub.py", "run.py", "training.py"):  # fmt: skip
        source = (PACKAGE / command).read_text(encoding="utf-8")
        for name in ("text_classification", "token_classification", "question_answering", "causal_lm",
                     "text-classification", "question-answering", "ForSequenceClassification"):  # fmt: skip
            assert name not in source, (command, name)


def test_a_new_task_is_one_module_and_one_yaml(tmp_path):
    """Drop a task module into (a copy of) the package and a YAML into a config folder: the
    registry, the schema and `task=NAME` know it; nothing else is edited."""
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "hf_transfer", ignore=shutil.ignore_patterns("__pycache__"))
    conf = PACKAGE.parent / "conf"
    shutil.copytree(conf, copy / "hf_transfer" / "conf", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        PACKAGE.parent / "recipes", copy / "hf_transfer" / "recipes", ignore=shutil.ignore_patterns("__pycache__")
    )
    (copy / "hf_transfer" / "tasks" / "sentence_pairs.py").write_text(
        "from dataclasses import dataclass\n"
        "from typing import Literal\n"
        "from hf_transfer.tasks.text_classification import TextClassification, TextClassificationConfig\n\n"
        "@dataclass\n"
        "class SentencePairsConfig(TextClassificationConfig):\n"
        '    type: Literal["sentence_pairs"]  # type: ignore[assignment]\n\n'
        "class SentencePairs(TextClassification):\n"
        "    Config = SentencePairsConfig\n"
    )
    user_conf = tmp_path / "conf" / "task"
    user_conf.mkdir(parents=True)
    (user_conf / "pairs.yaml").write_text("type: sentence_pairs\nname: pairs\ndata: {source: x.csv}\n")
    code = (
        "from hf_transfer.compose import compose; from hf_transfer.config import validate; "
        "from hf_transfer.tasks import TASKS, task_class; "
        f"cfg = validate(compose(['task=pairs'], config_dir={str(tmp_path / 'conf')!r})); "
        "print(sorted(TASKS), type(cfg.task).__name__, task_class(cfg.task.type).__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**__import__("os").environ,
                          "PYTHONPATH": str(copy)}, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "sentence_pairs" in done.stdout and "SentencePairsConfig SentencePairs" in done.stdout


def test_a_run_changes_no_training_arguments_and_reads_the_checkpoint_config_once(
    checkpoints, data_dir, tmp_path, monkeypatch
):
    """assembly.py builds each part once, whole: no TrainingArguments field is set after it is
    built (its own checks saw every value), and config.json is read once, however many parts
    need it. A few-label schedule (min_steps) and a head-first probe are in the run."""
    import dataclasses

    from conftest import compose_tiny
    from transformers import AutoConfig, TrainingArguments

    from hf_transfer.run import run

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    built, changed = set(), []
    init, setattr_ = TrainingArguments.__init__, TrainingArguments.__setattr__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        built.add(id(self))

    def __setattr__(self, name, value):
        if name in fields and id(self) in built:
            changed.append(name)
        setattr_(self, name, value)

    reads = []
    from_pretrained = AutoConfig.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        reads.append(args[0] if args else kwargs)
        return from_pretrained(cls, *args, **kwargs)

    monkeypatch.setattr(TrainingArguments, "__init__", __init__)
    monkeypatch.setattr(TrainingArguments, "__setattr__", __setattr__)
    monkeypatch.setattr(AutoConfig, "from_pretrained", classmethod(counting))
    cfg = compose_tiny(checkpoints["bert"], data_dir, "strategy=partial_unfreeze", "strategy.min_steps=30",
                       "strategy.head_epochs=1", "task.data.train_per_class=8")  # fmt: skip
    result = run(cfg, tmp_path / "run")
    assert result.metrics["train_batch_size"] == 4  # the schedule for 16 examples was in the arguments built
    assert result.metrics["head_probe"]["epochs"] == 1
    assert len(built) >= 3 and changed == []  # the check, the probe's and the run's
    assert len(reads) == 1, reads


def test_help_and_a_config_mistake_load_nothing_heavy(tmp_path):
    """The modules on these paths keep torch, transformers, datasets and the like inside the
    functions that use them (each says so at its imports); everything else imports at the top."""
    code = (
        "import sys, contextlib, io; from hf_transfer.cli import main\n"
        "for argv in (['--help'], ['trainer.num_train_epoch=3'], ['validate', 'seed=x'], ['recipe=gpt_sentiment', "
        "'--cfg', 'job'], ['predict', '--help'], ['compare', '--help'], ['report', '--help'], ['cache', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "        try: main(argv)\n"
        "        except SystemExit: pass\n"
        "heavy = ('torch', 'transformers', 'datasets', 'peft', 'accelerate', 'huggingface_hub', 'matplotlib', 'evaluate')\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
