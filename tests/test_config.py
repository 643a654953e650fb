"""The config schema: shipped YAML agrees with it, and mistakes are caught before any loading."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hf_transfer.compose import compose
from hf_transfer.config import training_arguments_fields, validate
from hf_transfer.errors import UserError
from hf_transfer.strategies import STRATEGIES
from hf_transfer.tasks import TASKS

CONF = Path(__file__).resolve().parent.parent / "conf"
RECIPES = Path(__file__).resolve().parent.parent / "recipes" / "recipe"


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_strategy_option_is_its_dataclass_defaults_stated_once(name):
    """strategy=NAME composes the Config dataclass's defaults (no YAML repeats them), and a
    command-line value goes on top."""
    composed = compose([f"strategy={name}", "~recipe"])["strategy"]
    assert dict(composed) == dataclasses.asdict(STRATEGIES[name].Config())
    assert not (CONF / "strategy").exists() and not (CONF / "hub").exists()
    changed = validate(compose([f"strategy={name}", "strategy.learning_rate=0.125"])).strategy
    assert changed == dataclasses.replace(STRATEGIES[name].Config(), learning_rate=0.125)


# The blank tasks name no data: a user gives it.
BLANK = {t: ["task.data.source=mine.csv"] for t in TASKS}


def test_a_blank_task_asks_for_the_data_and_the_shipped_ones_build_on_it():
    for task_type in TASKS:
        with pytest.raises(UserError, match="task.data needs a source"):
            validate(compose([f"task={task_type}"]))
        blank = compose([f"task={task_type}", "task.data.source=x.csv"])["task"]
        assert blank["type"] == task_type and blank.get("label_map") is None and blank.get("labels") is None
    shipped = compose(["task=snli"])["task"]
    assert shipped["type"] == "text_classification" and shipped["columns"]["text_pair"] == "sentence2"
    assert "type:" not in (CONF / "task" / "snli.yaml").read_text()  # stated once, by the blank task


def test_the_run_is_named_after_the_users_data():
    assert (
        compose(["task=text_classification", "task.data.source=/data/support-tickets.csv"])["name"] == "support-tickets"
    )
    assert compose(["task.data.source=/data/tickets.csv", "name=mine"])["name"] == "mine"
    assert compose(["recipe=bert_sentiment"])["name"] == "bert_sentiment"


def test_every_shipped_combination_validates():
    for recipe in sorted(p.stem for p in RECIPES.glob("*.yaml")):
        validate(compose([f"recipe={recipe}"]))
    for group in ("model", "task"):
        for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
            validate(compose([f"{group}={option}", *BLANK.get(option, [])]))
    for option in STRATEGIES:
        validate(compose([f"strategy={option}"]))


def test_trainer_fields_come_from_training_arguments():
    import transformers

    fields = training_arguments_fields()
    assert set(fields) == {f.name for f in dataclasses.fields(transformers.TrainingArguments)}
    assert fields["num_train_epochs"] == (float,)
    assert fields["eval_strategy"] is None  # an enum: checked when TrainingArguments is built


def test_any_training_argument_can_be_set_without_a_plus():
    run = validate(compose(["trainer.gradient_checkpointing=true", "trainer.label_smoothing_factor=0.1"]))
    assert run.trainer["gradient_checkpointing"] is True and run.trainer["label_smoothing_factor"] == 0.1


def test_strategy_learning_rates_differ_by_design():
    rates = {name: validate(compose([f"strategy={name}"])).strategy.learning_rate for name in STRATEGIES}
    assert rates["head_only"] > rates["lora"] > rates["full"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task.data.validation_fraction=1.5"], "validation_fraction must be between 0 and 1"),
        (["task.class_weights=heavy"], "key 'task.class_weights' must be"),
        (["task.type=summarization"], "unknown task type 'summarization'"),
        (["strategy.name=adapters"], "unknown strategy 'adapters'"),
        (["model.family=transformer"], "key 'model.family' must be"),
        (["task.data.splits.dev=x"], "unknown key 'task.data.splits.dev'"),
    ],
)
def test_schema_mistakes_name_the_key(overrides, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(compose(overrides))


def test_a_bad_enum_value_fails_before_any_data_is_loaded(tmp_path):
    from hf_transfer.run import run

    cfg = compose(["trainer.eval_strategy=sometimes", "task.data.source=/does/not/matter.csv", "model.source=x"])
    with pytest.raises(UserError, match="TrainingArguments.*sometimes"):
        run(cfg, output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("sweep", [False, True])
def test_a_command_line_run_is_composed_and_validated_once_per_job(checkpoints, data_dir, tmp_path, monkeypatch, sweep):
    """Observed, not replaced: the real compose and validate run, and are counted."""
    from conftest import tiny_overrides
    from hydra._internal.hydra import Hydra

    import hf_transfer.config
    import hf_transfer.run
    from hf_transfer.cli import main

    counts = {"compose": 0, "validate": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(Hydra, "compose_config", counted("compose", Hydra.compose_config))
    validate_once = counted("validate", hf_transfer.config.validate)
    monkeypatch.setattr(hf_transfer.config, "validate", validate_once)
    monkeypatch.setattr(hf_transfer.run, "validate", validate_once)
    monkeypatch.chdir(tmp_path)
    strategies = ["strategy=head_only,full"] if sweep else ["strategy=head_only"]
    argv = [*tiny_overrides(checkpoints["bert"], data_dir, *strategies, "trainer.max_steps=1")]
    assert main(["-m", *argv] if sweep else argv) == 0
    jobs = 2 if sweep else 1
    assert counts["validate"] == jobs
    assert counts["compose"] == jobs
    assert len(list(tmp_path.rglob("metrics.json"))) == jobs
