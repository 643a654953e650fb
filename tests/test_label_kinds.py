"""Multi-label classification and regression: labels, metrics, problem_type, pipeline reloads."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from conftest import FILLER, NEGATIVE, POSITIVE, compose_tiny, write_csv
from transformers import AutoConfig, pipeline

from hf_transfer.metrics import multi_label_scores, regression_scores
from hf_transfer.run import run


def rows(count, seed):
    """Texts with 0-2 positive and 0-2 negative words: which kinds occur, and how positive."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        good, bad = rng.randint(0, 2), rng.randint(0, 2)
        words = rng.sample(FILLER, 3) + rng.sample(POSITIVE, good) + rng.sample(NEGATIVE, bad)
        rng.shuffle(words)
        kinds = (["praise"] if good else []) + (["complaint"] if bad else [])
        out.append({"review": " ".join(words), "kinds": ";".join(kinds), "score": float(good - bad)})
    return out


@pytest.fixture(scope="module")
def kinds_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kinds")
    write_csv(folder / "train.csv", rows(200, 1))
    write_csv(folder / "test.csv", rows(40, 2))
    return folder


def compose_kind(checkpoint, folder, *extra):
    return compose_tiny(checkpoint, folder, "trainer.num_train_epochs=10", "strategy.learning_rate=3e-3", *extra)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_multi_label_metrics_by_hand():
    predicted = np.array([[1, 0], [1, 1], [0, 0], [0, 1]], bool)
    actual = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], bool)
    scores = multi_label_scores(predicted, actual, ["praise", "complaint"])
    # praise: tp 2 fp 0 fn 0 -> F1 1; complaint: tp 1 fp 1 fn 1 -> F1 0.5; micro: tp 3, fp 1, fn 1.
    assert scores["f1_macro"] == pytest.approx(0.75)
    assert scores["f1_micro"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert scores["subset_accuracy"] == pytest.approx(0.5)


def test_regression_metrics_by_hand():
    scores = regression_scores(np.array([1.0, 2.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0, 2.0]))
    assert scores["mse"] == pytest.approx((0 + 1 + 0 + 4) / 4) and scores["mae"] == pytest.approx(3 / 4)
    # Ranks (ties share the mean): predictions 1, 2.5, 2.5, 4; references 1, 4, 2.5, 2.5.
    x, y = np.array([1, 2.5, 2.5, 4]), np.array([1, 4, 2.5, 2.5])
    assert scores["spearman"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    # Pearson: deviations from the means 2.25 and 2 are (-1.25, -0.25, -0.25, 1.75) and (-1, 1, 0, 0).
    assert scores["pearson"] == pytest.approx((1.25 - 0.25) / np.sqrt((1.5625 + 0.0625 + 0.0625 + 3.0625) * 2))


@pytest.mark.parametrize("pooling", ["architecture", "mean"])
def test_multi_label_run_and_pipeline(capsys, checkpoints, kinds_dir, tmp_path, pooling):
    cfg = compose_kind(checkpoints["bert"], kinds_dir, "task.problem_type=multi_label", "task.columns.label=kinds",
                       "task.label_separator=';'", "task.threshold=0.3", f"model.pooling={pooling}")  # fmt: skip
    result = run(cfg, output_dir=tmp_path / "run")
    # Under mean pooling each label's vector starts at its examples' mean direction.
    assert ("head_init" in result.metrics) == (pooling == "mean")
    test = result.metrics["test"]
    assert result.metrics["train_loss_last_logged"] < 0.8 * result.metrics["train_loss_first_logged"]
    assert set(test["per_class"]) == {"complaint", "praise"} and test["f1_micro"] > 0.7
    config = AutoConfig.from_pretrained(result.folder)
    assert config.problem_type == "multi_label_classification"
    records = read_jsonl(result.folder / "predictions_test.jsonl")
    classify = pipeline("text-classification", model=str(result.folder), top_k=None)
    for record, scores in zip(records[:8], classify([r["text"] for r in records[:8]])):
        assert {s["label"]: s["score"] for s in scores} == pytest.approx(record["scores"], abs=1e-5)  # sigmoid
        assert sorted(record["prediction"]) == sorted(n for n, p in record["scores"].items() if p >= 0.3)
    # hf-transfer predict applies the run's threshold too.
    from test_predict import predict

    code, lines, _ = predict(capsys, str(result.folder), *[r["text"] for r in records[:8]])
    assert code == 0
    for record, line in zip(records[:8], lines):
        assert sorted(line["labels"]) == sorted(record["prediction"])
        assert line["scores"] == pytest.approx(record["scores"], abs=1e-5)


@pytest.mark.parametrize("pooling", ["architecture", "mean"])
def test_regression_run_and_pipeline(capsys, checkpoints, kinds_dir, tmp_path, pooling):
    cfg = compose_kind(checkpoints["bert"], kinds_dir, "task.problem_type=regression", "task.columns.label=score",
                       f"model.pooling={pooling}")  # fmt: skip
    result = run(cfg, output_dir=tmp_path / "run")
    # Fitted from the train split (less the validation carved from it).
    assert result.metrics["pooling"] == pooling and result.metrics["head_init"]["fitted_from"] == 150
    test = result.metrics["test"]
    assert result.metrics["train_loss_last_logged"] < 0.8 * result.metrics["train_loss_first_logged"]
    assert test["pearson"] > 0.5 and {"mse", "mae", "spearman"} <= set(test)
    assert AutoConfig.from_pretrained(result.folder).problem_type == "regression"
    records = read_jsonl(result.folder / "predictions_test.jsonl")
    scores = pipeline("text-classification", model=str(result.folder))([r["text"] for r in records[:8]])
    assert [s["score"] for s in scores] == pytest.approx(
        [r["prediction"] for r in records[:8]], abs=1e-5
    )  # no squashing
    from test_predict import predict

    texts = tmp_path / "texts.txt"
    texts.write_text("".join(r["text"] + "\n" for r in records[:8]))
    code, lines, _ = predict(capsys, str(result.folder), "--file", str(texts))
    assert code == 0 and [line["score"] for line in lines] == pytest.approx(
        [r["prediction"] for r in records[:8]], abs=1e-5
    )


@pytest.mark.parametrize("strategy", ["head_only", "partial_unfreeze", "lora"])
@pytest.mark.parametrize("kind", ["multi_label", "regression"])
def test_multi_label_and_regression_with_each_strategy(checkpoints, kinds_dir, tmp_path, strategy, kind):
    """The saved model keeps its problem type and its trained head whatever trained it (LoRA's
    head is saved with the adapter and merged at the root)."""
    label = {"multi_label": ["task.columns.label=kinds", "task.label_separator=';'"],
             "regression": ["task.columns.label=score"]}[kind]  # fmt: skip
    cfg = compose_kind(checkpoints["distilbert"], kinds_dir, f"task.problem_type={kind}", *label,
                       f"strategy={strategy}", "trainer.num_train_epochs=2")  # fmt: skip
    result = run(cfg, output_dir=tmp_path / "run")
    config = AutoConfig.from_pretrained(result.folder)
    assert config.problem_type == {"multi_label": "multi_label_classification", "regression": "regression"}[kind]
    records = read_jsonl(result.folder / "predictions_test.jsonl")
    outputs = pipeline("text-classification", model=str(result.folder), top_k=None)([r["text"] for r in records[:6]])
    for record, scores in zip(records, outputs):
        if kind == "regression":
            assert scores[0]["score"] == pytest.approx(record["prediction"], abs=1e-5)
        else:
            assert {s["label"]: s["score"] for s in scores} == pytest.approx(record["scores"], abs=1e-5)


def test_a_number_head_starts_from_a_fit_of_the_features():
    """The ridge start recovers a linear relation, and falls back to the mean where the
    features say nothing of the target."""
    import torch

    from hf_transfer.imprint import _ridge

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 8, generator=generator, dtype=torch.float64)
    truth = torch.tensor([1.0, -2.0, 0.5, 0, 0, 3.0, 0, 1.0], dtype=torch.float64)
    weight, bias, penalty = _ridge(x, x @ truth + 50, intercept=True)
    assert penalty is not None and torch.allclose(weight, truth, atol=0.05) and bias == pytest.approx(50, abs=0.1)
    noise = torch.randn(300, generator=generator, dtype=torch.float64) + 7
    weight, bias, penalty = _ridge(x, noise, intercept=True)
    assert penalty is None and not weight.any() and bias == pytest.approx(float(noise.mean()))


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_regression_far_from_zero_is_not_stuck_at_zero(checkpoints, kinds_dir, tmp_path, arch):
    """Targets around 100 at the default rate: a random head would output about 0 (a test MSE
    near 10,000); started from the fit, the run is at least about as good as the mean (BERT's
    head, with a bias), or far nearer than 0 (GPT-2's, without one: the tiny random model's
    features do not share one direction as a pretrained model's do)."""
    import csv

    folder = tmp_path / "data"
    folder.mkdir()
    for split in ("train", "test"):
        with (kinds_dir / f"{split}.csv").open() as source, (folder / f"{split}.csv").open("w", newline="") as out:
            rows = list(csv.DictReader(source))
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({**r, "score": float(r["score"]) + 100} for r in rows)
    cfg = compose_tiny(checkpoints[arch], folder, "task.problem_type=regression", "task.columns.label=score",
                       "trainer.num_train_epochs=1")  # fmt: skip
    result = run(cfg, output_dir=tmp_path / "run")
    baseline = result.metrics["baseline"]["scores"]["test"]["mse"]
    assert result.metrics["head_init"]["start"] in ("ridge", "mean")
    if arch == "bert":
        assert result.metrics["test"]["mse"] < 1.5 * baseline
    else:  # GPT-2's output layer has no bias: the fit goes through the origin, and is only near
        assert result.metrics["test"]["mse"] < 0.25 * 100**2


def test_regression_needs_numbers(checkpoints, kinds_dir, tmp_path):
    from hf_transfer.errors import UserError

    cfg = compose_kind(checkpoints["bert"], kinds_dir, "task.problem_type=regression", "task.columns.text=kinds",
                       "task.columns.label=review")  # fmt: skip
    with pytest.raises(UserError, match="regression needs numbers in column 'review'"):
        run(cfg, output_dir=tmp_path / "run")


def test_the_validation_line_only_shrinks():
    """Predictions twice as spread as the targets they follow are halved toward the mean;
    predictions that do not rise with the targets are left alone (no line), as are ones
    narrower than the targets (the slope stays at most 1)."""
    from hf_transfer.calibration import fit_line

    rng = np.random.default_rng(0)
    targets = rng.normal(5, 2, 500)
    slope, intercept = fit_line(2 * targets - 5, targets)
    assert slope == pytest.approx(0.5) and intercept == pytest.approx(2.5)
    assert fit_line(-targets, targets) is None and fit_line(np.full(500, 3.0), targets) is None
    slope, intercept = fit_line(0.5 * targets, targets)
    assert slope == 1.0 and intercept == pytest.approx(targets.mean() - 0.5 * targets.mean())


@pytest.mark.parametrize("lora", [False, True])
def test_calibration_is_folded_into_the_head_that_predicts(checkpoints, lora):
    """The line is folded into the trained head's output layer (under LoRA, the head copy that
    peft trains and saves): the model's outputs become slope x before + intercept."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_transfer.calibration import calibrate

    model = AutoModelForSequenceClassification.from_pretrained(checkpoints["bert"], num_labels=1,
                                                               problem_type="regression").eval()  # fmt: skip
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(target_modules=["query", "value"], modules_to_save=["classifier"]))
        model.eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoints["bert"])
    batch = tokenizer(["the movie was good", "awful plot", "a film"], return_tensors="pt", padding=True)
    with torch.no_grad():
        before = model(**batch).logits.reshape(-1).numpy().astype(np.float64)
    rng = np.random.default_rng(1)
    targets = rng.normal(0, 1, 100)
    record = calibrate(model, 3 * targets + 7 + rng.normal(0, 0.1, 100), targets)
    assert record["applied"] and record["validation_mse_after"] < record["validation_mse_before"]
    with torch.no_grad():
        after = model(**batch).logits.reshape(-1).numpy()
    assert after == pytest.approx(record["slope"] * before + record["intercept"], abs=1e-4)


def test_an_overfitted_regression_is_scored_after_its_validation_line(checkpoints, kinds_dir, tmp_path):
    """Targets with noise the model memorises: its validation predictions spread more than they
    agree, the line draws them in, and the scores and the saved model are those after the fold."""
    import csv

    folder = tmp_path / "data"
    folder.mkdir()
    rng = random.Random(0)
    for split in ("train", "test"):
        with (kinds_dir / f"{split}.csv").open() as source, (folder / f"{split}.csv").open("w", newline="") as out:
            rows = list(csv.DictReader(source))
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({**r, "score": float(r["score"]) + rng.gauss(0, 1.0)} for r in rows)
    cfg = compose_kind(checkpoints["bert"], folder, "task.problem_type=regression", "task.columns.label=score")
    result = run(cfg, output_dir=tmp_path / "run")
    line = result.metrics["head_calibration"]
    assert line["applied"] and 0 < line["slope"] < 1 and line["fitted_on"] == "validation"
    assert result.metrics["validation"]["mse"] == pytest.approx(line["validation_mse_after"], rel=1e-4)
    assert f"prediction x {line['slope']:.3f}" in (result.folder / "README.md").read_text()
    records = read_jsonl(result.folder / "predictions_test.jsonl")
    scores = pipeline("text-classification", model=str(result.folder))([r["text"] for r in records[:8]])
    assert [s["score"] for s in scores] == pytest.approx([r["prediction"] for r in records[:8]], abs=1e-5)
