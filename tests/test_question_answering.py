"""Extractive QA on a small SQuAD-format file written here (no such data ships in any package)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from conftest import PEOPLE, PLACES, compose_tiny

from hf_transfer.predict import load_predictor
from hf_transfer.run import run
from hf_transfer.tasks.question_answering import answer_f1, best_answers, encode_windows, normalize_answer, squad_scores


def example(rng, index):
    first, second = rng.sample(PEOPLE, 2)
    here, there = rng.sample(PLACES, 2)
    context = f"{first} went to {here} and {second} went to {there} today"
    person, place = (first, here) if rng.random() < 0.5 else (second, there)
    start = context.index(f"{person} went to {place}") + len(f"{person} went to ")
    return {"id": f"q{index}", "context": context, "question": f"where {person} went",
            "answers": {"text": [place], "answer_start": [start]}}  # fmt: skip


@pytest.fixture(scope="module")
def qa_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qa")
    rng = random.Random(0)
    for name, count in (("train", 160), ("test", 30)):
        rows = [example(rng, f"{name}{i}") for i in range(count)]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def compose_qa(checkpoint, folder, *extra):
    return compose_tiny(checkpoint, folder, "task=tiny_qa", *extra)


def test_squad_metrics_by_hand():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("well-known") == "wellknown"  # punctuation goes, as in the SQuAD script
    assert answer_f1("in paris today", "paris") == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
    examples = [
        {"id": "a", "answers": {"text": ["Paris", "the city of Paris"]}},
        {"id": "b", "answers": {"text": ["London"]}},
    ]
    scores = squad_scores({"a": "city of paris", "b": "berlin"}, examples)
    assert scores == {"exact_match": 50.0, "f1": 50.0}  # a: exact with the 2nd answer; b: nothing


def test_best_span_from_logits_by_hand():
    examples = [{"id": "x", "context": "alice went to paris today"}]
    # Tokens: [CLS] where [SEP] alice went to paris today [SEP]; offsets of context tokens only.
    offsets = [None, None, None, (0, 5), (6, 10), (11, 13), (14, 19), (20, 25), None]
    windows = {"example_id": ["x"], "offset_mapping": [offsets]}
    start = np.full((1, 9), -5.0)
    end = np.full((1, 9), -5.0)
    start[0, 1], end[0, 1] = 9.0, 9.0  # the question: not a valid span
    start[0, 6], end[0, 7] = 3.0, 2.0  # "paris today"
    end[0, 6] = 2.5  # "paris": the best valid span
    assert best_answers(examples, windows, start, end, n_best=5, max_answer_length=5) == {"x": "paris"}
    assert best_answers(examples, windows, start, end, n_best=5, max_answer_length=0) == {"x": ""}


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_qa_trains_and_the_reloaded_model_gives_the_same_answers(checkpoints, qa_data, tmp_path, arch):
    cfg = compose_qa(checkpoints[arch], qa_data, "trainer.num_train_epochs=8", "strategy.learning_rate=3e-3",
                     "trainer.per_device_train_batch_size=8")  # fmt: skip
    result = run(cfg, output_dir=tmp_path / "run")
    metrics = result.metrics
    assert metrics["train_loss_last_logged"] < metrics["train_loss_first_logged"] / 2
    assert {"exact_match", "f1"} <= set(metrics["test"]) and metrics["test"]["num_examples"] == 30
    records = [json.loads(line) for line in (result.folder / "predictions_test.jsonl").read_text().splitlines()]
    # transformers 5 has no question-answering pipeline: the reload goes through hf_transfer's reader.
    reader = load_predictor(str(result.folder))
    rows = {r["id"]: r for r in (json.loads(line) for line in (qa_data / "test.jsonl").read_text().splitlines())}
    questions = [{"question": rows[r["id"]]["question"], "context": rows[r["id"]]["context"]} for r in records]
    answers = list(reader.predict(questions, batch_size=7))
    assert [a["answer"] for a in answers] == [r["answer"] for r in records]
    gold = [rows[r["id"]]["answers"] for r in records]
    right = [(a, g) for a, g in zip(answers, gold) if a["answer"] == g["text"][0]]
    # The run scored these answers: its exact match is the share the reader gets right.
    assert 100 * len(right) / len(records) == pytest.approx(metrics["test"]["exact_match"])
    assert len(right) >= 12  # well above chance, and above picking either place of the two at random
    # A right answer is the gold span itself: character offsets in the context, as answer_start says.
    for answer, expected in right:
        start = expected["answer_start"][0]
        assert (answer["start"], answer["end"]) == (start, start + len(expected["text"][0]))


@pytest.mark.parametrize("strategy", ["head_only", "lora"])
def test_qa_strategies_train_the_qa_head(checkpoints, qa_data, tmp_path, strategy):
    from test_strategies import ParameterWatch

    watch = ParameterWatch()
    run(compose_qa(checkpoints["bert"], qa_data, f"strategy={strategy}", "trainer.num_train_epochs=1"),
        output_dir=tmp_path / "run", callbacks=[watch])  # fmt: skip
    head = {n for n in watch.changed if "qa_outputs" in n}
    assert head and all("qa_outputs" in n or "lora_" in n for n in watch.changed)


def test_answers_must_be_where_they_say(checkpoints, tmp_path):
    from hf_transfer.errors import UserError

    folder = tmp_path / "bad"
    folder.mkdir()
    row = {
        "id": "1",
        "context": "alice went to paris",
        "question": "where",
        "answers": {"text": ["paris"], "answer_start": [3]},
    }
    (folder / "train.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(UserError, match="answer 'paris' is not at character 3"):
        run(compose_qa(checkpoints["bert"], folder), output_dir=tmp_path / "run")


@pytest.mark.parametrize("strategy", ["full", "partial_unfreeze"])
def test_qa_full_and_partial(checkpoints, qa_data, tmp_path, strategy):
    from test_strategies import ParameterWatch

    watch = ParameterWatch()
    extra = ["strategy.num_layers=1"] if strategy == "partial_unfreeze" else []
    run(compose_qa(checkpoints["distilbert"], qa_data, f"strategy={strategy}", "trainer.num_train_epochs=1", *extra),
        output_dir=tmp_path / "run", callbacks=[watch])  # fmt: skip
    names = set(watch.before)
    expected = (
        names
        if strategy == "full"
        else {n for n in names if n.startswith(("qa_outputs.", "distilbert.transformer.layer.1."))}
    )
    assert watch.changed == expected


def test_long_contexts_are_cut_into_windows_that_know_where_the_answer_is(checkpoints):
    from transformers import AutoTokenizer

    from hf_transfer.tasks.question_answering import _answer_tokens

    tokenizer = AutoTokenizer.from_pretrained(checkpoints["bert"])
    context = "alice went to paris and bob went to london and carol went to rome and dave went to tokyo today"
    answer = {"text": ["tokyo"], "answer_start": [context.index("tokyo")]}
    encoded = encode_windows(tokenizer, ["where dave went"], [context], max_length=16, stride=4)
    assert len(encoded["input_ids"]) > 2 and set(encoded["overflow_to_sample_mapping"]) == {0}
    spans = []
    for i, offsets in enumerate(encoded["offset_mapping"]):
        start, end = _answer_tokens(answer, offsets, encoded.sequence_ids(i))
        spans.append((start, end))
        if (start, end) != (0, 0):
            assert context[offsets[start][0] : offsets[end][1]] == "tokyo"
    assert (0, 0) in spans and any(span != (0, 0) for span in spans)  # the early windows do not hold it


def test_the_best_span_is_chosen_across_windows():
    examples = [{"id": "x", "context": "alice went to paris and bob went to rome"}]
    # Two windows of the same context; offsets of context tokens only (None: question, specials).
    first = [None, None, (0, 5), (6, 10), (11, 13), (14, 19), None]  # alice went to paris
    second = [None, None, (24, 27), (28, 32), (33, 35), (36, 40), None]  # bob went to rome
    windows = {"example_id": ["x", "x"], "offset_mapping": [first, second]}
    start, end = np.full((2, 7), -5.0), np.full((2, 7), -5.0)
    start[0, 5], end[0, 5] = 2.0, 2.0  # "paris": 4
    start[1, 5], end[1, 5] = 3.0, 2.5  # "rome": 5.5, the best
    assert best_answers(examples, windows, start, end, n_best=5, max_answer_length=5) == {"x": "rome"}


def test_a_run_with_short_windows_and_its_reader_agree(checkpoints, qa_data, tmp_path):
    """Contexts longer than a window: training labels, evaluation and the reader all go through
    several overlapping windows per example."""
    cfg = compose_qa(checkpoints["bert"], qa_data, "task.max_length=14", "task.doc_stride=4",
                     "trainer.num_train_epochs=2", "strategy.learning_rate=3e-3")  # fmt: skip
    result = run(cfg, output_dir=tmp_path / "run")
    records = [json.loads(line) for line in (result.folder / "predictions_test.jsonl").read_text().splitlines()]
    rows = {r["id"]: r for r in (json.loads(line) for line in (qa_data / "test.jsonl").read_text().splitlines())}
    reader = load_predictor(str(result.folder))
    assert reader.settings["max_length"] == 14 and reader.settings["doc_stride"] == 4
    questions = [{"question": rows[r["id"]]["question"], "context": rows[r["id"]]["context"]} for r in records]
    assert [a["answer"] for a in reader.predict(questions, batch_size=4)] == [r["answer"] for r in records]
