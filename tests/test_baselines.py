"""Every score beside its trivial baseline: the majority class, the training mean, the commonest
tag; in metrics.json, the end summary, the model card and the report, with a warning when the
run does not clearly beat it."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from conftest import compose_tiny
from test_label_kinds import compose_kind, kinds_dir  # noqa: F401 - a fixture
from test_token_classification import compose_ner, ner_data  # noqa: F401 - a fixture

from hf_transfer import baselines, report_summary
from hf_transfer.run import run


def test_a_run_records_the_majority_class_and_beats_it(checkpoints, data_dir, tmp_path, caplog):
    cfg = compose_tiny(checkpoints["bert"], data_dir, "trainer.num_train_epochs=10", "strategy.learning_rate=3e-3",
                       "task.metric_for_best_model=accuracy")  # fmt: skip
    with caplog.at_level(logging.INFO):
        result = run(cfg, tmp_path / "run")
    verdict = result.metrics["baseline"]
    test = [json.loads(line) for line in (result.folder / "predictions_test.jsonl").read_text().splitlines()]
    labels = [row["label"] for row in test]
    majority = verdict["predictor"].split("'")[1]
    assert verdict["scores"]["test"]["accuracy"] == pytest.approx(labels.count(majority) / len(labels))
    assert verdict["metric"] == "accuracy" and verdict["split"] == "test"
    assert verdict["score"] == result.metrics["test"]["accuracy"]
    assert verdict["beaten"] is (verdict["score"] >= verdict["baseline_score"] + baselines.SCORE_MARGIN)
    assert verdict["beaten"] is True  # the tiny task is learnable at these settings
    assert f"baseline        {verdict['predictor']}: test accuracy" in caplog.text
    card = (result.folder / "README.md").read_text()
    assert f"Trivial baseline ({verdict['predictor']}), accuracy:" in card and "clearly beats it" in card


def test_a_run_that_learned_nothing_says_so(checkpoints, data_dir, tmp_path, caplog):
    """A rate of 10 collapses the model to one class: the summary blames the training, not the classes."""
    cfg = compose_tiny(checkpoints["bert"], data_dir, "trainer.num_train_epochs=1", "trainer.learning_rate=10",
                       "task.metric_for_best_model=accuracy")  # fmt: skip
    with caplog.at_level(logging.INFO):
        result = run(cfg, tmp_path / "run")
    assert result.metrics["baseline"]["beaten"] is False
    assert "does not clearly beat the trivial baseline" in caplog.text
    assert "NOT beaten: the model learned next to nothing" in caplog.text
    assert "class_weights" not in caplog.text.split("run folder")[-1]
    assert "does not clearly beat it" in (result.folder / "README.md").read_text()


def test_regression_is_measured_against_the_training_mean(checkpoints, kinds_dir, tmp_path):  # noqa: F811
    from hf_transfer.config import validate
    from hf_transfer.tasks import task_class

    cfg = compose_kind(checkpoints["bert"], kinds_dir, "task.columns.text=review", "task.columns.label=score",
                       "task.problem_type=regression", "trainer.num_train_epochs=1")  # fmt: skip
    result = run(cfg, tmp_path / "run")
    verdict = result.metrics["baseline"]
    task_cfg = validate(cfg)
    data = task_class("text_classification")(task_cfg.task, task_cfg.seed).load()  # the run's own splits
    mean = float(np.mean(data.splits["train"]["label"]))
    test = np.asarray(data.splits["test"]["label"], dtype=np.float64)
    assert verdict["predictor"] == f"the training mean, {mean:.4g}"
    assert verdict["scores"]["test"]["mse"] == pytest.approx(float(((test - mean) ** 2).mean()), rel=1e-6)


def test_multi_label_baseline_takes_each_labels_majority(checkpoints, kinds_dir, tmp_path):  # noqa: F811
    result = run(compose_kind(checkpoints["bert"], kinds_dir, "task.columns.text=review", "task.columns.label=kinds",
                              "task.problem_type=multi_label", "task.label_separator=';'",
                              "trainer.num_train_epochs=1"),
                 tmp_path / "run")  # fmt: skip
    verdict = result.metrics["baseline"]
    assert verdict["predictor"] == "each label as most training texts have it"
    assert set(verdict["scores"]) == {"validation", "test"} and "f1_micro" in verdict["scores"]["test"]


def test_token_classification_baseline_tags_every_word_o(checkpoints, ner_data, tmp_path):  # noqa: F811
    result = run(compose_ner(checkpoints["bert"], ner_data, "trainer.num_train_epochs=1"), tmp_path / "run")
    verdict = result.metrics["baseline"]
    assert verdict["predictor"] == "every word tagged 'O', the commonest tag"
    assert verdict["scores"]["test"]["f1"] == 0.0  # all-O finds no entity


def test_clearly_better():
    assert baselines.clearly_better(0.60, 0.58, True) and not baselines.clearly_better(0.585, 0.58, True)
    assert baselines.clearly_better(4.0, 5.0, False) and not baselines.clearly_better(4.98, 5.0, False)


def test_the_report_names_the_settings_below_the_baseline():
    def metrics(strategy, test, beaten):
        return {"name": "tiny", "task": "text_classification", "strategy": strategy, "seed": 1,
                "best_metric": {"name": "accuracy", "greater_is_better": True}, "test": {"accuracy": test},
                "examples": {"train": 16}, "train_runtime_s": 1.0, "train_samples_per_second": 1.0,
                "trainable_parameters": 1, "train_budget": "8/class",
                "baseline": {"predictor": "the majority class, 'pos'", "metric": "accuracy", "split": "test",
                             "score": test, "baseline_score": 0.578, "beaten": beaten}}  # fmt: skip

    (task,) = report_summary.summarise([metrics("full", 0.70, True), metrics("lora", 0.575, False)])
    found = [line for line in report_summary.findings(task) if "trivial baseline" in line]
    assert found == ["The trivial baseline (the majority class, 'pos') scores test accuracy 0.5780; not clearly "
                     "beaten by: lora from the pretrained start with 8 examples per class (16 in all) (1 of 1 runs, "
                     "mean 0.5750). Those runs learned next to nothing."]  # fmt: skip


@pytest.mark.parametrize("commoner", ["negative", "positive"])
def test_a_balanced_label_budget_takes_the_validation_splits_majority(checkpoints, tmp_path, commoner):
    """8 examples a class tie every class in train: the majority class is the validation split's
    (the data's), not whichever label name comes first."""
    from conftest import write_csv

    from hf_transfer.config import validate
    from hf_transfer.tasks import task_class

    rows = [{"text": f"review number {i}", "label": commoner if i % 10 < 7 else "other"} for i in range(200)]
    write_csv(tmp_path / "train.csv", rows)
    run_cfg = validate(compose_tiny(checkpoints["bert"], tmp_path / "train.csv", "task.data.train_per_class=8",
                                    "task.columns.text=text", "task.columns.label=label"))  # fmt: skip
    task = task_class(run_cfg.task.type)(run_cfg.task, run_cfg.seed)
    data = task.load()
    assert np.bincount(data.splits["train"]["label"]).tolist() == [8, 8]
    baseline = task.baseline(data)
    assert baseline.predictor == f"the majority class, '{commoner}'"
    assert baseline.scores["validation"]["accuracy"] == pytest.approx(0.7, abs=0.05)
