"""model.pooling: a text classifier's head on the mean of the token states.

A sentence-transformers checkpoint (modules.json and a pooling config beside the weights, as
all-MiniLM-L6-v2 ships) gets it by default; any checkpoint gets it with model.pooling=mean.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import cli_env, compose_tiny, tiny_overrides
from test_feature_cache import assert_same_training
from test_strategies import ParameterWatch, matching
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, pipeline

from hf_transfer.cli import main
from hf_transfer.mean_pooling import MeanPoolingForSequenceClassification
from hf_transfer.run import run

TEXTS = ["the movie was good", "awful plot", "a wonderful film and great acting", "it was boring"]


def sentence_transformers_folder(checkpoint, folder, mode="pooling_mode_mean_tokens"):
    """A copy of `checkpoint` with the files sentence-transformers writes beside the weights."""
    shutil.copytree(checkpoint, folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]  # fmt: skip
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    modes = ["pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens"]
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, **{m: m == mode for m in modes}})
    )
    return folder


@pytest.fixture(scope="module")
def sentence_bert(checkpoints, tmp_path_factory):
    return sentence_transformers_folder(checkpoints["bert"], tmp_path_factory.mktemp("st") / "bert")


@pytest.fixture(scope="module")
def trained(sentence_bert, data_dir, tmp_path_factory):
    """A mean-pooling classifier that learned the tiny task."""
    cfg = compose_tiny(sentence_bert, data_dir, "trainer.num_train_epochs=4", "strategy.learning_rate=3e-3")
    return run(cfg, output_dir=tmp_path_factory.mktemp("mean") / "run")


def test_a_sentence_transformers_checkpoint_is_pooled_by_the_mean(trained):
    assert trained.metrics["pooling"] == "mean"
    assert (
        trained.metrics["test"]["accuracy"] >= 0.7
    )  # it learned (chance: 0.5): the mean of its tokens carries the sentiment
    config = json.loads((trained.folder / "config.json").read_text())
    assert config["architectures"] == ["MeanPoolingForSequenceClassification"]
    assert config["base"]["model_type"] == "bert"
    assert config["id2label"] == {"0": "neg", "1": "pos"}
    # The class ships beside the weights, and the card says how to load it without hf_transfer.
    assert (trained.folder / "mean_pooling.py").is_file()
    assert "trust_remote_code=True" in (trained.folder / "README.md").read_text()
    # No pooler: it is neither trained nor saved.
    saved = AutoModelForSequenceClassification.from_pretrained(trained.folder)
    assert not any("pooler" in name for name in saved.state_dict())


@pytest.mark.parametrize(
    ("mode", "pooling", "expected"),
    [
        (None, "auto", "architecture"),  # a plain checkpoint keeps its architecture's head
        ("pooling_mode_cls_token", "auto", "architecture"),  # a sentence encoder trained on [CLS]
        (None, "mean", "mean"),
        ("pooling_mode_mean_tokens", "architecture", "architecture"),
    ],
)
def test_what_model_pooling_comes_to(checkpoints, data_dir, tmp_path, mode, pooling, expected):
    source = (
        checkpoints["bert"] if mode is None else sentence_transformers_folder(checkpoints["bert"], tmp_path / "m", mode)
    )
    cfg = compose_tiny(source, data_dir, "trainer.num_train_epochs=1", f"model.pooling={pooling}")
    result = run(cfg, output_dir=tmp_path / "run")
    assert result.metrics["pooling"] == expected
    assert (result.folder / "mean_pooling.py").is_file() == (expected == "mean")
    assert ("trust_remote_code=True" in (result.folder / "README.md").read_text()) == (expected == "mean")
    architecture = json.loads((result.folder / "config.json").read_text())["architectures"]
    assert architecture == [
        "MeanPoolingForSequenceClassification" if expected == "mean" else "BertForSequenceClassification"
    ]


def test_the_head_reads_the_mean_of_the_real_tokens_only(checkpoints):
    base = AutoModel.from_pretrained(checkpoints["bert"])
    tokenizer = AutoTokenizer.from_pretrained(checkpoints["bert"])
    model = MeanPoolingForSequenceClassification.from_base(base, num_labels=3).eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
        for i, text in enumerate(TEXTS):
            alone = tokenizer(text, return_tensors="pt")
            mean = model.base(**alone).last_hidden_state[0].mean(dim=0)
            by_hand = model.config.logit_scale * torch.nn.functional.cosine_similarity(
                mean.unsqueeze(0), model.classifier.weight
            )
            torch.testing.assert_close(model(**alone).logits[0], by_hand)
            torch.testing.assert_close(logits[i], by_hand, rtol=1e-5, atol=1e-5)  # padding changes nothing


@pytest.mark.parametrize(
    ("strategy", "moves"),
    [
        (["strategy=head_only"], r"^classifier\."),
        (["strategy=partial_unfreeze", "strategy.num_layers=1"], r"^(classifier\.|base\.encoder\.layer\.1\.)"),
        (["strategy=lora"], r"(\.lora_[AB]\.|modules_to_save\.default\.)"),
        (["strategy=full"], r"."),
    ],
    ids=["head_only", "partial_unfreeze", "lora", "full"],
)
def test_each_strategy_trains_what_it_says_on_a_mean_pooling_head(sentence_bert, data_dir, tmp_path, strategy, moves):
    watch = ParameterWatch()
    cfg = compose_tiny(sentence_bert, data_dir, "trainer.num_train_epochs=1", *strategy)
    result = run(cfg, output_dir=tmp_path / "run", callbacks=[watch])
    assert result.metrics["pooling"] == "mean"
    assert watch.changed and watch.changed == matching(watch.before, moves)
    if strategy == ["strategy=head_only"]:
        assert result.metrics["feature_cache"]["used"]  # the frozen blocks' outputs are computed once
        saved = AutoModelForSequenceClassification.from_pretrained(result.folder).base.state_dict()
        base = AutoModel.from_pretrained(sentence_bert).state_dict()
        assert saved and all(torch.equal(tensor, base[name]) for name, tensor in saved.items())


@pytest.mark.parametrize("strategy", [["strategy=head_only"], ["strategy=partial_unfreeze", "strategy.num_layers=1"]])
def test_the_feature_cache_trains_a_mean_pooling_head_as_without_it(sentence_bert, data_dir, tmp_path, strategy):
    cached, _ = assert_same_training(tmp_path, sentence_bert, data_dir, *strategy)
    assert cached.metrics["pooling"] == "mean"


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_save_reload_predict_the_same_with_hf_transfer_and_without(checkpoints, data_dir, tmp_path, capsys, arch):
    cfg = compose_tiny(checkpoints[arch], data_dir, "model.pooling=mean", "trainer.num_train_epochs=2",
                       "strategy.learning_rate=3e-3")  # fmt: skip
    folder = run(cfg, output_dir=tmp_path / "run").folder
    recorded = [json.loads(line) for line in (folder / "predictions_test.jsonl").read_text().splitlines()]
    expected = pipeline("text-classification", model=str(folder))(TEXTS)

    capsys.readouterr()
    assert main(["predict", str(folder), *TEXTS]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [line["label"] for line in lines] == [e["label"] for e in expected]
    assert [line["score"] for line in lines] == pytest.approx([e["score"] for e in expected], abs=1e-5)
    assert {r["prediction"] for r in recorded} <= {"neg", "pos"}

    # A user without hf_transfer: plain transformers, the class read from the file beside the weights.
    script = (
        "import json, sys\n"
        "from transformers import pipeline\n"
        f"pipe = pipeline('text-classification', model={str(folder)!r}, trust_remote_code=True)\n"
        f"print(json.dumps(pipe({TEXTS!r})))\n"
        "assert not any(name.startswith('hf_transfer') for name in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=cli_env(tmp_path),
                          cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    outside = json.loads(done.stdout.strip().splitlines()[-1])
    assert [o["label"] for o in outside] == [e["label"] for e in expected]
    assert [o["score"] for o in outside] == pytest.approx([e["score"] for e in expected], abs=1e-5)


def test_a_tokenizer_larger_than_the_embeddings_saves_a_model_that_reloads(checkpoints, data_dir, tmp_path):
    source = shutil.copytree(checkpoints["bert"], tmp_path / "grown")
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.add_tokens(["brandnewword", "anotherone"])
    tokenizer.save_pretrained(source)
    folder = run(compose_tiny(source, data_dir, "model.pooling=mean", "trainer.max_steps=1"), tmp_path / "run").folder
    reloaded = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    assert reloaded.get_input_embeddings().num_embeddings == len(tokenizer)
    assert reloaded.config.base.vocab_size == len(tokenizer)


def test_training_goes_on_from_a_mean_pooling_run_folder(trained, data_dir, tmp_path):
    cfg = compose_tiny(trained.folder, data_dir, "trainer.num_train_epochs=1", "strategy=head_only")
    again = run(cfg, output_dir=tmp_path / "again")
    assert again.metrics["pooling"] == "mean"
    # head_only: the base is the first run's fine-tuned one, bit for bit; the head is new.
    first = AutoModelForSequenceClassification.from_pretrained(trained.folder)
    second = AutoModelForSequenceClassification.from_pretrained(again.folder)
    assert all(torch.equal(t, first.base.state_dict()[n]) for n, t in second.base.state_dict().items())
    assert not torch.equal(first.classifier.weight, second.classifier.weight)


def test_imprinting_starts_the_head_as_the_nearest_class_centroid(checkpoints):
    base = AutoModel.from_pretrained(checkpoints["bert"])
    tokenizer = AutoTokenizer.from_pretrained(checkpoints["bert"])
    model = MeanPoolingForSequenceClassification.from_base(base, num_labels=3).eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    embeddings = model.embed(**batch)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(len(TEXTS)))
    before = model.classifier.weight.detach().clone()
    missing = model.imprint(embeddings, torch.tensor([0, 1, 0, 1]))
    assert missing == [2]  # no example of class 2: its vector stays as it was
    assert torch.equal(model.classifier.weight[2], before[2])
    for label, rows in ((0, [0, 2]), (1, [1, 3])):
        centroid = torch.nn.functional.normalize(embeddings[rows].mean(dim=0), dim=0)
        torch.testing.assert_close(model.classifier.weight[label], centroid)
    # The logits are the scaled cosines: each text goes to the class whose centroid is nearest.
    with torch.no_grad():
        logits = model(**batch).logits
    classes = torch.nn.functional.normalize(model.classifier.weight, dim=-1)
    torch.testing.assert_close(logits, model.config.logit_scale * embeddings @ classes.T)
    # Multi-hot rows (multi-label) imprint each label from the texts that have it.
    model.imprint(embeddings, torch.tensor([[1, 0, 1], [0, 1, 1], [1, 0, 0], [0, 1, 0]]))
    torch.testing.assert_close(model.classifier.weight[2], torch.nn.functional.normalize(embeddings[:2].mean(0), dim=0))


def test_multi_label_imprinting_sets_each_labels_threshold():
    """A sentence encoder's embeddings sit in a narrow cone: every cosine is positive, and a
    multi-label head without a bias would give every text every label."""
    from transformers import BertConfig

    config = BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    model = MeanPoolingForSequenceClassification.from_base(
        AutoModel.from_config(config), num_labels=2, problem_type="multi_label_classification"
    ).eval()
    axis = torch.eye(8)
    # Along axis 0, leaning towards axis 1 (label 0), axis 2 (label 1), both or neither.
    embeddings = torch.nn.functional.normalize(
        torch.stack([axis[0] * 4 + axis[1], axis[0] * 4 + axis[2], axis[0] * 4 + axis[1] + axis[2], axis[0] * 4]),
        dim=-1,
    )
    labels = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]])
    assert model.imprint(embeddings, labels) == []
    scores = model.config.logit_scale * embeddings @ model.classifier.weight.T
    assert (scores > 0).all()  # what no bias would predict
    predicted = (torch.sigmoid(model.classify(embeddings)) > 0.5).long()
    assert torch.equal(predicted, labels)


def test_a_classifier_dropout_override_reaches_the_head(checkpoints):
    base = AutoModel.from_pretrained(checkpoints["bert"])
    base.config.classifier_dropout = 0.0  # as model.config_overrides={classifier_dropout: 0.0} leaves it
    assert MeanPoolingForSequenceClassification.from_base(base, num_labels=2).dropout.p == 0.0


def test_a_run_imprints_its_new_head_from_the_training_examples(trained):
    assert trained.metrics["head_init"]["imprinted_from"] == trained.metrics["examples"]["train"]
    assert trained.metrics["head_init"]["seconds"] >= 0


def test_a_random_start_is_not_imprinted(sentence_bert, data_dir, tmp_path):
    """A random encoder gives every text about the same direction: imprinted class vectors would
    be near parallel, and the head and encoder would get next to no gradient."""
    result = run(
        compose_tiny(sentence_bert, data_dir, "model.pretrained=false", "trainer.max_steps=1"), tmp_path / "run"
    )
    assert result.metrics["pooling"] == "mean" and "head_init" not in result.metrics
    classes = torch.nn.functional.normalize(
        AutoModelForSequenceClassification.from_pretrained(result.folder).classifier.weight.detach(), dim=-1
    )
    assert abs(float(classes[0] @ classes[1])) < 0.9


def test_validate_says_what_the_head_reads(sentence_bert, checkpoints, data_dir, tmp_path, capsys):
    for source, head in (
        (sentence_bert, "a cosine classifier on the mean of the token states"),
        (checkpoints["bert"], "the architecture's own"),
    ):
        argv = ["validate", *tiny_overrides(source, data_dir), "strategy=lora", f"hydra.run.dir={tmp_path / 'r'}"]
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert f"head: {head} (model.pooling=auto)" in out and "no problems found" in out


def test_imprinting_samples_a_file_sorted_by_label(sentence_bert, tmp_path, monkeypatch):
    """A user's file sorted by label: the first rows are all of one class, a sample is not."""
    from conftest import sentiment_rows, write_csv

    from hf_transfer import imprint

    rows = sorted(sentiment_rows(96, seed=1), key=lambda row: row["sentiment"])
    (tmp_path / "sorted").mkdir()
    write_csv(tmp_path / "sorted" / "train.csv", rows)
    write_csv(tmp_path / "sorted" / "test.csv", sentiment_rows(32, seed=2))
    write_csv(tmp_path / "sorted" / "validation.csv", sentiment_rows(16, seed=3))  # train keeps the file's order
    monkeypatch.setattr(imprint, "IMPRINT_EXAMPLES", 16)
    result = run(compose_tiny(sentence_bert, tmp_path / "sorted", "trainer.max_steps=1"), output_dir=tmp_path / "run")
    assert result.metrics["head_init"]["imprinted_from"] == 16
    assert "without_examples" not in result.metrics["head_init"]  # both classes were in the sample
