"""Nothing lost: a run killed (SIGKILL) or interrupted (Ctrl-C) resumes and ends as if it had not
stopped; one run per folder; a folder says whether its run finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from conftest import ROOT, cli_env, compose_tiny, tiny_overrides
from safetensors.torch import load_file

from hf_transfer import run_folder
from hf_transfer.cli import main
from hf_transfer.run import run

# 72 training rows in batches of 8: 9 steps an epoch, 27 in all; a checkpoint (and an
# evaluation) every 4 steps, so that step 12 is in the middle of the second epoch.
STEPS = ["trainer.num_train_epochs=3", "trainer.per_device_train_batch_size=8", "trainer.save_strategy=steps",
         "trainer.save_steps=4", "trainer.eval_strategy=steps", "trainer.eval_steps=4", "trainer.save_total_limit=3",
         "trainer.logging_steps=1",
         "trainer.load_best_model_at_end=false"]  # the weights after the last step, not a best one  # fmt: skip

KILLED_AT_A_CHECKPOINT = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from conftest import compose_tiny
    from transformers import TrainerCallback
    from hf_transfer.run import resume, run

    class KillAfterCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == {step}:
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of any kind, as a crash

    if {resume_it!r}:
        resume({folder!r}, callbacks=[KillAfterCheckpoint()])
    else:
        run(compose_tiny({checkpoint!r}, {data!r}, *{overrides!r}), output_dir={folder!r},
            callbacks=[KillAfterCheckpoint()])
    """
)


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def losses(folder):
    return json.loads((folder / "metrics.json").read_text())


@pytest.mark.parametrize(
    ("strategy", "kills"),
    [
        (["strategy=full"], [12]),
        (["strategy=lora"], [12]),
        # Gradual unfreezing, killed late in the second epoch (1.78): the next block thaws at
        # the third epoch's start, as in a run that never stopped.
        (["strategy=partial_unfreeze", "strategy.num_layers=0", "strategy.unfreeze_every=1"], [16]),
        # Killed where an epoch ends (a checkpoint every 3 steps), resumed, killed again in the
        # next epoch, resumed.
        (["strategy=full", "trainer.save_steps=3", "trainer.eval_steps=3"], [9, 12]),
        # On cached features; and a head-first probe, whose head the resumed run takes as it was.
        (["strategy=head_only", "strategy.cache=true", "strategy.cache_memory_share=0"], [12]),
        (["strategy=full", "strategy.head_epochs=1"], [12]),
        # A mean-pooling head, imprinted again by the resumed run before the checkpoint loads.
        (["strategy=full", "model.pooling=mean"], [12]),
    ],
    ids=["full", "lora", "gradual", "twice", "cached", "head_first", "mean_pooling"],
)
def test_a_killed_run_resumes_to_the_same_weights_and_metrics(checkpoints, data_dir, tmp_path, strategy, kills):
    overrides = [*STEPS, *strategy]
    whole = run(compose_tiny(checkpoints["bert"], data_dir, *overrides), output_dir=tmp_path / "whole").folder

    killed = tmp_path / "killed"
    for number, step in enumerate(kills):
        script = KILLED_AT_A_CHECKPOINT.format(tests=str(ROOT / "tests"), step=step, checkpoint=str(checkpoints["bert"]),
                                               data=str(data_dir), overrides=overrides, folder=str(killed),
                                               resume_it=number > 0)  # fmt: skip
        done = subprocess.run([sys.executable, "-c", script], env=cli_env(tmp_path), capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
        assert run_folder.state(killed) == "incomplete"
        assert run_folder.checkpoint_step(run_folder.last_complete_checkpoint(killed)) == step
        saved = json.loads((run_folder.last_complete_checkpoint(killed) / "progress.json").read_text())
        assert saved["resumes"] == number and saved["train_runtime_s"] > 0

    assert main(["resume", str(killed)]) == 0
    assert run_folder.state(killed) == "complete"
    expected, resumed = weights(whole), weights(killed)
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
    first, second = losses(whole), losses(killed)
    assert second["resumed_from"] == f"checkpoints/checkpoint-{kills[-1]}"
    # The whole run's figures, not the resumed part's: the loss over every step, each resume counted.
    assert second["train_loss"] == first["train_loss"] and second["steps"] == first["steps"]
    assert (first["resumes"], second["resumes"]) == (0, len(kills))
    assert second["train_runtime_s"] > saved["train_runtime_s"]  # the killed sessions' training counts
    for split in ("validation", "test"):
        assert {k: v for k, v in first[split].items() if not k.endswith(("runtime", "per_second"))} == {
            k: v for k, v in second[split].items() if not k.endswith(("runtime", "per_second"))
        }
    assert first["best_checkpoint"] == second["best_checkpoint"]
    assert first.get("unfreezing") == second.get("unfreezing")  # when each block thawed, as it happened
    assert first["feature_cache"]["used"] == second["feature_cache"]["used"]
    if "head_probe" in first:
        assert first["head_probe"]["validation"] == second["head_probe"]["validation"]


def test_a_checkpoint_written_halfway_is_not_resumed_from(checkpoints, data_dir, tmp_path):
    folder = run(compose_tiny(checkpoints["bert"], data_dir, *STEPS), output_dir=tmp_path / "run").folder
    (folder / run_folder.COMPLETE).unlink()
    last = run_folder.last_complete_checkpoint(folder)
    (last / run_folder.COMPLETE_CHECKPOINT).unlink()  # as if killed while it was being written
    assert run_folder.checkpoint_step(run_folder.last_complete_checkpoint(folder)) < run_folder.checkpoint_step(last)


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(checkpoints, data_dir, tmp_path, capfd, signum, status):
    """Ctrl-C, and SIGTERM as batch schedulers and `docker stop` send it: the same way out."""
    folder = tmp_path / "run"
    argv = [*tiny_overrides(checkpoints["bert"], data_dir, "trainer.max_steps=100000", "trainer.save_strategy=no",
            "trainer.eval_strategy=no", "trainer.load_best_model_at_end=false", "trainer.per_device_train_batch_size=2"),
            f"hydra.run.dir={folder}"]  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "hf_transfer", *argv], cwd=tmp_path, env=cli_env(tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (folder / "config.yaml").exists():  # written when training starts
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-2000:]
        time.sleep(0.05)
    time.sleep(1.0)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr[-2000:]
    assert "Traceback" not in stderr
    message = [line for line in stderr.splitlines() if line.startswith("hf-transfer: ")]
    assert len(message) == 1 and "training was interrupted at step" in message[0]
    assert f"resume with: hf-transfer resume {folder}" in message[0]
    step = int(message[0].split("at step ")[1].split(";")[0])
    assert step > 0 and run_folder.checkpoint_step(run_folder.last_complete_checkpoint(folder)) == step
    assert run_folder.state(folder) == "incomplete"

    # The folder is refused to a new run, with the way out; predict and push refuse it too.
    code = subprocess.run([sys.executable, "-m", "hf_transfer", *argv], cwd=tmp_path, env=cli_env(tmp_path),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert code.returncode == 2 and "hf-transfer resume" in code.stderr and "Traceback" not in code.stderr
    capfd.readouterr()
    for command in (["predict", str(folder), "a text"], ["push", str(folder), "--repo-id", "me/x"]):
        with pytest.raises(SystemExit) as refused:
            main(command)
        err = capfd.readouterr().err
        assert refused.value.code == 2 and "not a finished run" in err, command
        assert f"resume it with: hf-transfer resume {folder.resolve()}" in err or f"hf-transfer resume {folder}" in err


def test_sigterm_before_training_ends_in_one_line(checkpoints, data_dir, tmp_path):
    folder = tmp_path / "run"
    argv = [*tiny_overrides(checkpoints["bert"], data_dir), f"hydra.run.dir={folder}"]
    process = subprocess.Popen([sys.executable, "-m", "hf_transfer", *argv], cwd=tmp_path, env=cli_env(tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (folder / run_folder.LOCK).exists():  # the run has its folder: data and model load next
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-2000:]
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal came")  # a machine far faster than this one
    assert process.returncode == 143 and "Traceback" not in stderr, stderr[-2000:]
    message = [line for line in stderr.splitlines() if line.startswith("hf-transfer: ")]
    assert len(message) == 1 and "interrupted" in message[0]


def test_two_runs_into_one_folder_the_second_is_refused(checkpoints, data_dir, tmp_path):
    folder = tmp_path / "run"
    argv = [*tiny_overrides(checkpoints["bert"], data_dir, "trainer.num_train_epochs=30"), f"hydra.run.dir={folder}"]
    first = subprocess.Popen([sys.executable, "-m", "hf_transfer", *argv], cwd=tmp_path, env=cli_env(tmp_path),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (folder / run_folder.LOCK).exists():
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    second = subprocess.run([sys.executable, "-m", "hf_transfer", *argv], cwd=tmp_path, env=cli_env(tmp_path),
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err[-2000:]
    assert second.returncode == 2 and "is in use by another run" in second.stderr
    log = (folder / "train.log").read_text()
    assert log.count("loading data") == 1  # the second run wrote nothing into the folder
    assert run_folder.state(folder) == "complete"


def test_runs_started_in_the_same_second_get_their_own_folders(checkpoints, data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = tiny_overrides(checkpoints["bert"], data_dir, "trainer.max_steps=1", "hydra.run.dir=runs/${name}/same")
    # A name with ${now:...} in it is what the default naming uses: here, the same one twice.
    argv[-1] = "hydra.run.dir=runs/same-${now:%Y}"
    assert main(argv) == 0 and main(argv) == 0
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    year = time.strftime("%Y")
    assert folders == [f"same-{year}", f"same-{year}-2"]
    assert all(run_folder.state(tmp_path / "runs" / name) == "complete" for name in folders)


def test_a_refused_start_leaves_a_folder_the_corrected_command_can_use(checkpoints, data_dir, tmp_path, capsys):
    folder = tmp_path / "run"
    argv = [*tiny_overrides(checkpoints["bert"], data_dir, "trainer.max_steps=1"), f"hydra.run.dir={folder}"]
    with pytest.raises(SystemExit) as refused:
        main([*argv, "task.columns.text=nope"])
    assert refused.value.code == 2 and "column 'nope'" in capsys.readouterr().err
    assert not folder.exists() or not any(p.name != ".lock" for p in folder.iterdir())
    assert main(argv) == 0
    assert run_folder.state(folder) == "complete"


def test_resume_of_a_finished_or_foreign_folder_is_refused(checkpoints, data_dir, tmp_path, capsys):
    folder = run(compose_tiny(checkpoints["bert"], data_dir, "trainer.max_steps=1"), output_dir=tmp_path / "run").folder
    for target, message in ((folder, "finished run"), (tmp_path / "nowhere", "is not a folder"),
                            (tmp_path, "no run to resume")):  # fmt: skip
        with pytest.raises(SystemExit) as refused:
            main(["resume", str(target)])
        assert refused.value.code == 2 and message in capsys.readouterr().err


def test_resume_from_checkpoint_as_a_trainer_key_points_to_the_resume_command():
    from hf_transfer.compose import compose
    from hf_transfer.config import validate
    from hf_transfer.errors import UserError

    with pytest.raises(UserError, match="hf-transfer resume RUN_DIR"):
        validate(compose(["trainer.resume_from_checkpoint=runs/x/checkpoints/checkpoint-90"]))


def test_files_get_the_users_umask(checkpoints, data_dir, tmp_path):
    previous = os.umask(0o022)
    try:
        folder = run(
            compose_tiny(checkpoints["bert"], data_dir, "trainer.max_steps=1"), output_dir=tmp_path / "r"
        ).folder
    finally:
        os.umask(previous)
    assert (folder / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert (folder / "metrics.json").stat().st_mode & 0o777 == 0o644


def test_the_same_seed_gives_the_same_weights_and_metrics(checkpoints, data_dir, tmp_path):
    first, second = (
        run(compose_tiny(checkpoints["bert"], data_dir, "strategy=lora"), output_dir=tmp_path / name).folder
        for name in ("a", "b")
    )
    assert all(torch.equal(weights(first)[k], v) for k, v in weights(second).items())
    scores = [
        {k: v for k, v in losses(f)["test"].items() if not k.endswith(("runtime", "per_second"))}
        for f in (first, second)
    ]
    assert scores[0] == scores[1]
    other = run(
        compose_tiny(checkpoints["bert"], data_dir, "strategy=lora", "seed=7"), output_dir=tmp_path / "c"
    ).folder
    assert not all(torch.equal(weights(other)[k], v) for k, v in weights(first).items())


def test_resume_from_another_folder_finds_the_runs_relative_paths(checkpoints, data_dir, tmp_path, monkeypatch):
    import shutil

    start = tmp_path / "start"
    start.mkdir()
    shutil.copytree(checkpoints["bert"], start / "bert")
    shutil.copytree(data_dir, start / "data")
    monkeypatch.chdir(start)
    folder = run(compose_tiny("bert", "data", *STEPS), output_dir="run").folder
    for name in (run_folder.COMPLETE, "metrics.json", "config.json"):
        (folder / name).unlink()  # as a run killed after a checkpoint looks
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["resume", str(folder)]) == 0
    assert run_folder.state(folder) == "complete" and not any(elsewhere.iterdir())


def test_sweeps_started_in_the_same_second_get_their_own_folders(checkpoints, data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["-m", *tiny_overrides(checkpoints["bert"], data_dir, "trainer.max_steps=1", "strategy=full,head_only"),
            "hydra.sweep.dir=sweeps/same-${now:%Y}"]  # fmt: skip
    assert main(argv) == 0 and main(argv) == 0
    year = time.strftime("%Y")
    assert sorted(p.name for p in (tmp_path / "sweeps").iterdir()) == [f"same-{year}", f"same-{year}-2"]
    for sweep in (tmp_path / "sweeps").iterdir():
        assert len(list(sweep.rglob("COMPLETE"))) == 2


@pytest.mark.parametrize("interrupt_at", [5, 8], ids=["mid-epoch", "epoch-end"])
def test_ctrl_c_mid_epoch_then_resume_ends_as_the_uninterrupted_run(checkpoints, data_dir, tmp_path, interrupt_at):
    """Epoch-wise evaluation choosing the best checkpoint (load_best_model_at_end): Ctrl-C at a
    step that does not evaluate adds no evaluation, so the resumed run chooses as the whole one."""
    from transformers import TrainerCallback

    from hf_transfer.errors import Interrupted
    from hf_transfer.run import resume

    class CtrlC(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == interrupt_at and not (tmp_path / "interrupted").exists():
                (tmp_path / "interrupted").touch()
                os.kill(os.getpid(), signal.SIGINT)  # as the terminal sends it: the handler runs at once

    overrides = ["trainer.num_train_epochs=3", "trainer.per_device_train_batch_size=8", "trainer.eval_strategy=epoch",
                 "trainer.save_strategy=epoch", "trainer.load_best_model_at_end=true", "trainer.logging_steps=1"]  # fmt: skip
    whole = run(compose_tiny(checkpoints["bert"], data_dir, *overrides), output_dir=tmp_path / "whole")
    with pytest.raises(Interrupted, match=f"interrupted at step {interrupt_at + 1}"):
        run(compose_tiny(checkpoints["bert"], data_dir, *overrides), tmp_path / "stopped", callbacks=[CtrlC()])
    stopped = tmp_path / "stopped"
    state = json.loads((stopped / "checkpoints" / f"checkpoint-{interrupt_at + 1}" / "trainer_state.json").read_text())
    evaluations = [entry for entry in state["log_history"] if "eval_loss" in entry]
    # 9 steps an epoch: a stop at step 6 adds no evaluation; one at step 9 keeps the epoch's own.
    assert len(evaluations) == (1 if interrupt_at + 1 == 9 else 0)
    resumed = resume(stopped)
    assert all(torch.equal(weights(whole.folder)[k], weights(resumed.folder)[k]) for k in weights(whole.folder))
    assert resumed.metrics["train_loss"] == whole.metrics["train_loss"] and resumed.metrics["resumes"] == 1
    for key in ("best_checkpoint", "validation", "test"):
        first, second = whole.metrics[key], resumed.metrics[key]
        if isinstance(first, dict):
            first, second = ({k: v for k, v in d.items() if not k.endswith(("runtime", "per_second"))}
                             for d in (first, second))  # fmt: skip
        assert first == second, key


def test_resume_after_config_yaml_was_edited_names_the_change(checkpoints, data_dir, tmp_path, capsys):
    """A checkpoint resumes the settings it was trained with: config.yaml edited since (another
    strategy) is refused in one line naming the key, before anything loads."""
    import yaml
    from transformers import TrainerCallback

    from hf_transfer.errors import Interrupted

    class CtrlC(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                os.kill(os.getpid(), signal.SIGINT)

    folder = tmp_path / "stopped"
    with pytest.raises(Interrupted):
        run(compose_tiny(checkpoints["bert"], data_dir, *STEPS), folder, callbacks=[CtrlC()])
    settings = yaml.safe_load((folder / "config.yaml").read_text())
    settings["strategy"]["name"] = "lora"
    (folder / "config.yaml").write_text(yaml.safe_dump(settings))

    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["resume", str(folder)])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "config.yaml was changed since checkpoint-6 was saved (strategy.name: 'full' -> 'lora')" in err
    assert "put them back, or start a new run" in err
