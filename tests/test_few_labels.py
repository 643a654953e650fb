"""few_labels: a classifier taught from a handful of examples a class trains the few-label way.

The tiny recipe turns it off (few_labels.max_per_class=0) so that other tests train the epochs
they ask for; here it is on, as a user's run has it.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, cli_env, compose_tiny, run_main, tiny_overrides, write_csv
from safetensors.torch import load_file
from test_mean_pooling import sentence_bert  # noqa: F401 (a fixture)
from transformers import AutoModelForSequenceClassification, TrainerCallback

from hf_transfer import run_folder
from hf_transfer.cli import main
from hf_transfer.run import run

ON = "few_labels.max_per_class=100"


class ArgumentsSeen(TrainerCallback):
    """The TrainingArguments the run trained with."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.args = args


def few_label_run(checkpoint, data_dir, folder, *extra):
    seen = ArgumentsSeen()
    result = run(compose_tiny(checkpoint, data_dir, ON, *extra), output_dir=folder, callbacks=[seen])
    return result, seen.args


def test_a_few_labels_a_class_train_the_few_label_way(sentence_bert, data_dir, tmp_path):  # noqa: F811
    result, args = few_label_run(sentence_bert, data_dir, tmp_path / "run")
    metrics = result.metrics
    train = metrics["examples"]["train"]
    few = metrics["few_labels"]
    assert 0 < few["per_class"] <= train and few["head_scale"] == 5.0
    # The schedule: 10 passes in even batches of at most 16, at full's rate (the tiny model is
    # narrower than MiniLM), nothing evaluated or saved during it.
    batch = math.ceil(train / math.ceil(train / 16))
    assert args.per_device_train_batch_size == batch < 16 and args.learning_rate == 1e-4  # (72 examples: 15)
    assert metrics["steps"] == min(10 * math.ceil(train / batch), 40)  # 10 passes, at most 40 steps
    assert args.eval_strategy == "no" and args.save_strategy == "no"
    assert not list((result.folder / "checkpoints").glob("checkpoint-*"))
    assert "validation" in metrics  # scored after training all the same
    # The saved head is the few-label one: cosines times 5, so no logit beyond 5.
    model = AutoModelForSequenceClassification.from_pretrained(result.folder)
    assert model.config.logit_scale == 5.0
    inputs = {"input_ids": torch.tensor([[2, 7, 8, 9, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    assert model(**inputs).logits.abs().max() <= 5.0 + 1e-5
    # What the model card states is what trained.
    card = (result.folder / "README.md").read_text()
    assert "| learning rate | 0.0001 |" in card and f"| batch size (per device) | {batch} |" in card
    assert metrics["learning_rate"] == 1e-4


def test_more_examples_a_class_than_the_limit_train_as_configured(sentence_bert, data_dir, tmp_path):  # noqa: F811
    result, args = few_label_run(sentence_bert, data_dir, tmp_path / "run", "few_labels.max_per_class=5",
                                 "trainer.max_steps=2")  # fmt: skip
    assert "few_labels" not in result.metrics
    assert args.learning_rate == 1e-4 and args.eval_strategy == "epoch"  # as the tiny recipe asks
    assert AutoModelForSequenceClassification.from_pretrained(result.folder).config.logit_scale == 20.0


@pytest.mark.parametrize(
    "extra", [["strategy=head_only"], ["model.pooling=architecture"]], ids=["head_only", "no_cosine_head"]
)
def test_only_the_cosine_head_under_a_strategy_that_moves_the_encoder(sentence_bert, data_dir, tmp_path, extra):  # noqa: F811
    result, _ = few_label_run(sentence_bert, data_dir, tmp_path / "run", "trainer.max_steps=2", *extra)
    assert "few_labels" not in result.metrics


def test_the_users_own_settings_win(sentence_bert, data_dir, tmp_path):  # noqa: F811
    result, args = few_label_run(sentence_bert, data_dir, tmp_path / "run", "trainer.learning_rate=3e-4",
                                 "few_labels.epochs=2", "few_labels.batch_size=8", "few_labels.head_scale=10")  # fmt: skip
    train = result.metrics["examples"]["train"]
    assert args.learning_rate == 3e-4 and args.per_device_train_batch_size == math.ceil(train / math.ceil(train / 8))
    assert result.metrics["steps"] == 2 * math.ceil(train / args.per_device_train_batch_size)
    assert AutoModelForSequenceClassification.from_pretrained(result.folder).config.logit_scale == 10.0


@pytest.mark.parametrize(
    "extra, batch, steps",
    [
        (["few_labels.epochs=1", "trainer.per_device_train_batch_size=4"], 4, None),  # it may be what fits
        (["few_labels.epochs=1", "trainer.gradient_accumulation_steps=2"], 8, None),  # 15 a step: 8 a pass, two
        (["few_labels.epochs=1", "trainer.max_steps=3"], 15, 3),  # trainer.max_steps sets the length
        (["few_labels.max_steps=7"], 15, 7),  # 10 passes would be 50 steps
        (["trainer.gradient_accumulation_steps=2"], 8, 40),  # 10 passes of 5 steps are more than 40
    ],
    ids=["smaller_batch", "accumulation", "max_steps", "few_label_steps", "few_label_steps_accumulated"],
)
def test_what_the_trainer_is_told_still_counts(sentence_bert, data_dir, tmp_path, extra, batch, steps):  # noqa: F811
    result, args = few_label_run(sentence_bert, data_dir, tmp_path / "run", *extra)
    assert result.metrics["examples"]["train"] == 72 and args.per_device_train_batch_size == batch
    if steps:
        assert result.metrics["steps"] == steps and result.metrics["few_labels"]["max_steps"] == steps


@pytest.mark.parametrize(
    "extra", [["early_stopping.patience=2"], ["trainer.lr_scheduler_type=reduce_lr_on_plateau"]],
    ids=["early_stopping", "plateau"],
)  # fmt: skip
def test_evaluations_stay_where_something_needs_them(sentence_bert, data_dir, tmp_path, extra):  # noqa: F811
    result, args = few_label_run(sentence_bert, data_dir, tmp_path / "run", "few_labels.epochs=2", *extra)
    assert "few_labels" in result.metrics and args.eval_strategy == "epoch"


@pytest.mark.parametrize(
    "extra",
    [["few_labels.max_examples=50"], ["model.pretrained=false"], ["few_labels.max_per_class=0"]],
    ids=["too_many_in_all", "random_start", "off"],
)
def test_not_a_few_label_run(sentence_bert, data_dir, tmp_path, extra):  # noqa: F811
    result, _ = few_label_run(sentence_bert, data_dir, tmp_path / "run", "trainer.max_steps=2", *extra)
    assert "few_labels" not in result.metrics


@pytest.mark.parametrize("kind", ["regression", "multi_label"])
def test_numbers_and_label_sets_train_as_configured(sentence_bert, tmp_path, kind):  # noqa: F811
    from test_label_kinds import rows

    (tmp_path / "data").mkdir()
    write_csv(tmp_path / "data" / "train.csv", rows(60, 1))
    write_csv(tmp_path / "data" / "test.csv", rows(20, 2))
    label = {"regression": ["task.problem_type=regression", "task.columns.label=score"],
             "multi_label": ["task.problem_type=multi_label", "task.columns.label=kinds", "task.label_separator=';'"]}  # fmt: skip
    result, _ = few_label_run(sentence_bert, tmp_path / "data", tmp_path / "run", "trainer.max_steps=2",
                              "task.columns.text=review", *label[kind])  # fmt: skip
    assert result.metrics["pooling"] == "mean" and "few_labels" not in result.metrics


def test_lora_trains_the_few_label_way_and_merges(sentence_bert, data_dir, tmp_path):  # noqa: F811
    result, args = few_label_run(sentence_bert, data_dir, tmp_path / "run", "strategy=lora", "few_labels.epochs=1")
    assert result.metrics["few_labels"]["head_scale"] == 5.0 and args.learning_rate == 5e-4  # lora's own
    assert AutoModelForSequenceClassification.from_pretrained(result.folder).config.logit_scale == 5.0


@pytest.mark.parametrize("key, value", [("head_scale", "0"), ("epochs", "0"), ("batch_size", "-1"),
                                        ("learning_rate", "0"), ("max_per_class", "-3")])  # fmt: skip
def test_a_value_out_of_range_is_refused_before_anything_loads(capsys, tmp_path, data_dir, key, value):
    folder = tmp_path / "run"
    code, _, err = run_main(capsys, *tiny_overrides(tmp_path / "no-such-model", data_dir, f"few_labels.{key}={value}"),
                            f"hydra.run.dir={folder}")  # fmt: skip
    assert code == 2 and f"few_labels.{key}" in err and "Traceback" not in err
    assert not folder.exists()


def test_validate_and_the_run_config_name_the_keys(capsys, sentence_bert, data_dir, tmp_path):  # noqa: F811
    code, out, _ = run_main(capsys, *tiny_overrides(sentence_bert, data_dir, ON), "--cfg", "job")
    assert code == 0 and "few_labels:" in out and "max_per_class: 100" in out
    code, out, err = run_main(capsys, "validate", *tiny_overrides(sentence_bert, data_dir, ON))
    assert code == 0 and "few labels (at most" in out + err and "40 steps in batches of 15 at rate 0.0001" in out + err
    code, out, err = run_main(capsys, "validate", *tiny_overrides(sentence_bert, data_dir))  # the tiny recipe: off
    assert code == 0 and "few labels" not in out + err
    result, _ = few_label_run(sentence_bert, data_dir, tmp_path / "run", "few_labels.epochs=1")
    assert json.loads((result.folder / "metrics.json").read_text())["few_labels"]["num_train_epochs"] == 1


@pytest.mark.parametrize(
    "width, extra, rate",
    [(32, [], 1e-4), (384, [], 1e-4), (768, [], 5e-5), (1536, ["strategy=lora"], 1.25e-4),
     (768, ["few_labels.learning_rate=2e-5"], 2e-5), (768, ["trainer.learning_rate=3e-4"], 3e-4)],
)  # fmt: skip
def test_wider_models_take_a_lower_rate(sentence_bert, data_dir, width, extra, rate):  # noqa: F811
    """The strategies' rates were measured on MiniLM (hidden 384): a checkpoint twice as wide
    takes half the rate (MPNet, BERT-base: 5e-5 for full), a given rate is taken as it is."""
    from hf_transfer import assembly
    from hf_transfer.config import validate
    from hf_transfer.tasks import task_class

    run_cfg = validate(compose_tiny(sentence_bert, data_dir, ON, *extra))
    task = task_class(run_cfg.task.type)(run_cfg.task, run_cfg.seed)
    checkpoint = assembly.checkpoint(run_cfg, task)
    checkpoint.config.hidden_size = width  # the only difference from a wider checkpoint that matters here
    few = assembly.few_labels_plan(run_cfg, task, task.load(), checkpoint)
    assert few.settings["learning_rate"] == pytest.approx(rate)


KILLED_MID_TRAINING = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from conftest import compose_tiny
from transformers import TrainerCallback
from hf_transfer.run import run

class KillAtStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 5:
            os.kill(os.getpid(), signal.SIGKILL)  # a crash: no clean-up of any kind

run(compose_tiny({checkpoint!r}, {data!r}, *{overrides!r}), output_dir={folder!r}, callbacks=[KillAtStep()])
"""


def test_a_killed_few_label_run_resumes_to_what_it_would_have_made(sentence_bert, data_dir, tmp_path):  # noqa: F811
    """No checkpoint is written during a few-label run (it is shorter than a resume): `resume`
    trains it again from the start, to the same weights as a run that never stopped."""
    overrides = [ON, "few_labels.epochs=3"]
    whole = run(compose_tiny(sentence_bert, data_dir, *overrides), output_dir=tmp_path / "whole").folder
    killed = tmp_path / "killed"
    script = KILLED_MID_TRAINING.format(tests=str(ROOT / "tests"), checkpoint=str(sentence_bert), data=str(data_dir),
                                        overrides=overrides, folder=str(killed))  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], env=cli_env(tmp_path), capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert run_folder.state(killed) == "incomplete"
    assert main(["resume", str(killed)]) == 0
    assert run_folder.state(killed) == "complete"
    expected, resumed = load_file(str(whole / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert expected.keys() == resumed.keys() and all(torch.equal(expected[k], resumed[k]) for k in expected)
    first, second = (json.loads((f / "metrics.json").read_text()) for f in (whole, killed))
    assert second["test"]["accuracy"] == first["test"]["accuracy"] and second["few_labels"] == first["few_labels"]
