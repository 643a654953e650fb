"""`hf-transfer compare`: a grid of runs that skips what is finished and resumes what is not;
label budgets that keep validation and test the same; a model axis (--models) in folders of its own."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
import yaml
from conftest import TEST_RECIPES, cli_env, tiny_overrides

from hf_transfer import run_folder
from hf_transfer.cli import main
from hf_transfer.compare import Budget, parse_budget, parse_grid
from hf_transfer.errors import UserError


def test_budget_words():
    assert parse_budget("8/class") == Budget(per_class=8)
    assert parse_budget("1000") == Budget(total=1000)
    assert parse_budget("ALL") == Budget()
    assert [parse_budget(b).folder for b in ("64/class", "1000", "all")] == ["n64pc", "n1000", "all"]
    for bad in ("8/klass", "0", "-3", "eight", "1e3", "8 /class"):
        with pytest.raises(UserError, match="bad budget"):
            parse_budget(bad)
    grid = parse_grid(None, "8/class,all,8/class", "pretrained,random", 2)
    assert grid.strategies == ["head_only", "full", "partial_unfreeze", "lora"]  # all four by default
    assert len(grid.cells(42)) == 4 * 2 * 2 * 2 and grid.cells(42)[-1].name == "lora/random/all/seed43"
    with pytest.raises(UserError, match="unknown strategy 'ful'.*did you mean 'full'"):
        parse_grid("full,ful", "all", "pretrained", 1)
    with pytest.raises(UserError, match="unknown start 'scratch'"):
        parse_grid("full", "all", "scratch", 1)


def test_a_model_axis_adds_a_folder_level_and_no_model_axis_keeps_the_old_layout():
    plain = parse_grid("full", "8/class", "pretrained", 1)
    assert plain.models is None and [c.name for c in plain.cells(42)] == ["full/pretrained/n8pc/seed42"]
    assert not any(o.startswith("model=") for o in plain.cells(42)[0].overrides(7))  # the recipe's model
    assert plain.describe(42)[-1] == "  1 runs = 1 strategies x 1 budgets x 1 starts x 1 seeds"
    grid = parse_grid("full,lora", "8/class,all", "pretrained", 2, "minilm,mpnet,minilm")
    assert grid.models == ["minilm", "mpnet"]  # as the other axes: each once
    cells = grid.cells(42)
    assert len(cells) == 2 * 2 * 2 * 2 and cells[0].name == "minilm/full/pretrained/n8pc/seed42"
    assert cells[-1].name == "mpnet/lora/pretrained/all/seed43"
    assert cells[2].overrides(7)[0] == "model=mpnet"  # a budget's models side by side, before the next budget
    lines = grid.describe(42)
    assert lines[0] == "  models      minilm, mpnet"
    assert lines[-1] == "  16 runs = 2 models x 2 strategies x 2 budgets x 1 starts x 2 seeds"
    with pytest.raises(UserError, match="--models needs at least one value"):
        parse_grid("full", "all", "pretrained", 1, " , ")


def test_a_mistake_is_one_line_and_exit_2_before_anything_loads(tmp_path):
    code = (
        "import sys\nfrom hf_transfer.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as end:\n"
        "    print(end.code, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    for argv, message in ((["--budgets", "8/klass"], "bad budget '8/klass'"),
                          (["--strategies", "full,lorra"], "unknown strategy 'lorra'"),
                          (["strategy=lora"], "give its values with --strategies"),
                          (["--models", "minilm,mpnett"],
                           "unknown model 'mpnett' in key '--models' (did you mean 'mpnet'"),
                          (["--models", "mpnet", "model=minilm"], "'model=minilm': compare sets model")):  # fmt: skip
        done = subprocess.run([sys.executable, "-c", code, "compare", *argv], cwd=tmp_path, env=cli_env(tmp_path),
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.stdout.split() == ["2", "False", "False"], done.stderr[-2000:]
        assert done.stderr.count("\n") == 1 and message in done.stderr and "Traceback" not in done.stderr


def test_label_budgets_are_stratified_nested_seeded_and_leave_the_held_out_splits_alone():
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    from hf_transfer.data import DatasetConfig, make_splits

    labels = [0] * 60 + [1] * 30 + [2] * 10  # 60% / 30% / 10%
    features = Features({"text": Value("string"), "label": ClassLabel(names=["a", "b", "c"])})
    raw = DatasetDict(
        {
            "train": Dataset.from_dict({"text": [f"t{i}" for i in range(100)], "label": labels}, features=features),
            "test": Dataset.from_dict({"text": ["x", "y"], "label": [0, 1]}, features=features),
        }
    )

    def splits(seed: int = 1, **budget):
        return make_splits(raw, DatasetConfig(source="x", split_seed=7, **budget), seed)

    whole = splits()
    small, large = splits(train_per_class=3), splits(train_per_class=20)
    assert Counter(small["train"]["label"]) == {0: 3, 1: 3, 2: 3}
    assert Counter(large["train"]["label"]) == {0: 20, 1: 20, 2: 9}  # class c has 9 in train: all of them
    assert set(small["train"]["text"]) < set(large["train"]["text"]) < set(whole["train"]["text"])
    assert Counter(splits(train_size=30)["train"]["label"]) == {0: 18, 1: 9, 2: 3}  # train's 54 / 27 / 9, a third
    assert splits(train_size=1000)["train"]["text"] == whole["train"]["text"]
    assert splits(seed=2, train_per_class=3)["train"]["text"] != small["train"]["text"]  # another seed, another draw
    for budgeted in (small, large):
        assert budgeted["validation"]["text"] == whole["validation"]["text"]
        assert budgeted["test"]["text"] == whole["test"]["text"]
    with pytest.raises(ValueError, match="not both"):  # schema.build makes it a UserError
        DatasetConfig(source="x", train_per_class=3, train_size=10)


def _metrics_mtimes(out):
    return {p.parent.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("metrics.json")}


def test_a_grid_runs_is_skipped_when_finished_and_resumes_what_is_not(checkpoints, data_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", *tiny_overrides(checkpoints["bert"], data_dir, "trainer.max_steps=2", "trainer.save_steps=1"),
            "--strategies", "full,head_only", "--budgets", "4/class,all", "--starts", "pretrained", "--out", str(out)]  # fmt: skip
    names = ["full/pretrained/n4pc/seed42", "head_only/pretrained/n4pc/seed42",
             "full/pretrained/all/seed42", "head_only/pretrained/all/seed42"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "4 runs = 2 strategies x 2 budgets x 1 starts x 1 seeds" in printed
    assert f"compare [1/4] {names[0]}: running" in printed and f"compare [4/4] {names[3]}: running" in printed
    metrics = {name: json.loads((out / name / "metrics.json").read_text()) for name in names}
    for name, m in metrics.items():
        strategy, start, budget, seed = name.split("/")
        assert run_folder.state(out / name) == "complete"
        assert (m["strategy"], m["pretrained"], m["seed"]) == (strategy, True, 42)
        assert m["train_budget"] == {"n4pc": "4/class", "all": "all"}[budget]
    assert metrics[names[0]]["examples"]["train"] == 8  # 4 of each of the two classes
    assert metrics[names[2]]["examples"]["train"] > 8
    test_texts = {name: [json.loads(line)["text"] for line in (out / name / "predictions_test.jsonl").open()]
                  for name in names}  # fmt: skip
    assert len({tuple(t) for t in test_texts.values()}) == 1  # the same test split everywhere
    assert len({json.dumps(m["examples"]["validation"]) for m in metrics.values()}) == 1

    before = _metrics_mtimes(out)
    assert main(argv) == 0  # the same command again: nothing to do
    printed = capsys.readouterr().out
    assert printed.count("skipped (complete)") == 4 and ": running" not in printed
    assert _metrics_mtimes(out) == before

    # One cell killed after a checkpoint (as tests/test_report.py makes one), one removed.
    killed, removed = out / names[1], out / names[3]
    for name in (run_folder.COMPLETE, "metrics.json", "config.json"):
        (killed / name).unlink()
    assert run_folder.state(killed) == "incomplete"
    import shutil

    shutil.rmtree(removed)
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"compare [2/4] {names[1]}: resuming" in printed and f"compare [4/4] {names[3]}: running" in printed
    assert printed.count("skipped (complete)") == 2
    assert run_folder.state(killed) == "complete" and run_folder.state(removed) == "complete"
    assert json.loads((killed / "metrics.json").read_text())["resumed_from"].startswith("checkpoints/checkpoint-")
    after = _metrics_mtimes(out)
    assert {k: after[k] for k in (names[0], names[2])} == {k: before[k] for k in (names[0], names[2])}

    # Another config into the same folder would mix two comparisons: refused, nothing run.
    with pytest.raises(SystemExit) as end:
        main([*argv, "trainer.learning_rate=0.5"])
    assert end.value.code == 2 and "holds a run of another config" in capsys.readouterr().err

    # The report reads the cells' own numbers.
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    for name, m in metrics.items():
        strategy, _, budget, _ = name.split("/")
        label = {"n4pc": "4/class", "all": "all"}[budget]
        metric = m["best_metric"]["name"]
        row = f"| {strategy} | pretrained | {label} | {m['examples']['train']:,} | 1 | "
        assert row + f"{json.loads((out / name / 'metrics.json').read_text())['test'][metric]:.4f} |" in report


def test_a_dry_run_checks_each_cell_as_the_run_would(checkpoints, tmp_path, capsys):
    """Per-class budgets on a multi-label task fail in the data step: the dry run says so."""
    from test_label_kinds import rows

    from conftest import write_csv

    folder = tmp_path / "kinds"
    folder.mkdir()
    write_csv(folder / "train.csv", rows(60, 1))
    write_csv(folder / "test.csv", rows(20, 2))
    common = tiny_overrides(checkpoints["bert"], folder, "task.columns.text=review", "task.columns.label=kinds",
                            "task.problem_type=multi_label", "task.label_separator=';'")  # fmt: skip
    out = tmp_path / "cmp"
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", *common, "--strategies", "full", "--budgets", "all,4/class", "--starts", "pretrained",
              "--out", str(out), "--dry-run"])  # fmt: skip
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "cell full/pretrained/n4pc/seed42: " in err and "train_per_class" in err
    assert not out.exists()
    assert main(["compare", *common, "--strategies", "full", "--budgets", "all", "--starts", "pretrained",
                 "--out", str(out), "--dry-run"]) == 0  # fmt: skip
    assert "checked as the runs would be: 1 settings" in capsys.readouterr().out


def _two_models(tmp_path, checkpoints, data_dir):
    """A --config-dir with two options of the model group (tiny_bert, tiny_mpnet: two tiny
    checkpoints) and a recipe that, unlike tests' tiny, leaves the model and the run's name
    to them (runs named ${task.name}-${model.name}; the data in the recipe, not an override,
    which would name the runs after the data folder)."""
    config_dir = tmp_path / "conf"
    (config_dir / "model").mkdir(parents=True)
    for name, arch in (("tiny_bert", "bert"), ("tiny_mpnet", "mpnet")):
        model = {"name": name, "source": str(checkpoints[arch])}
        (config_dir / "model" / f"{name}.yaml").write_text(yaml.safe_dump(model))
    (config_dir / "task").mkdir()
    for task in (TEST_RECIPES / "task").glob("*.yaml"):
        (config_dir / "task" / task.name).write_text(task.read_text())
    recipe = yaml.safe_load((TEST_RECIPES / "recipe" / "tiny.yaml").read_text())
    for key in ("model", "name"):
        recipe.pop(key)
    recipe.setdefault("task", {}).setdefault("data", {})["source"] = str(data_dir)
    (config_dir / "recipe").mkdir()
    header = "# @package _global_\n"
    (config_dir / "recipe" / "two_models.yaml").write_text(header + yaml.safe_dump(recipe, sort_keys=False))
    named = {**recipe, "model": {"name": "tiny"}}  # a recipe that names the model itself, as tests' tiny does
    (config_dir / "recipe" / "one_name.yaml").write_text(header + yaml.safe_dump(named, sort_keys=False))
    return config_dir


def test_a_grid_over_two_models_runs_each_in_its_folder_and_is_one_task_in_the_report(
    checkpoints, data_dir, tmp_path, capsys
):
    config_dir = _two_models(tmp_path, checkpoints, data_dir)
    out = tmp_path / "cmp"
    common = [f"--config-dir={config_dir}", "recipe=two_models", "trainer.max_steps=2", "--strategies", "full",
              "--budgets", "4/class", "--starts", "pretrained", "--out", str(out)]  # fmt: skip
    argv = ["compare", *common, "--models", "tiny_bert,tiny_mpnet"]
    names = ["tiny_bert/full/pretrained/n4pc/seed42", "tiny_mpnet/full/pretrained/n4pc/seed42"]

    assert main([*argv, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "  models      tiny_bert, tiny_mpnet" in printed
    assert "2 runs = 2 models x 1 strategies x 1 budgets x 1 starts x 1 seeds" in printed
    assert "checked as the runs would be: 2 settings" in printed and not out.exists()

    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"compare [1/2] {names[0]}: running" in printed and f"compare [2/2] {names[1]}: running" in printed
    assert sorted(p.parent.relative_to(out).as_posix() for p in out.rglob("metrics.json")) == names
    for name, arch in zip(names, ("bert", "mpnet")):
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert (metrics["model_name"], metrics["model"]) == (name.split("/")[0], str(checkpoints[arch]))
        assert metrics["name"] == f"tiny_sentiment-{metrics['model_name']}"  # ${task.name}-${model.name}
        assert run_folder.state(out / name) == "complete"

    before = _metrics_mtimes(out)
    assert main(argv) == 0  # the same command again: nothing to do
    printed = capsys.readouterr().out
    assert printed.count("skipped (complete)") == 2 and ": running" not in printed
    assert _metrics_mtimes(out) == before

    # Another config into the folder; the same runs asked for in the other layout: refused, nothing run.
    in_the_other_layout = f"cell full/pretrained/n4pc/seed42: '{out / names[0]}' holds a run of it already"
    for again, message in (([*argv, "trainer.learning_rate=0.5"], "holds a run of another config"),
                           (["compare", *common, "model=tiny_bert"], in_the_other_layout)):  # fmt: skip
        with pytest.raises(SystemExit) as end:
            main(again)
        err = capsys.readouterr().err
        assert end.value.code == 2 and message in err and err.count("\n") == 1
    assert _metrics_mtimes(out) == before and not (out / "full").exists()

    # One task, a row per model, the sentences naming the model.
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text().split("## Every run")[0]
    sections = [line for line in report.splitlines() if line.startswith("## ")]
    assert sections == ["## tiny_sentiment (text_classification)"]  # the runs' names less -MODEL
    assert "| model | strategy | start | budget | train examples | seeds |" in report
    for name in names:
        metrics = json.loads((out / name / "metrics.json").read_text())
        score = metrics["test"][metrics["best_metric"]["name"]]
        assert f"| {metrics['model_name']} | full | pretrained | 4/class | 8 | 1 | {score:.4f} |" in report
    assert "came from full on tiny_" in report


def test_models_are_checked_against_the_model_group_and_must_be_told_apart(checkpoints, data_dir, tmp_path, capsys):
    config_dir = _two_models(tmp_path, checkpoints, data_dir)
    common = ["compare", f"--config-dir={config_dir}", "--strategies", "full", "--budgets", "all", "--starts",
              "pretrained", "--out", str(tmp_path / "cmp"), "--dry-run"]  # fmt: skip
    errors = []
    for argv, message in (([*common, "recipe=two_models", "--models", "tiny_bert,tiny_mpnett"],
                           "unknown model 'tiny_mpnett' in key '--models' (did you mean 'tiny_mpnet'"),
                          ([*common, "recipe=one_name", "--models", "tiny_bert,tiny_mpnet"],
                           "--models tiny_bert and tiny_mpnet both run model.name 'tiny'")):  # fmt: skip
        with pytest.raises(SystemExit) as end:
            main(argv)
        err = capsys.readouterr().err
        assert end.value.code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err
        errors.append(err)
    assert "choose one of: bert_base, " in errors[0] and ", mpnet, " in errors[0]  # conf/'s options
    assert errors[0].endswith(", tiny_bert, tiny_mpnet\n")  # and --config-dir's
    assert not (tmp_path / "cmp").exists()
