"""Values that should never start a run, and mistakes that once ended in a traceback: each is
one line naming the key and the fix, exit status 2, before data or weights load."""

from __future__ import annotations

import pytest
from conftest import sentiment_rows, tiny_overrides, write_csv

from hf_transfer.cli import main


def refused(capsys, argv):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "override, message",
    [
        ("seed=-1", "key 'seed' must be from 0 to 4294967295, got -1"),
        ("trainer.num_train_epochs=1e9", "trainer.num_train_epochs' must be at most 10,000"),
        ("trainer.max_steps=100000000000", "trainer.max_steps' must be at most 10,000,000"),
        ("early_stopping.patience=-1", "early_stopping.patience' must be at least 1 evaluation"),
        ("early_stopping.threshold=-0.5", "early_stopping.threshold' must be 0 or more"),
        ("task.labels=[pos,neg,pos]", "task.labels' names 'pos' more than once"),
        ("task.max_length=100000", "task.max_length=100000 is more than model tiny has positions for (64)"),
        ("model.config_overrides.hidden_dropout_prob=abc",
         "model.config_overrides.hidden_dropout_prob must be a number, as the checkpoint's 0.1 is; got 'abc'"),
        ("trainer.report_to=wandb", "trainer.report_to=wandb needs the wandb package: pip install wandb"),
    ],
)
def test_a_value_out_of_range_is_one_line_before_anything_loads(capsys, checkpoints, data_dir, tmp_path, override,
                                                                message):  # fmt: skip
    argv = tiny_overrides(checkpoints["bert"], data_dir, override, f"hydra.run.dir={tmp_path / 'run'}")
    assert message in refused(capsys, argv)
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_a_lora_rank_above_the_width_is_refused(capsys, checkpoints, data_dir, tmp_path):
    argv = tiny_overrides(checkpoints["bert"], data_dir, "strategy=lora", "strategy.r=100000",
                          f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert "strategy.r=100000 is above the width of the layers LoRA adapts in model tiny (32)" in refused(capsys, argv)


def test_a_run_folder_that_is_a_file_is_refused(capsys, checkpoints, data_dir, tmp_path):
    (tmp_path / "taken").write_text("a file of mine\n")
    err = refused(capsys, tiny_overrides(checkpoints["bert"], data_dir, f"hydra.run.dir={tmp_path / 'taken'}"))
    assert "is a file" in err and (tmp_path / "taken").read_text() == "a file of mine\n"


def test_one_class_in_every_split_is_refused(capsys, checkpoints, tmp_path):
    rows = [r for r in sentiment_rows(80, 1) if r["sentiment"] == "pos"]
    (tmp_path / "data").mkdir()
    write_csv(tmp_path / "data" / "train.csv", rows)
    write_csv(tmp_path / "data" / "test.csv", rows[:10])
    err = refused(capsys, tiny_overrides(checkpoints["bert"], tmp_path / "data", f"hydra.run.dir={tmp_path / 'run'}"))
    assert "one class only ('pos' in column 'sentiment')" in err and "task.problem_type=regression" in err


def test_report_csv_naming_a_folder_is_refused(capsys, tmp_path):
    (tmp_path / "runs").mkdir()
    assert "--csv" in refused(capsys, ["report", str(tmp_path / "runs"), "--csv", str(tmp_path)])


def test_labels_with_decimals_point_to_regression(capsys, checkpoints, tmp_path):
    """Continuous labels on a classification task: one short line with the fix, not a list of
    every value as an unknown class."""
    rows = [{"review": r["review"], "sentiment": f"{i * 0.137 % 5:.3f}"} for i, r in enumerate(sentiment_rows(80, 1))]
    (tmp_path / "data").mkdir()
    write_csv(tmp_path / "data" / "train.csv", rows[:60])
    write_csv(tmp_path / "data" / "test.csv", rows[60:])
    err = refused(capsys, tiny_overrides(checkpoints["bert"], tmp_path / "data", f"hydra.run.dir={tmp_path / 'run'}"))
    assert "column 'sentiment' holds numbers with decimals" in err
    assert "for a number per text set task.problem_type=regression" in err and len(err) < 300


def test_a_text_column_of_numbers_is_read_as_text(checkpoints, tmp_path, caplog):
    from conftest import compose_tiny

    from hf_transfer.run import run

    rows = [{"review": str(1000 + i), "sentiment": r["sentiment"]} for i, r in enumerate(sentiment_rows(80, 1))]
    (tmp_path / "data").mkdir()
    write_csv(tmp_path / "data" / "train.csv", rows[:60])
    write_csv(tmp_path / "data" / "test.csv", rows[60:])
    result = run(compose_tiny(checkpoints["bert"], tmp_path / "data", "trainer.num_train_epochs=1"), tmp_path / "run")
    assert "train: column 'review' holds numbers only (int64); read as text" in caplog.text
    assert result.metrics["examples"]["test"] == 20  # no row taken for empty
    assert not [r for r in caplog.records if r.levelname == "WARNING" and "longer than max_length" in r.getMessage()]


def test_texts_longer_than_the_model_reads_are_warned_of(checkpoints, tmp_path, caplog):
    """A quarter of the reviews run past the tiny model's 64 positions: the run says so, with
    the key that sets the length, before it trains."""
    from conftest import FILLER, compose_tiny

    from hf_transfer.run import run

    rows = sentiment_rows(80, 1)
    for row in rows[::4]:
        row["review"] += " " + " ".join(FILLER * 8)  # about 100 words
    (tmp_path / "data").mkdir()
    write_csv(tmp_path / "data" / "train.csv", rows[:60])
    write_csv(tmp_path / "data" / "test.csv", rows[60:])
    run(compose_tiny(checkpoints["bert"], tmp_path / "data", "trainer.num_train_epochs=1"), tmp_path / "run")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    (warning,) = [message for message in warnings if "longer than max_length" in message]
    assert warning.startswith("27% of the train texts are longer than max_length 64 tokens: the model reads only")
    assert "task.max_length" in warning


def test_a_broken_line_of_an_extra_test_set_is_named_by_its_file_and_line(capsys, checkpoints, data_dir, tmp_path):
    broken = tmp_path / "mine.jsonl"
    broken.write_text('{"review": "good film", "sentiment": "pos"}\n{"review": "bad", "sentiment": \n')
    err = refused(capsys, tiny_overrides(checkpoints["bert"], data_dir, f"+task.extra_test.mine.source={broken}",
                                         f"hydra.run.dir={tmp_path / 'run'}"))  # fmt: skip
    assert f"could not read {broken} (task.extra_test.mine.source) as json: {broken}, line 2: not a JSON object" in err
    assert "train data" not in err


def test_removing_a_key_the_task_lacks_is_harmless(checkpoints, data_dir):
    """README's `~task.extra_test` works on every task, with or without extra test sets."""
    from conftest import compose_tiny

    cfg = compose_tiny(checkpoints["bert"], data_dir, "~task.extra_test")
    assert "extra_test" not in cfg.task or not cfg.task.extra_test


def test_a_run_whose_training_state_exceeds_the_memory_is_refused(capsys, checkpoints, data_dir, tmp_path,
                                                                  monkeypatch):  # fmt: skip
    """On a machine with 100 KB available (the system's figure, replaced), the tiny model's 22,444
    trainable parameters need 263 KB of gradients and AdamW states: refused with both figures."""
    import collections

    import psutil

    memory = collections.namedtuple("memory", "available total")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory(100 * 1024, 2**34))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # after the weights loaded: their progress bar came before
        main(tiny_overrides(checkpoints["bert"], data_dir, f"hydra.run.dir={tmp_path / 'run'}"))
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and err.startswith("hf-transfer: error:")
    assert "the run needs at least 263 KB of memory for its 22,444 trainable parameters" in err
    assert "more than the 100 KB available on this machine" in err and "strategy=lora" in err
    assert not (tmp_path / "run").exists()


def test_partial_unfreeze_of_no_layers_and_no_schedule_says_it_is_head_only(caplog):
    """num_layers=0 without a thaw schedule trains the head alone: said, not silent."""
    from hf_transfer.strategies import STRATEGIES

    STRATEGIES["partial_unfreeze"].Config(name="partial_unfreeze", num_layers=0)
    assert "num_layers=0 and no strategy.unfreeze_every trains the head alone, as strategy=head_only" in caplog.text
    caplog.clear()
    STRATEGIES["partial_unfreeze"].Config(name="partial_unfreeze", num_layers=0, unfreeze_every=1)
    assert "head alone" not in caplog.text
