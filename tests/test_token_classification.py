"""Token classification: CoNLL files, sub-token alignment, entity and per-tag metrics, tag
schemes, pipeline reloads."""

from __future__ import annotations

import json
import logging
import random
from collections import Counter

import pytest
from conftest import PEOPLE, PLACES, WORDS, compose_tiny
from transformers import AutoTokenizer, pipeline

from hf_transfer.errors import UserError
from hf_transfer.metrics import entity_scores
from hf_transfer.run import run
from hf_transfer.tasks.token_classification import _inside_tags, _refuse_misfits, detect_tag_scheme


def sentence(rng):
    """Tokens and BIO tags: people (one or two words) and places among filler words."""
    tokens, tags = [], []
    for _ in range(rng.randint(3, 6)):
        roll = rng.random()
        if roll < 0.25:
            first, second = rng.sample(PEOPLE, 2)
            tokens += [first, second] if rng.random() < 0.4 else [first]
            tags += ["B-person", "I-person"] if len(tokens) - len(tags) == 2 else ["B-person"]
        elif roll < 0.45:
            tokens.append(rng.choice(PLACES))
            tags.append("B-place")
        else:
            tokens.append(rng.choice(WORDS))
            tags.append("O")
    return tokens, tags


def write_conll(path, sentences):
    with path.open("w") as stream:
        for tokens, tags in sentences:
            stream.writelines(f"{t}\t{g}\n" for t, g in zip(tokens, tags))
            stream.write("  \n")  # whitespace-only lines separate sentences too


@pytest.fixture(scope="module")
def ner_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ner")
    rng = random.Random(0)
    write_conll(folder / "train.conll", [sentence(rng) for _ in range(120)])
    write_conll(folder / "test.conll", [sentence(rng) for _ in range(30)])
    return folder


def compose_ner(checkpoint, folder, *extra):
    return compose_tiny(checkpoint, folder, "task=tiny_ner", *extra)


# Part-of-speech data (Brown-style tags, BE and BED among them: B-like, yet no B- prefix), each
# tag from its own words (of the tiny tokenizer's vocabulary, but for "be"): learnable at once.
POS_WORDS = {
    "AT": ["the", "a"],
    "NN": ["movie", "film", "plot", "story"],
    "NP": PEOPLE + PLACES,
    "VBD": ["went", "saw"],
    "BED": ["was"],
    "BE": ["be"],
    "JJ": ["good", "great", "bad", "awful"],
    "IN": ["to", "with", "in"],
    "RB": ["really", "today"],
    "PPS": ["it"],
}
POS_PATTERNS = ["NP VBD IN NP", "AT NN BED JJ", "PPS BED RB JJ", "NP VBD AT NN RB", "NP VBD IN BE JJ"]


def pos_sentence(rng):
    """Words and their tags, one tag in 20 a tagging mistake (some errors no model can avoid)."""
    tags = rng.choice(POS_PATTERNS).split()
    words = [rng.choice(POS_WORDS[tag]) for tag in tags]
    return words, [rng.choice(list(POS_WORDS)) if rng.random() < 0.05 else tag for tag in tags]


@pytest.fixture(scope="module")
def pos_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pos")
    rng = random.Random(0)
    write_conll(folder / "train.conll", [pos_sentence(rng) for _ in range(120)])
    write_conll(folder / "test.conll", [pos_sentence(rng) for _ in range(30)])
    return folder


def scheme_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("tag scheme:")]


def test_entity_metrics_by_hand():
    actual = [["B-person", "I-person", "O", "B-place"], ["O", "B-place", "O"]]
    predicted = [["B-person", "I-person", "O", "O"], ["O", "B-place", "B-person"]]
    scores = entity_scores(predicted, actual)
    # 3 true entities, 3 predicted, 2 right: P = R = F1 = 2/3; 5 of 7 tokens right.
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3) and scores["accuracy"] == pytest.approx(5 / 7)
    assert scores["per_type"]["place"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    # seqeval's reading of a stray I- tag: it starts an entity.
    assert entity_scores([["O", "I-place"]], [["O", "B-place"]])["f1"] == 1.0


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_ner_learns_and_reloads_in_the_pipeline(checkpoints, ner_data, tmp_path, caplog, arch):
    caplog.set_level(logging.INFO, logger="hf_transfer")
    cfg = compose_ner(
        checkpoints[arch],
        ner_data,
        "trainer.num_train_epochs=12",
        "strategy.learning_rate=1e-2",
        "trainer.per_device_train_batch_size=8",
    )
    result = run(cfg, output_dir=tmp_path / "run")
    test = result.metrics["test"]
    assert result.metrics["train_loss_last_logged"] < result.metrics["train_loss_first_logged"] / 2
    assert test["f1"] > 0.5 and set(test["per_type"]) <= {"person", "place"}
    assert test["accuracy"] > 0.7
    # BIO tags: detected as entity tags (iob2), scored per entity, the best checkpoint by f1.
    assert scheme_lines(caplog) == ["tag scheme: iob2 (detected: every tag is O or B-/I-TYPE); scored per entity"]
    assert test["tag_scheme"] == result.metrics["validation"]["tag_scheme"] == "iob2"
    assert result.metrics["best_metric"] == {"name": "f1", "greater_is_better": True}

    records = [json.loads(line) for line in (result.folder / "predictions_test.jsonl").read_text().splitlines()]
    assert len(records) == 30 and all(len(r["predicted"]) == len(r["tokens"]) for r in records)
    # The saved model, through the pipeline, tags the words as the run did.
    tagger = pipeline("token-classification", model=str(result.folder))
    for record in records[:10]:
        words = tagger(" ".join(record["tokens"]))
        first_pieces = [w for w in words if not w["word"].startswith("##")]
        tagged = {w["start"]: w["entity"] for w in first_pieces}
        starts = [sum(len(t) + 1 for t in record["tokens"][:i]) for i in range(len(record["tokens"]))]
        assert [tagged.get(s, "O") for s in starts] == record["predicted"]
    entities = pipeline("token-classification", model=str(result.folder), aggregation_strategy="simple")
    sentence = "alice went to paris with bob"
    found = entities(sentence)
    assert found and {e["entity_group"] for e in found} <= {"person", "place"}
    assert {sentence[e["start"] : e["end"]] for e in found} <= {"alice", "paris", "bob"}


def test_byte_level_tokenizers_get_a_prefix_space(checkpoints, ner_data, tmp_path):
    result = run(compose_ner(checkpoints["gpt2"], ner_data, "trainer.num_train_epochs=1"), output_dir=tmp_path / "run")
    tokenizer = AutoTokenizer.from_pretrained(result.folder)
    # A word alone tokenizes as it does inside running text.
    alone = tokenizer(["paris"], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    inside = tokenizer("went to paris", add_special_tokens=False)["input_ids"]
    assert inside[-len(alone) :] == alone


def test_label_alignment():
    from hf_transfer.tasks.token_classification import TokenClassification

    inside = {1: 2}  # B-person -> I-person
    words = [None, 0, 0, 1, 2, 2, None]
    tags = [1, 0, 1]
    assert TokenClassification._align(words, tags, False, inside) == [-100, 1, -100, 0, 1, -100, -100]
    assert TokenClassification._align(words, tags, True, inside) == [-100, 1, 2, 0, 1, 2, -100]


def test_mismatched_tags_are_refused(checkpoints, tmp_path):
    from hf_transfer.errors import UserError

    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "train.conll").write_text("alice\tB-person\nparis\n\n")
    with pytest.raises(UserError, match=r"line 2: expected `token tag`"):
        run(compose_ner(checkpoints["bert"], folder), output_dir=tmp_path / "run")


@pytest.mark.parametrize("strategy", ["head_only", "full", "partial_unfreeze", "lora"])
def test_each_strategy_trains_what_it_claims(checkpoints, ner_data, tmp_path, strategy):
    from test_strategies import ParameterWatch

    watch = ParameterWatch()
    extra = ["strategy.num_layers=1"] if strategy == "partial_unfreeze" else []
    run(compose_ner(checkpoints["bert"], ner_data, f"strategy={strategy}", "trainer.num_train_epochs=1", *extra),
        output_dir=tmp_path / "run", callbacks=[watch])  # fmt: skip
    names = set(watch.before)
    head = {n for n in names if n.startswith("classifier.")}
    expected = {
        "head_only": head,
        "full": names,
        "partial_unfreeze": head | {n for n in names if n.startswith("bert.encoder.layer.1.")},
        "lora": {n for n in names if ".lora_" in n or "modules_to_save.default" in n},
    }[strategy]
    assert watch.changed == expected and expected


def test_token_and_tag_list_columns(checkpoints, tmp_path):
    rng = random.Random(1)
    folder = tmp_path / "lists"
    folder.mkdir()
    rows = [dict(zip(("words", "ner"), sentence(rng))) for _ in range(40)]
    test_rows = [dict(zip(("words", "ner"), sentence(rng))) for _ in range(8)]
    for name, split in (("train", rows), ("test", test_rows)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in split))
    cfg = compose_ner(checkpoints["bert"], folder, "task.data.format=null", "task.columns.tokens=words",
                      "task.columns.tags=ner", "trainer.num_train_epochs=1")  # fmt: skip
    result = run(cfg, output_dir=tmp_path / "run")
    assert result.metrics["examples"]["train"] + result.metrics["examples"]["validation"] == 40
    # The tags came from the `ner` column: the saved model's labels are exactly those tags, "O" first.
    config = json.loads((result.folder / "config.json").read_text())
    tags = {tag for row in rows for tag in row["ner"]}
    assert tags == {"O", "B-person", "I-person", "B-place"}  # the data has every kind of tag
    assert set(config["id2label"].values()) == tags and len(config["id2label"]) == len(tags)
    assert config["id2label"]["0"] == "O"
    assert {int(i) for i in config["id2label"]} == set(range(len(tags)))
    # The words came from the `words` column: each record holds its sentence's words and gold tags.
    test = [json.loads(line) for line in (result.folder / "predictions_test.jsonl").read_text().splitlines()]
    assert [r["tokens"] for r in test] == [row["words"] for row in test_rows]
    assert [r["tags"] for r in test] == [row["ner"] for row in test_rows]
    assert all(len(r["predicted"]) == len(r["tokens"]) and set(r["predicted"]) <= tags for r in test)
    lines = (result.folder / "predictions_validation.jsonl").read_text().splitlines()
    validation = [json.loads(line) for line in lines]
    assert len(validation) == result.metrics["examples"]["validation"]
    train_sentences = [(row["words"], row["ner"]) for row in rows]
    assert all((r["tokens"], r["tags"]) in train_sentences for r in validation)


def test_words_cut_off_by_max_length_count_as_missed(checkpoints, ner_data, tmp_path):
    """Scores cover every word of the test sentences, not only those that fit in max_length."""
    cfg = compose_ner(checkpoints["bert"], ner_data, "task.max_length=5", "trainer.num_train_epochs=2",
                      "strategy.learning_rate=1e-2")  # fmt: skip
    result = run(cfg, output_dir=tmp_path / "run")
    records = [json.loads(line) for line in (result.folder / "predictions_test.jsonl").read_text().splitlines()]
    assert any(len(r["tokens"]) > 3 and set(r["predicted"][3:]) == {"O"} for r in records)  # cut off: "O"
    expected = entity_scores([r["predicted"] for r in records], [r["tags"] for r in records])
    test = result.metrics["test"]
    assert (test["precision"], test["recall"], test["f1"]) == pytest.approx(
        (expected["precision"], expected["recall"], expected["f1"])
    )


# -- tag schemes: entity tags or plain (POS) tags ------------------------------------------------
@pytest.mark.parametrize(
    ("tags", "scheme"),
    [
        (["O", "B-person", "I-person", "B-place"], "iob2"),
        (["O", "B-geo-loc", "I-geo-loc"], "iob2"),  # a type may hold a hyphen
        (["O"], "iob2"),  # no entity at all: still NER's default reading
        (["O", "B-person", "I-person", "E-person", "S-place"], "bioes"),
        (["O", "S-place"], "bioes"),
        (["O", "I-person", "I-place"], "io"),
        (["NN", "VBD", "BE", "BED", "AT"], "none"),
        (["NN-TL", "IN-HL", "NP"], "none"),  # Brown's hyphenated tags are no X-TYPE
        (["O", "B-person", "I-person", "NN"], "none"),  # mixed: one plain tag is enough
        (["O", "U-person", "L-person", "B-person"], "none"),  # BILOU: not a scheme scored here
        (["o", "b-person"], "none"),  # prefixes are capitals, as seqeval reads them
    ],
)
def test_tag_scheme_detection(tags, scheme):
    assert detect_tag_scheme(tags)[0] == scheme


def test_detection_says_why():
    scheme, why = detect_tag_scheme(["NN", "O", "VBD", "B-person", "BE", "BED"])
    assert (scheme, why) == ("none", "6 tags, 4 not O or B-/I-/E-/S-TYPE, e.g. NN, VBD, BE")


@pytest.mark.parametrize(
    ("scheme", "tags", "fits"),
    [
        ("bio", ["O", "B-person", "I-person"], True),
        ("iob2", ["O", "B-person", "S-person"], False),
        ("bioes", ["O", "B-person", "I-person"], True),  # BIO tags are BIOES tags without E-/S-
        ("io", ["O", "I-person"], True),
        ("io", ["O", "B-person", "I-person"], False),
        ("none", ["O", "B-person", "NN"], True),  # any tags can be scored per tag
    ],
)
def test_a_given_scheme_is_checked_against_the_tags(scheme, tags, fits):
    if fits:
        _refuse_misfits(scheme, tags)
    else:
        with pytest.raises(UserError, match=rf"^task.tag_scheme={scheme} does not fit the train tags"):
            _refuse_misfits(scheme, tags)


def test_sub_tokens_repeat_a_plain_tag():
    labels = ["O", "B-person", "I-person", "BE"]
    assert _inside_tags(labels, "iob2") == {1: 2}  # B-X -> I-X after a word's first sub-token
    assert _inside_tags(labels, "none") == {}  # B-person is a tag of its own here: repeated


def test_pos_tags_are_scored_per_tag(checkpoints, pos_data, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="hf_transfer")
    cfg = compose_ner(checkpoints["bert"], pos_data, "trainer.num_train_epochs=3", "strategy.learning_rate=1e-2",
                      "trainer.per_device_train_batch_size=8", "task.label_all_subtokens=true")  # fmt: skip
    result = run(cfg, output_dir=tmp_path / "run")
    assert scheme_lines(caplog) == [
        "tag scheme: none (detected: 10 tags, 10 not O or B-/I-/E-/S-TYPE, e.g. NP, VBD, JJ); scored per tag"
    ]
    metrics = json.loads((result.folder / "metrics.json").read_text())
    assert metrics["best_metric"] == {"name": "accuracy", "greater_is_better": True}
    # The Trainer chose its best checkpoint by validation accuracy, as recorded.
    state = json.loads((result.folder / metrics["best_checkpoint"] / "trainer_state.json").read_text())
    assert state["best_metric"] == max(e["eval_accuracy"] for e in state["log_history"] if "eval_accuracy" in e)
    test = metrics["test"]
    assert test["tag_scheme"] == metrics["validation"]["tag_scheme"] == "none"
    # Per-tag figures and their macro F1; no entity figures (P/R/F1 of invented "types").
    assert {"accuracy", "f1_macro", "per_tag"} <= set(test)
    assert not {"per_type", "f1", "precision", "recall"} & set(test)
    records = [json.loads(line) for line in (result.folder / "predictions_test.jsonl").read_text().splitlines()]
    gold = Counter(tag for r in records for tag in r["tags"])
    assert set(test["per_tag"]) <= set(POS_WORDS) and set(gold) <= set(test["per_tag"])
    assert {tag: row["support"] for tag, row in test["per_tag"].items() if row["support"]} == dict(gold)
    # The token accuracy is the share of words the predictions file has right.
    words = [(p, g) for r in records for p, g in zip(r["predicted"], r["tags"])]
    assert test["accuracy"] == pytest.approx(sum(p == g for p, g in words) / len(words))
    assert test["accuracy"] > 0.8 and test["f1_macro"] > 0.5
    # Prediction gives a tag per word, as the run did (not entity groups of invented types).
    from hf_transfer.predict import load_predictor

    predicted = list(load_predictor(str(result.folder)).predict([{"text": " ".join(r["tokens"])} for r in records], 8))
    assert [p["tags"] for p in predicted] == [r["predicted"] for r in records]
    assert [p["tokens"] for p in predicted] == [r["tokens"] for r in records]


def test_pos_words_cut_off_by_max_length_are_missed_not_o(checkpoints, pos_data, tmp_path):
    """Under scheme none a cut-off word has no prediction (null): "O" is no POS tag."""
    cfg = compose_ner(checkpoints["bert"], pos_data, "task.max_length=5", "trainer.num_train_epochs=1")
    result = run(cfg, output_dir=tmp_path / "run")
    records = [json.loads(line) for line in (result.folder / "predictions_test.jsonl").read_text().splitlines()]
    # [CLS], at most 3 words, [SEP]: each sentence's later words are cut off, and predicted as null.
    kept = [r["predicted"].index(None) for r in records]
    assert all(0 < n <= 3 and r["predicted"][n:] == [None] * (len(r["tokens"]) - n) for n, r in zip(kept, records))
    assert "O" not in result.metrics["test"]["per_tag"]
    words = [(p, g) for r in records for p, g in zip(r["predicted"], r["tags"])]
    assert result.metrics["test"]["accuracy"] == pytest.approx(sum(p == g for p, g in words) / len(words))


def test_a_scheme_the_tags_contradict_is_refused(checkpoints, pos_data, tmp_path):
    with pytest.raises(UserError) as refused:
        run(compose_ner(checkpoints["bert"], pos_data, "task.tag_scheme=bio"), output_dir=tmp_path / "run")
    message = str(refused.value)
    assert "\n" not in message and message.startswith("task.tag_scheme=bio does not fit the train tags")
    assert "e.g. NP, VBD, JJ" in message and "task.tag_scheme=none" in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("scheme", ["null", "none"])  # detected, after reading the data; given, at once
def test_entity_f1_is_no_metric_of_plain_tags(checkpoints, pos_data, tmp_path, scheme):
    cfg = compose_ner(checkpoints["bert"], pos_data, f"task.tag_scheme={scheme}", "task.metric_for_best_model=f1")
    with pytest.raises(UserError, match=r"'f1' is not a metric .*choose one of: accuracy, f1_macro, loss"):
        run(cfg, output_dir=tmp_path / "run")


def test_trainer_keys_still_choose_the_best_checkpoint(checkpoints, pos_data, tmp_path):
    """The scheme's metric is set once the tags are read; trainer.metric_for_best_model still wins."""
    cfg = compose_ner(checkpoints["bert"], pos_data, "trainer.num_train_epochs=2", "trainer.metric_for_best_model=loss",
                      "trainer.greater_is_better=false")  # fmt: skip
    result = run(cfg, output_dir=tmp_path / "run")
    state = json.loads((result.folder / result.metrics["best_checkpoint"] / "trainer_state.json").read_text())
    assert state["best_metric"] == min(e["eval_loss"] for e in state["log_history"] if "eval_loss" in e)


def test_a_first_run_trains_the_steps_a_tag_head_needs(checkpoints, ner_data, tmp_path, caplog):
    """The default schedule adds epochs until the task's own minimum of steps (a tag head
    learns its rare tags late); strategy.min_steps=0 trains exactly the epochs asked for."""
    from hf_transfer.config import validate
    from hf_transfer.tasks.token_classification import TokenClassification

    caplog.set_level(logging.INFO)
    task = TokenClassification(validate(compose_ner(checkpoints["bert"], ner_data)).task, 0)
    assert task.min_steps(40) == (400, "token_classification learns in no fewer than 400 steps")
    assert task.min_steps(1000) == (1000, "strategy.min_steps=1000") and task.min_steps(0)[0] == 0
    result = run(compose_ner(checkpoints["bert"], ner_data, "strategy.min_steps=40", "trainer.num_train_epochs=1"),
                 tmp_path / "run")  # fmt: skip
    assert result.metrics["steps"] >= 400
    assert "token_classification learns in no fewer than 400 steps:" in caplog.text
    exact = run(compose_ner(checkpoints["bert"], ner_data, "strategy.min_steps=0", "trainer.num_train_epochs=1"),
                tmp_path / "exact")  # fmt: skip
    assert exact.metrics["steps"] < 400
