"""Text classification end to end on tiny checkpoints: labels, pairs, weights, splits, reloads."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import TEST_RECIPES, compose_tiny, sentiment_rows, write_csv
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from hf_transfer.errors import UserError
from hf_transfer.run import run


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_string_labels_round_trip_through_id2label_and_pipeline(checkpoints, data_dir, tmp_path):
    result = run(compose_tiny(checkpoints["bert"], data_dir, "trainer.num_train_epochs=1"), output_dir=tmp_path / "run")
    model = AutoModelForSequenceClassification.from_pretrained(result.folder)
    assert model.config.id2label == {0: "neg", 1: "pos"}
    assert model.config.label2id == {"neg": 0, "pos": 1}
    classify = pipeline("text-classification", model=str(result.folder))
    assert {p["label"] for p in classify(["the film was good", "the film was awful"])} <= {"neg", "pos"}
    records = read_jsonl(result.folder / "predictions_test.jsonl")
    assert len(records) == 32 and {r["label"] for r in records} == {"neg", "pos"}


@pytest.mark.parametrize("sampling", ["random", "group_by_length"])
def test_the_saved_model_predicts_what_the_run_predicted(checkpoints, data_dir, tmp_path, sampling):
    cfg = compose_tiny(
        checkpoints["bert"], data_dir, "trainer.num_train_epochs=1", f"trainer.train_sampling_strategy={sampling}"
    )
    result = run(cfg, output_dir=tmp_path / "run")
    records = read_jsonl(result.folder / "predictions_test.jsonl")
    classify = pipeline("text-classification", model=str(result.folder))
    reloaded = classify([r["text"] for r in records])
    assert [p["label"] for p in reloaded] == [r["prediction"] for r in records]
    assert np.allclose([p["score"] for p in reloaded], [r["score"] for r in records], atol=1e-5)


def test_loss_falls_and_accuracy_rises_on_learnable_data(checkpoints, data_dir, tmp_path):
    cfg = compose_tiny(checkpoints["bert"], data_dir, "trainer.num_train_epochs=8", "strategy.learning_rate=3e-3")
    result = run(cfg, output_dir=tmp_path / "run")
    assert result.metrics["train_loss_last_logged"] < result.metrics["train_loss_first_logged"] - 0.05
    assert result.metrics["test"]["accuracy"] >= 0.8


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_pair_classification(capsys, checkpoints, data_dir, tmp_path, arch):
    cfg = compose_tiny(
        checkpoints[arch],
        data_dir,
        "task.data.source=null",
        f"task.data.data_files={data_dir / 'pairs.csv'}",
        "task.columns.text=premise",
        "task.columns.text_pair=hypothesis",
        "task.columns.label=label",
        "trainer.num_train_epochs=1",
    )
    result = run(cfg, output_dir=tmp_path / "run")
    assert result.metrics["validation"]["num_examples"] == 24
    tokenizer = AutoTokenizer.from_pretrained(result.folder)
    pair_ids = tokenizer("good film", "bad film")["input_ids"]
    separator = tokenizer.sep_token_id if arch == "bert" else tokenizer.eos_token_id
    first = tokenizer("good film")["input_ids"]
    # Something separates the two texts, in the saved tokenizer, so pipeline() does the same.
    assert separator in pair_ids[len(first) - 1 :]
    records = read_jsonl(result.folder / "predictions_validation.jsonl")
    classify = pipeline("text-classification", model=str(result.folder))
    reloaded = classify([{"text": r["text"], "text_pair": r["text_pair"]} for r in records[:8]])
    assert np.allclose([p["score"] for p in reloaded], [r["score"] for r in records[:8]], atol=1e-5)
    # hf-transfer predict, from a csv with both columns.
    from test_predict import predict

    pairs = tmp_path / "pairs.csv"
    write_csv(pairs, [{"premise": r["text"], "hypothesis": r["text_pair"]} for r in records[:8]])
    code, lines, _ = predict(capsys, str(result.folder), "-f", str(pairs), "--column", "premise",
                             "--pair-column", "hypothesis")  # fmt: skip
    assert code == 0 and [line["text_pair"] for line in lines] == [r["text_pair"] for r in records[:8]]
    assert np.allclose([line["score"] for line in lines], [r["score"] for r in records[:8]], atol=1e-5)


def test_a_decoder_classifies_padded_batches_like_single_examples(checkpoints, data_dir, tmp_path):
    result = run(compose_tiny(checkpoints["gpt2"], data_dir, "trainer.num_train_epochs=1"), output_dir=tmp_path / "run")
    texts = ["good", "the movie was really awful and the plot dull", "fine film", "this story was a sad one"]
    classify = pipeline("text-classification", model=str(result.folder))
    batched = classify(texts, batch_size=4)
    single = [classify(text)[0] for text in texts]
    assert np.allclose([p["score"] for p in batched], [p["score"] for p in single], atol=1e-5)
    assert classify.tokenizer.padding_side == "right"
    assert classify.model.config.pad_token_id == classify.tokenizer.pad_token_id is not None


def test_class_weights_change_the_loss_as_computed_by_hand(checkpoints, data_dir, tmp_path):
    cfg = compose_tiny(checkpoints["bert"], data_dir, "trainer.num_train_epochs=1", "task.class_weights=[1.0,3.0]")
    result = run(cfg, output_dir=tmp_path / "run")
    records = read_jsonl(result.folder / "predictions_validation.jsonl")
    model = AutoModelForSequenceClassification.from_pretrained(result.folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(result.folder)
    with torch.no_grad():
        logits = model(**tokenizer([r["text"] for r in records], padding=True, return_tensors="pt")).logits
    labels = torch.tensor([model.config.label2id[r["label"]] for r in records])
    log_probs = torch.log_softmax(logits, dim=-1)[torch.arange(len(labels)), labels]
    weights = torch.tensor([1.0, 3.0])[labels]
    by_hand = float(-(weights * log_probs).sum() / weights.sum())
    unweighted = float(-log_probs.mean())
    assert result.metrics["validation"]["loss"] == pytest.approx(by_hand, abs=1e-5)
    assert not math.isclose(by_hand, unweighted, abs_tol=1e-4)


def test_balanced_class_weights_are_inverse_frequencies(data_dir, tmp_path):
    from hf_transfer.compose import compose
    from hf_transfer.config import validate
    from hf_transfer.tasks import task_class

    rows = sentiment_rows(40, seed=5)
    rows = [r for r in rows if r["sentiment"] == "pos"] + [r for r in rows if r["sentiment"] == "neg"][:5]
    write_csv(tmp_path / "train.csv", rows)  # 20 pos, 5 neg
    write_csv(tmp_path / "validation.csv", rows[:4] + rows[-2:])
    cfg = validate(compose(["task=tiny_sentiment", f"task.data.source={tmp_path}", "task.class_weights=balanced",
                            "model.source=unused"], config_dir=str(TEST_RECIPES)))  # fmt: skip
    data = task_class("text_classification")(cfg.task, seed=0).load()
    assert data.labels == ["neg", "pos"]
    assert data.label_weights == pytest.approx([25 / (2 * 5), 25 / (2 * 20)])


def test_label_map_drop_labels_and_label_order(tmp_path):
    from hf_transfer.compose import compose
    from hf_transfer.config import validate
    from hf_transfer.tasks import task_class

    rows = [{"text": f"text {i}", "category": ["fresh", "rotten", "plot"][i % 3]} for i in range(60)]
    write_csv(tmp_path / "all.csv", rows)
    cfg = validate(
        compose(
            [
                "task=tiny_sentiment",
                f"task.data.source={tmp_path / 'all.csv'}",
                "task.columns.text=text",
                "task.columns.label=category",
                "task.label_map={fresh: positive, rotten: negative}",
                "task.drop_labels=[plot]",
                "task.labels=[negative, positive]",
                "task.data.test_fraction=0.1",
                "task.data.validation_fraction=0.1",
                "model.source=unused",
            ],
            config_dir=str(TEST_RECIPES),
        )  # fmt: skip
    )
    data = task_class("text_classification")(cfg.task, seed=0).load()
    splits = data.splits
    assert data.labels == ["negative", "positive"]
    assert {name: len(split) for name, split in splits.items()} == {"train": 32, "validation": 4, "test": 4}
    train = splits["train"]
    assert train.features["label"].names == ["negative", "positive"]
    # Stratified: both classes equally present in every split.
    for split in splits.values():
        counts = np.bincount(split["label"])
        assert counts[0] == counts[1]
    # Seeded: the same seed gives the same split, another seed another one.
    again = task_class("text_classification")(cfg.task, seed=0).load().splits
    other = task_class("text_classification")(cfg.task, seed=1).load().splits
    assert again["validation"]["text"] == splits["validation"]["text"]
    assert other["validation"]["text"] != splits["validation"]["text"]


def test_validation_is_carved_from_train_never_from_test(checkpoints, data_dir, tmp_path):
    result = run(compose_tiny(checkpoints["bert"], data_dir, "trainer.num_train_epochs=1"), output_dir=tmp_path / "run")
    assert result.metrics["examples"] == {"train": 72, "validation": 24, "test": 32}
    test_texts = {r["text"] for r in read_jsonl(result.folder / "predictions_test.jsonl")}
    validation_texts = {r["text"] for r in read_jsonl(result.folder / "predictions_validation.jsonl")}
    train_texts = {r["review"] for r in sentiment_rows(96, seed=1)}
    assert validation_texts <= train_texts
    assert len(test_texts & validation_texts) <= len(test_texts & train_texts)  # (random overlaps only)


def test_a_test_split_without_labels_is_predicted_not_scored(checkpoints, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_csv(folder / "train.csv", sentiment_rows(64, seed=1))
    unlabeled = [{"review": r["review"], "sentiment": -1} for r in sentiment_rows(10, seed=9)]
    write_csv(folder / "test.csv", unlabeled)
    result = run(compose_tiny(checkpoints["bert"], folder, "trainer.num_train_epochs=1"), output_dir=tmp_path / "run")
    assert result.metrics["test"] == "unlabeled: predicted, not scored"
    records = read_jsonl(result.folder / "predictions_test.jsonl")
    assert len(records) == 10 and all("label" not in r and r["prediction"] in {"neg", "pos"} for r in records)


def test_a_missing_column_names_the_key_and_the_columns(checkpoints, data_dir, tmp_path):
    cfg = compose_tiny(checkpoints["bert"], data_dir, "task.columns.text=reviw")
    with pytest.raises(UserError) as error:
        run(cfg, output_dir=tmp_path / "run")
    message = str(error.value)
    assert "'reviw'" in message and "task.columns.text" in message and "did you mean 'review'" in message
    assert not (tmp_path / "run").exists()


def test_a_label_unseen_in_train_is_refused(checkpoints, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_csv(folder / "train.csv", sentiment_rows(40, seed=1))
    write_csv(folder / "test.csv", [{"review": "so so", "sentiment": "mixed"}])
    with pytest.raises(UserError, match="mixed"):
        run(compose_tiny(checkpoints["bert"], folder), output_dir=tmp_path / "run")


@pytest.mark.parametrize("name", ["train.jsonl", "train.csv.bz2", "train.parquet", "train.tsv"])
def test_local_file_formats(tmp_path, name):
    import bz2

    import pandas as pd

    from hf_transfer.data import DatasetConfig, load_raw

    frame = pd.DataFrame(sentiment_rows(10, seed=1))
    path = tmp_path / name
    if name.endswith(".jsonl"):
        frame.to_json(path, orient="records", lines=True)
    elif name.endswith(".bz2"):
        path.write_bytes(bz2.compress(frame.to_csv(index=False).encode()))
    elif name.endswith(".parquet"):
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="\t", index=False)
    raw = load_raw(DatasetConfig(source=str(path)))
    assert raw["train"].column_names == ["review", "sentiment"]
    assert raw["train"]["review"] == list(frame["review"])


def test_a_missing_data_file_is_named(tmp_path):
    from hf_transfer.data import DatasetConfig, load_raw

    with pytest.raises(UserError, match="nope.csv"):
        load_raw(DatasetConfig(data_files={"train": str(tmp_path / "nope.csv")}))


def test_an_evaluate_metric_from_a_local_path(checkpoints, data_dir, tmp_path):
    """evaluate.load of a hub name needs the hub; a local metric script works offline."""
    script = tmp_path / "share_right" / "share_right.py"
    script.parent.mkdir()
    script.write_text(
        "import datasets\nimport evaluate\n\n"
        "class ShareRight(evaluate.Metric):\n"
        "    def _info(self):\n"
        "        features = datasets.Features({'predictions': datasets.Value('int64'), 'references': datasets.Value('int64')})\n"
        "        return evaluate.MetricInfo(description='', citation='', inputs_description='', features=features)\n\n"
        "    def _compute(self, predictions, references):\n"
        "        return {'share': sum(p == r for p, r in zip(predictions, references)) / len(references)}\n"
    )
    cfg = compose_tiny(checkpoints["bert"], data_dir, f"task.metrics=[{script.parent}]", "trainer.num_train_epochs=1")
    result = run(cfg, output_dir=tmp_path / "run")
    assert result.metrics["test"]["share_right_share"] == pytest.approx(result.metrics["test"]["accuracy"])


def test_a_metric_that_cannot_be_loaded_is_named(checkpoints, data_dir, tmp_path):
    with pytest.raises(UserError, match="could not load the evaluate metric '/no/such/metric'"):
        run(compose_tiny(checkpoints["bert"], data_dir, "task.metrics=[/no/such/metric]"), output_dir=tmp_path / "run")


def test_classification_metrics_by_hand():
    from hf_transfer.metrics import classification_scores, per_class_scores

    predictions, references = np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0])
    # a: tp 1 of 2 predicted, 2 actual; b: tp 1 of 1 and 2; c: tp 2 of 3 and 2; d: never seen (skipped).
    scores = classification_scores(predictions, references, num_labels=4)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["precision_macro"] == pytest.approx((1 / 2 + 1 + 2 / 3) / 3)
    assert scores["recall_macro"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    assert scores["f1_macro"] == pytest.approx((1 / 2 + 2 / 3 + 4 / 5) / 3)
    per_class = per_class_scores(predictions, references, ["a", "b", "c", "d"])
    assert per_class["b"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2, "predicted": 1})
    assert per_class["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "predicted": 0}
