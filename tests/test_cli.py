"""The command line as a user types it: training runs, help, config printing, and mistakes.

Most checks call `hf_transfer.cli.main` in-process (a subprocess costs ~10 s of imports);
a few run `python -m hf_transfer` and the `hf-transfer` script for real.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, TEST_RECIPES, cli_env, run_main, tiny_overrides

SHIPPED_RECIPES = [p.stem for p in (ROOT / "recipes" / "recipe").glob("*.yaml")]


def recipes_in(help_text):
    line = next(line for line in help_text.splitlines() if line.startswith("recipe: "))
    return set(line.removeprefix("recipe: ").split(", "))


def test_training_from_the_command_line(checkpoints, data_dir, tmp_path):
    run_dir = tmp_path / "run"
    argv = [*tiny_overrides(checkpoints["bert"], data_dir), "strategy=head_only", f"hydra.run.dir={run_dir}"]
    done = subprocess.run(
        [sys.executable, "-m", "hf_transfer", *argv],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "config.yaml", "metrics.json", "README.md",
                 "predictions_test.jsonl", "train.log", ".hydra/overrides.yaml"):  # fmt: skip
        assert (run_dir / name).exists(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["strategy"] == "head_only" and 0 < metrics["trainable_parameters"] < metrics["total_parameters"]
    assert "trainable" in (run_dir / "train.log").read_text()  # the end-of-run summary is logged
    # The saved model predicts each test text as the run did (labels by name, and their scores).
    from transformers import pipeline

    records = [json.loads(line) for line in (run_dir / "predictions_test.jsonl").read_text().splitlines()]
    assert len(records) == 32 and {r["label"] for r in records} == {"neg", "pos"}
    reloaded = pipeline("text-classification", model=str(run_dir))([r["text"] for r in records])
    assert [p["label"] for p in reloaded] == [r["prediction"] for r in records]
    assert [p["score"] for p in reloaded] == pytest.approx([r["score"] for r in records], abs=2e-6)


def test_a_mistake_exits_2_with_one_line_and_writes_nothing(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "hf_transfer", "strategy=lorra"],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "hf-transfer: error: unknown strategy 'lorra' (did you mean 'lora'?); choose one of: full, head_only, lora, partial_unfreeze"
    ]
    assert not (tmp_path / "runs").exists()


def test_the_console_script_lists_recipes_in_help(tmp_path):
    script = shutil.which("hf-transfer")
    assert script, "the hf-transfer console script is not installed"
    done = subprocess.run([script, "--help"], cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True)
    assert done.returncode == 0
    assert {"bert_sentiment", "gpt_sentiment", "bert_ner"} <= recipes_in(done.stdout)
    assert "strategy: full, head_only, lora, partial_unfreeze" in done.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["strategy.rr=3"], "unknown key 'strategy.rr'"),
        (["trainer.num_train_epoch=3"], "unknown key 'trainer.num_train_epoch' (did you mean 'num_train_epochs'?)"),
        (["trainer.num_train_epochs=abc"], "key 'trainer.num_train_epochs' must be a number, got 'abc'"),
        (["seed=x"], "key 'seed' must be an integer"),
        (["model=gtp2"], "unknown model 'gtp2' (did you mean 'gpt2'?)"),
        (["task=imbd"], "unknown task 'imbd' (did you mean 'imdb'?)"),
        (["recipe=bert_sentimnt"], "unknown recipe 'bert_sentimnt' (did you mean 'bert_sentiment'"),
        (["strategy=[lora"], "cannot read the override"),
        (["trainer.hub_token=abc"], "key 'trainer.hub_token' is set by hf_transfer"),
        (["hub.push=true"], "hub.push=true needs hub.repo_id"),
        (["--config-dir=/no/such/folder"], "--config-dir '/no/such/folder' is not a folder"),
        (["trian"], "unknown command 'trian' (did you mean 'train'?)"),
        (["-m", "strategy=full,lorra"], "unknown strategy 'lorra'"),
        (["-m", "strategy=full,lora", "strategy.rank=4"], "unknown key 'strategy.rank'"),
        # Hydra's own composition errors, and its folders.
        (["+strategy=lora"], "cannot compose the config: Multiple values for strategy"),
        (["--cfg", "jobb"], "argument --cfg/-c: invalid choice: 'jobb'"),
        (["recipe=null"], "Got NoneType (to run without the default recipe, write ~recipe)"),
        (["+seed=1"], "An item is already at 'seed'. (the key is there already: write seed=VALUE, without the +)"),
        (["hydra.run.dir=${oops}"], "hydra.run.dir cannot be resolved: Interpolation key 'oops' not found"),
    ],
)
def test_config_mistakes(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(capsys, *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert "Traceback" not in err + out
    assert not (tmp_path / "runs").exists()


def test_a_broken_recipe_file_is_named_with_its_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine" / "recipe").mkdir(parents=True)
    (tmp_path / "mine" / "recipe" / "broken.yaml").write_text("# @package _global_\nname: [unclosed\n")
    code, out, err = run_main(capsys, "--config-dir", str(tmp_path / "mine"), "recipe=broken")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err + out
    assert f"cannot read a config file: {tmp_path / 'mine' / 'recipe' / 'broken.yaml'}, line 3" in err
    (tmp_path / "mine" / "recipe" / "headless.yaml").write_text("name: mine\n")
    code, _, err = run_main(capsys, "--config-dir", str(tmp_path / "mine"), "recipe=headless")
    assert code == 2 and "a recipe file must start with '# @package _global_'" in err


def test_a_multirun_never_writes_into_an_earlier_sweep(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    earlier = tmp_path / "sweep" / "0-full" / ".hydra" / "overrides.yaml"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("- strategy=full\n")
    code, _, err = run_main(capsys, "-m", "strategy=full,lora", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert code == 2 and "hydra.sweep.dir" in err and "is not empty" in err
    assert earlier.read_text() == "- strategy=full\n" and len(list((tmp_path / "sweep").rglob("*"))) == 3


def test_a_data_mistake_leaves_no_run_folder(capsys, checkpoints, data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(capsys, *tiny_overrides(checkpoints["bert"], data_dir), "task.columns.label=stars")
    assert code == 2 and "column 'stars' (key 'task.columns.label')" in err
    assert not (tmp_path / "runs").exists()


def test_an_earlier_run_is_never_overwritten(capsys, checkpoints, data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    argv = [*tiny_overrides(checkpoints["bert"], data_dir), "trainer.num_train_epochs=1", f"hydra.run.dir={run_dir}"]
    assert run_main(capsys, *argv)[0] == 0
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    code, _, err = run_main(capsys, *argv)
    assert code == 2 and "already holds a run" in err
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before


def test_multirun_trains_one_folder_per_strategy(capsys, checkpoints, data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "sweep"
    code, _, err = run_main(
        capsys, "-m", *tiny_overrides(checkpoints["bert"], data_dir), "strategy=head_only,lora",
        "trainer.num_train_epochs=1", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert code == 0, err
    folders = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert folders == ["0-head_only", "1-lora"]
    strategies = [json.loads((sweep / f / "metrics.json").read_text())["strategy"] for f in folders]
    assert strategies == ["head_only", "lora"]


def test_help_lists_groups_and_recipes(capsys):
    code, out, _ = run_main(capsys, "--help")
    assert code == 0
    assert set(SHIPPED_RECIPES) == recipes_in(out)
    assert "strategy: full, head_only, lora, partial_unfreeze" in out


def test_config_dir_adds_a_users_recipes(capsys):
    code, out, _ = run_main(capsys, f"--config-dir={TEST_RECIPES}", "--help")
    assert recipes_in(out) == set(SHIPPED_RECIPES) | {"tiny"}


def test_cfg_job_prints_the_composed_config(capsys):
    code, out, _ = run_main(
        capsys, "recipe=bert_sentiment", "strategy=lora", "trainer.gradient_checkpointing=true", "--cfg", "job"
    )
    assert code == 0
    assert "name: bert_sentiment" in out and "name: lora" in out and "gradient_checkpointing: true" in out


def test_a_sweep_runs_its_jobs_one_after_another_and_a_failing_job_leaves_nothing(capsys, checkpoints, data_dir,
                                                                                  tmp_path, monkeypatch):  # fmt: skip
    """`-m` is a thin door into the one way jobs run (hf_transfer.jobs, as compare's cells):
    each job in its own folder, Hydra's records there; a job that fails on a user's mistake
    stops the sweep with one line naming it, and leaves nothing of its own behind."""
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "sweep"
    code, out, err = run_main(
        capsys, "-m", *tiny_overrides(checkpoints["bert"], data_dir), "trainer.max_steps=1",
        "task.columns.label=sentiment,stars", "strategy=head_only", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert code == 2 and err.count("hf-transfer: error") == 1 and "Traceback" not in err + out  # (and job 0's bars)
    last = err.strip().splitlines()[-1]
    assert (
        last.startswith("hf-transfer: error: job 1-head_only: ") and "column 'stars' (key 'task.columns.label')" in last
    )
    assert "multirun [1/2] 0-head_only: running" in out and "multirun [2/2] 1-head_only: running" in out
    assert sorted(p.name for p in sweep.iterdir()) == [".lock", "0-head_only", "multirun.yaml"]
    assert (sweep / "multirun.yaml").exists()  # Hydra's record of the sweep
    first = sweep / "0-head_only"
    assert (first / "COMPLETE").exists() and (first / ".hydra" / "overrides.yaml").exists()
    hydra_record = (first / ".hydra" / "hydra.yaml").read_text()
    assert "mode: MULTIRUN" in hydra_record and "num: 0" in hydra_record


def test_a_sweep_refuses_what_it_would_not_run(capsys, tmp_path, monkeypatch):
    """A Hydra launcher or sweeper plugin, or an interval() only such a sweeper could sample,
    would silently do nothing: refused, in one line."""
    from hydra.core.config_store import ConfigStore

    monkeypatch.chdir(tmp_path)
    ConfigStore.instance().store(group="hydra/launcher", name="elsewhere", node={"_target_": "somewhere.Launcher"})
    code, _, err = run_main(capsys, "-m", "strategy=full,lora", "hydra/launcher=elsewhere")
    assert code == 2 and "hydra/launcher=elsewhere: hf-transfer runs a sweep's jobs itself" in err
    code, _, err = run_main(capsys, "-m", "trainer.learning_rate=interval(1e-5,1e-3)")
    assert code == 2 and "an interval() is for a sweeper that picks values" in err and "\n" not in err.strip()
    code, _, err = run_main(capsys, "strategy=full,lora")
    assert code == 2 and "Ambiguous value for argument 'strategy=full,lora' (to run one job per value, add -m" in err
    assert not (tmp_path / "runs").exists()


def test_cfg_hydra_resolve_shows_the_folders_a_run_would_take(capsys):
    code, out, err = run_main(capsys, "recipe=bert_sentiment", "strategy=lora", "--cfg", "hydra", "--resolve")
    assert code == 0, err
    run_dir = out.split("  run:\n    dir: ", 1)[1].splitlines()[0]
    assert run_dir.startswith("runs/bert_sentiment/") and run_dir.endswith("-lora") and "${" not in run_dir
    assert "subdir: ${hydra.job.num}-${strategy.name}" in out  # a sweep's own: left as written
    code, out, _ = run_main(capsys, "-m", "strategy=full,lora", "--cfg", "job", "--package", "strategy")
    assert code == 0 and out.count("# @package strategy") == 2 and "name: full" in out and "name: lora" in out


def test_a_sweep_takes_its_jobs_from_a_config_and_refuses_two_jobs_in_one_folder(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine" / "recipe").mkdir(parents=True)
    (tmp_path / "mine" / "recipe" / "sweepy.yaml").write_text(
        "# @package _global_\nhydra:\n  sweeper:\n    params:\n      strategy: head_only,lora\n"
    )
    argv = ["--config-dir", str(tmp_path / "mine"), "recipe=sweepy"]
    code, out, err = run_main(capsys, "-m", *argv, "--cfg", "job", "--package", "strategy")
    assert code == 0, err
    assert out.count("# @package strategy") == 2 and "name: head_only" in out and "name: lora" in out
    code, out, _ = run_main(capsys, "-m", "strategy=glob(*_*)", "--cfg", "job", "--package", "strategy")
    assert code == 0 and "name: head_only" in out and "name: partial_unfreeze" in out and "name: full" not in out
    code, _, err = run_main(capsys, "-m", "seed=1,2", "hydra.sweep.subdir=same", f"hydra.sweep.dir={tmp_path / 's'}")
    assert code == 2 and "jobs 0 and 1 of the sweep would share the folder 'same' (hydra.sweep.subdir)" in err
    assert not (tmp_path / "s").exists() and not (tmp_path / "runs").exists()
    code, _, err = run_main(capsys, "-m", 'hydra.sweeper.params.strategy="full,lora"')  # Hydra cannot apply it
    assert code == 2 and "cannot compose the config" in err and "Traceback" not in err


@pytest.mark.parametrize("flag", [["-cn", "config"], ["--config-name=config"], ["--info"], ["-cp", "conf"]])
def test_a_flag_of_hydras_own_command_line_is_named_with_what_to_use(capsys, flag):
    code, _, err = run_main(capsys, *flag, "recipe=bert_sentiment")
    assert code == 2 and f"{flag[0].split('=')[0]} is a flag of Hydra's command line" in err
    assert len(err.strip().splitlines()) == 1


def test_a_run_that_changes_directory_still_writes_into_its_own_folder(capsys, checkpoints, data_dir, tmp_path,
                                                                      monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    argv = [*tiny_overrides(checkpoints["bert"], data_dir), "trainer.max_steps=1", "hydra.run.dir=runs/here",
            "hydra.job.chdir=true"]  # fmt: skip
    code, _, err = run_main(capsys, *argv)
    assert code == 0, err
    assert (tmp_path / "runs" / "here" / "COMPLETE").exists() and not (tmp_path / "runs" / "here" / "runs").exists()
