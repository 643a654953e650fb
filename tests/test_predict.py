"""`hf-transfer predict`: from a run folder, with texts from each input form, as JSON lines."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from conftest import cli_env, compose_tiny
from transformers import pipeline

from hf_transfer.cli import main
from hf_transfer.predict import parser
from hf_transfer.run import run

TEXTS = ["the movie was good", "awful plot", "a wonderful film and great acting", "it was boring"]


@pytest.fixture(scope="module")
def run_folder(checkpoints, data_dir, tmp_path_factory):
    cfg = compose_tiny(checkpoints["bert"], data_dir, "trainer.num_train_epochs=3", "strategy.learning_rate=3e-3")
    return run(cfg, output_dir=tmp_path_factory.mktemp("predict") / "run").folder


@pytest.fixture(scope="module")
def expected(run_folder):
    return pipeline("text-classification", model=str(run_folder))(TEXTS)


def predict(capsys, *argv):
    capsys.readouterr()  # drop what came before (a training run's logs)
    try:
        code = main(["predict", *argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def check(lines, expected, texts=TEXTS):
    assert [line["text"] for line in lines] == texts
    assert [line["label"] for line in lines] == [e["label"] for e in expected]
    assert [line["score"] for line in lines] == pytest.approx([e["score"] for e in expected], abs=1e-5)


def test_texts_as_arguments(capsys, run_folder, expected):
    code, lines, _ = predict(capsys, str(run_folder), *TEXTS)
    assert code == 0
    check(lines, expected)


def test_a_text_file_with_batches_and_an_output_file(capsys, run_folder, expected, tmp_path):
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(TEXTS * 5) + "\n\n")
    target = tmp_path / "out.jsonl"
    code, _, _ = predict(capsys, str(run_folder), "--file", str(source), "--batch-size", "3", "--output", str(target))
    assert code == 0
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    check(lines, expected * 5, TEXTS * 5)


def test_a_csv_column_and_a_jsonl_key(capsys, run_folder, expected, tmp_path):
    table = tmp_path / "reviews.csv"
    table.write_text("id,review\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(TEXTS)))
    check(predict(capsys, str(run_folder), "-f", str(table), "--column", "review")[1], expected)
    records = tmp_path / "reviews.jsonl"
    records.write_text("".join(json.dumps({"review": t, "id": i}) + "\n" for i, t in enumerate(TEXTS)))
    check(predict(capsys, str(run_folder), "-f", str(records), "--column", "review")[1], expected)


def test_standard_input(run_folder, expected, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "hf_transfer", "predict", str(run_folder)],
        input="\n".join(TEXTS) + "\n", capture_output=True, text=True, env=cli_env(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    check([json.loads(line) for line in done.stdout.splitlines()], expected)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--file", "nope.txt"], "input file 'nope.txt' (--file) does not exist"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_mistakes(capsys, run_folder, argv, message):
    code, _, err = predict(capsys, str(run_folder), *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_missing_column_is_named(capsys, run_folder, tmp_path):
    table = tmp_path / "reviews.csv"
    table.write_text("id,body\n1,good\n")
    # The default is the run's own text column (task.columns.text: review); the message says so.
    code, _, err = predict(capsys, str(run_folder), "-f", str(table))
    assert code == 2 and "column 'review' (the run's task.columns.text; or --column) is not in" in err
    assert "id, body" in err and len(err.strip().splitlines()) == 1
    code, _, err = predict(capsys, str(run_folder), "-f", str(table), "--column", "text")
    assert code == 2 and "column 'text' (--column) is not in" in err


def test_the_runs_own_columns_are_the_default(capsys, run_folder, expected, tmp_path):
    """The run was trained on column `review`: a file with that column needs no --column."""
    table = tmp_path / "reviews.csv"
    table.write_text("id,review\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(TEXTS)))
    check(predict(capsys, str(run_folder), "-f", str(table))[1], expected)
    records = tmp_path / "reviews.jsonl"
    records.write_text("".join(json.dumps({"review": t}) + "\n" for t in TEXTS))
    check(predict(capsys, str(run_folder), "-f", str(records))[1], expected)
    assert "task.columns.text" in parser().format_help()


def test_a_pair_runs_columns_are_the_default(capsys, checkpoints, data_dir, tmp_path):
    cfg = compose_tiny(checkpoints["bert"], data_dir, "task.data.source=null",
                       f"task.data.data_files={data_dir / 'pairs.csv'}", "task.columns.text=premise",
                       "task.columns.text_pair=hypothesis", "task.columns.label=label",
                       "trainer.num_train_epochs=1")  # fmt: skip
    folder = run(cfg, output_dir=tmp_path / "run").folder
    pairs = [("good film", "great film"), ("good film", "awful film")]
    table = tmp_path / "pairs.csv"
    table.write_text("hypothesis,premise\n" + "".join(f"{b},{a}\n" for a, b in pairs))
    code, lines, _ = predict(capsys, str(folder), "-f", str(table))
    assert code == 0 and [(line["text"], line["text_pair"]) for line in lines] == pairs
    alone = pipeline("text-classification", model=str(folder))([{"text": a, "text_pair": b} for a, b in pairs])
    assert [line["score"] for line in lines] == pytest.approx([p["score"] for p in alone], abs=1e-5)


def test_a_latin1_file_is_refused_with_the_encoding_to_give(capsys, run_folder, expected, tmp_path):
    texts = ["the café was good", "awful plot"]
    table = tmp_path / "reviews.csv"
    table.write_bytes(("review\n" + "\n".join(texts) + "\n").encode("latin-1"))
    code, lines, err = predict(capsys, str(run_folder), "-f", str(table))
    assert code == 2 and not lines and len(err.strip().splitlines()) == 1
    # "review\nthe caf" is 14 bytes: é is byte 14 (from 0), on line 2.
    assert f"input file '{table}' (--file) is not valid utf-8 text: byte 0xe9 at offset 14 (line 2)" in err
    assert "--encoding cp1252" in err
    code, lines, _ = predict(capsys, str(run_folder), "-f", str(table), "--encoding", "cp1252")
    assert code == 0 and [line["text"] for line in lines] == texts
    code, _, err = predict(capsys, str(run_folder), "-f", str(table), "--encoding", "klingon")
    assert code == 2 and "unknown text encoding 'klingon' (--encoding)" in err


def test_latin1_on_standard_input(capsys, monkeypatch, run_folder):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("good\ncafé\n".encode("latin-1"))))
    code, _, err = predict(capsys, str(run_folder))
    assert code == 2 and "standard input is not valid utf-8 text: byte 0xe9 at offset 8 (line 2)" in err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("good\ncafé\n".encode("latin-1"))))
    code, lines, _ = predict(capsys, str(run_folder), "--encoding", "latin-1")
    assert code == 0 and [line["text"] for line in lines] == ["good", "café"]


def test_empty_texts_are_predicted_with_a_warning_or_left_out(capsys, run_folder, tmp_path):
    source = tmp_path / "texts.txt"
    source.write_text("good film\n\n   \nawful plot\n\n\n")  # blank lines at the end are no inputs
    code, lines, err = predict(capsys, str(run_folder), "-f", str(source))
    assert code == 0 and [line["text"] for line in lines] == ["good film", "", "   ", "awful plot"]
    assert all(line["label"] in ("neg", "pos") for line in lines)  # one output per input line
    assert f"2 empty texts ({source}: line 2, line 3)" in err and "--skip-empty" in err
    code, lines, _ = predict(capsys, str(run_folder), "-f", str(source), "--skip-empty")
    assert code == 0 and [line["text"] for line in lines] == ["good film", "awful plot"]
    table = tmp_path / "reviews.csv"
    table.write_text('id,review\n1,good film\n2,""\n3\n4,awful plot\n')  # row 3 has no review cell
    code, lines, err = predict(capsys, str(run_folder), "-f", str(table))
    assert code == 0 and [line["text"] for line in lines] == ["good film", "", "", "awful plot"]
    assert "2 empty texts" in err and "line 3, line 4" in err
    code, lines, _ = predict(capsys, str(run_folder), "-f", str(table), "--skip-empty")
    assert [line["text"] for line in lines] == ["good film", "awful plot"]
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n")
    code, _, err = predict(capsys, str(run_folder), "-f", str(blank), "--skip-empty")
    assert code == 2 and f"input file '{blank}' (--file) holds no texts" in err


def test_texts_after_options(capsys, run_folder, expected):
    code, lines, _ = predict(capsys, str(run_folder), "--batch-size", "3", *TEXTS)
    assert code == 0
    check(lines, expected)
    code, lines, _ = predict(capsys, str(run_folder), TEXTS[0], "--batch-size", "2", *TEXTS[1:])
    assert code == 0
    check(lines, expected)


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_batch_size_below_one_is_refused(capsys, run_folder, value):
    code, lines, err = predict(capsys, str(run_folder), "--batch-size", value, "good")
    assert code == 2 and not lines and len(err.strip().splitlines()) == 1
    assert f"argument --batch-size: must be a whole number of at least 1, got '{value}'" in err


def test_a_run_folder_that_does_not_exist(capsys, run_folder, monkeypatch, tmp_path):
    (tmp_path / "runs" / "bert_sentiment").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    for model, message in [
        ("runs/bert_sentimnt", "run folder 'runs/bert_sentimnt' does not exist (did you mean 'bert_sentiment'?)"),
        ("./nope", "run folder './nope' does not exist"),
        ("elsewhere/runs/x", "run folder 'elsewhere/runs/x' does not exist (nor does its folder 'elsewhere/runs')"),
    ]:
        code, _, err = predict(capsys, model, "good")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    # ORG/NAME with no folder ORG here is a hub id: asked of the hub (offline in the tests).
    code, _, err = predict(capsys, "someorg/somemodel", "good")
    assert code == 2 and "could not load 'someorg/somemodel'" in err and "does not exist" not in err


def test_input_files_that_cannot_be_read(capsys, run_folder, tmp_path):
    code, _, err = predict(capsys, str(run_folder), "-f", str(tmp_path))
    assert code == 2 and "(--file) is a folder" in err
    records = tmp_path / "texts.jsonl"
    records.write_text(json.dumps({"review": 5}) + "\n")
    code, _, err = predict(capsys, str(run_folder), "-f", str(records))
    assert code == 2 and f"{records}, line 1: key 'text' holds 5, not a text" in err


def test_a_folder_without_a_model(capsys, tmp_path):
    code, _, err = predict(capsys, str(tmp_path), "hello")
    assert code == 2 and "holds no model" in err


@pytest.mark.parametrize(("removed", "message"), [(["model.safetensors"], "holds no model weights (model.safetensors)"),
                                                  (["tokenizer.json", "tokenizer_config.json", "vocab.txt"],
                                                   "holds no tokenizer (tokenizer.json)")])  # fmt: skip
def test_a_run_folder_missing_its_weights_or_tokenizer(capsys, run_folder, tmp_path, removed, message):
    import shutil

    damaged = tmp_path / "run"
    shutil.copytree(run_folder, damaged)
    for name in removed:
        (damaged / name).unlink(missing_ok=True)
    code, _, err = predict(capsys, str(damaged), "hello")
    assert code == 2 and err.strip() == f"hf-transfer: error: '{damaged}' {message}; the file was removed: train " \
        "the run again, or give another run folder"


def test_an_empty_file_is_named(capsys, run_folder, tmp_path):
    empty = tmp_path / "texts.txt"
    empty.write_text("")
    code, _, err = predict(capsys, str(run_folder), "--file", str(empty))
    assert code == 2 and f"input file '{empty}' (--file) holds no texts" in err


# -- the other tasks ----------------------------------------------------------------------
def tiny_run(checkpoint, folder, tmp_path, *extra):
    cfg = compose_tiny(checkpoint, folder, "trainer.num_train_epochs=1", *extra)
    return run(cfg, output_dir=tmp_path / "run").folder


def test_token_classification_gives_entities(capsys, checkpoints, tmp_path):
    import random

    from test_token_classification import sentence, write_conll

    rng = random.Random(0)
    write_conll(tmp_path / "train.conll", [sentence(rng) for _ in range(40)])
    folder = tiny_run(checkpoints["bert"], tmp_path, tmp_path, "task=tiny_ner", "trainer.num_train_epochs=3",
                      "strategy.learning_rate=1e-2")  # fmt: skip
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("alice went to paris\nbob saw a movie\n")
    code, lines, _ = predict(capsys, str(folder), "--file", str(sentences))
    assert code == 0 and [line["text"] for line in lines] == ["alice went to paris", "bob saw a movie"]
    tagger = pipeline("token-classification", model=str(folder), aggregation_strategy="simple")
    for line in lines:
        expected = tagger(line["text"])
        assert [(e["entity_group"], e["start"], e["end"]) for e in line["entities"]] == [
            (e["entity_group"], e["start"], e["end"]) for e in expected
        ]


def test_question_answering_from_a_file_and_from_arguments(capsys, checkpoints, tmp_path):
    import random

    from conftest import PLACES
    from test_question_answering import example

    rng = random.Random(0)
    rows = [example(rng, i) for i in range(40)]
    tests = [example(rng, f"t{i}") for i in range(20)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tests))
    folder = tiny_run(checkpoints["distilbert"], tmp_path, tmp_path, "task=tiny_qa", "trainer.num_train_epochs=3",
                      "strategy.learning_rate=3e-3")  # fmt: skip
    questions = tmp_path / "questions.jsonl"
    asked = [{"question": r["question"], "context": r["context"]} for r in tests]
    questions.write_text("".join(json.dumps(q) + "\n" for q in asked))
    code, from_file, _ = predict(capsys, str(folder), "--file", str(questions), "--batch-size", "3")
    assert code == 0 and [{k: line[k] for k in ("question", "context")} for line in from_file] == asked
    # predict answers as the run itself did, question by question.
    records = [json.loads(line) for line in (folder / "predictions_test.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [r["id"] for r in tests]
    assert [line["answer"] for line in from_file] == [r["answer"] for r in records]
    # The trained reader answers with a place of the context (an untrained one gives arbitrary
    # spans); where it names the right place, it gives the gold span.
    places = [line for line in from_file if line["answer"] in PLACES and line["answer"] in line["context"].split()]
    assert len(places) >= 15
    right = [(line, r) for line, r in zip(from_file, tests) if line["answer"] == r["answers"]["text"][0]]
    assert len(right) >= 5
    for line, row in right:
        start = row["answers"]["answer_start"][0]
        assert (line["start"], line["end"]) == (start, start + len(line["answer"]))
    code, from_args, _ = predict(capsys, str(folder), tests[0]["question"], "--context", tests[0]["context"])
    assert code == 0 and from_args[0]["answer"] == from_file[0]["answer"]
    assert (from_args[0]["start"], from_args[0]["end"]) == (from_file[0]["start"], from_file[0]["end"])
    code, _, err = predict(capsys, str(folder), "where did alice go")
    assert code == 2 and "needs a context" in err


def test_generation(capsys, checkpoints, tmp_path):
    (tmp_path / "train.txt").write_text("the movie was really good\n" * 40)
    folder = tiny_run(checkpoints["gpt2"], tmp_path, tmp_path, "task=tiny_text")
    # Prompts of different lengths in one batch: each continues as it does alone.
    prompts = ["the movie", "it was really good and the"]
    code, lines, _ = predict(capsys, str(folder), *prompts, "--max-new-tokens", "5", "--batch-size", "2")
    assert code == 0 and [line["text"] for line in lines] == prompts
    generate = pipeline("text-generation", model=str(folder))
    for line in lines:
        alone = generate(line["text"], max_new_tokens=5, do_sample=False, return_full_text=False)
        assert line["generated_text"] == alone[0]["generated_text"]
    # A prompt longer than the model's positions continues from its last tokens.
    long_prompt = " ".join(["the movie was really good"] * 40)
    code, lines, err = predict(capsys, str(folder), long_prompt, "--max-new-tokens", "5")
    assert code == 0 and lines[0]["generated_text"] and "continued from their last" in err
    import torch

    positions = generate.model.config.n_positions
    ids = generate.tokenizer(long_prompt)["input_ids"][-(positions - 5):]  # room for the 5 new tokens
    with torch.no_grad():
        out = generate.model.generate(torch.tensor([ids]), max_new_tokens=5, do_sample=False,
                                      pad_token_id=generate.tokenizer.eos_token_id)  # fmt: skip
    assert lines[0]["generated_text"] == generate.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)


def test_an_empty_prompt_is_refused_or_left_out(capsys, checkpoints, tmp_path):
    (tmp_path / "train.txt").write_text("the movie was really good\n" * 40)
    folder = tiny_run(checkpoints["gpt2"], tmp_path, tmp_path, "task=tiny_text")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the movie\n\nit was\n")
    code, _, err = predict(capsys, str(folder), "--file", str(prompts), "--max-new-tokens", "2")
    assert code == 2 and "input 2: an empty prompt" in err and "Traceback" not in err
    code, lines, _ = predict(capsys, str(folder), "--file", str(prompts), "--max-new-tokens", "2", "--skip-empty")
    assert code == 0 and [line["text"] for line in lines] == ["the movie", "it was"]


# -- texts longer than the model takes, pairs, and inputs that are no texts -----------------------
LONG = " ".join(["the movie was good and the plot was great"] * 40)  # ~400 tokens; the tiny models take 64


def test_a_text_longer_than_the_model_is_scored_as_training_read_it(capsys, run_folder, tmp_path):
    """At the run's max_length (metrics.json), the first tokens, as in training; in a file, the
    texts after it are predicted too."""
    recorded = json.loads((run_folder / "metrics.json").read_text())["max_length"]
    source = tmp_path / "texts.txt"
    source.write_text("\n".join([*TEXTS[:2], LONG, *TEXTS[2:]]) + "\n")
    code, lines, err = predict(capsys, str(run_folder), "--file", str(source))
    assert code == 0 and [line["text"] for line in lines] == [*TEXTS[:2], LONG, *TEXTS[2:]]
    assert "1 of 5 texts were longer than the model takes" in err and f"first {recorded} tokens" in err
    cut = pipeline("text-classification", model=str(run_folder))(LONG, truncation=True, max_length=recorded)[0]
    assert lines[2]["label"] == cut["label"] and lines[2]["score"] == pytest.approx(cut["score"], abs=1e-5)


def test_long_texts_keep_their_entities_and_tags_past_the_limit(capsys, checkpoints, tmp_path):
    import random

    from test_token_classification import pos_sentence, sentence, write_conll

    rng = random.Random(0)
    (tmp_path / "ner").mkdir()
    write_conll(tmp_path / "ner" / "train.conll", [sentence(rng) for _ in range(40)])
    folder = tiny_run(checkpoints["bert"], tmp_path / "ner", tmp_path / "a", "task=tiny_ner",
                      "trainer.num_train_epochs=3", "strategy.learning_rate=1e-2")  # fmt: skip
    text = " ".join(["alice went to paris"] * 60)  # 240 words, far past 64 positions
    code, lines, err = predict(capsys, str(folder), text)
    assert code == 0 and "read in overlapping windows" in err
    entities = lines[0]["entities"]
    assert entities and max(e["end"] for e in entities) > len(text) - 30  # found near the end too

    (tmp_path / "pos").mkdir()
    write_conll(tmp_path / "pos" / "train.conll", [pos_sentence(rng) for _ in range(60)])
    folder = tiny_run(checkpoints["bert"], tmp_path / "pos", tmp_path / "b", "task=tiny_ner", "task.tag_scheme=none")
    words = " ".join(["alice saw the dog"] * 50).split()
    code, lines, err = predict(capsys, str(folder), " ".join(words), "bob ran")
    assert code == 0 and "tagged in windows" in err
    assert lines[0]["tokens"] == words and len(lines[0]["tags"]) == len(words) and None not in lines[0]["tags"]
    assert len(lines[1]["tags"]) == 2


@pytest.fixture(scope="module")
def pair_folder(checkpoints, data_dir, tmp_path_factory):
    cfg = compose_tiny(checkpoints["bert"], data_dir, "task.data.source=null",
                       f"task.data.data_files={data_dir / 'pairs.csv'}", "task.columns.text=premise",
                       "task.columns.text_pair=hypothesis", "task.columns.label=label",
                       "trainer.num_train_epochs=1")  # fmt: skip
    return run(cfg, output_dir=tmp_path_factory.mktemp("pairs") / "run").folder


def test_a_pair_model_reads_two_arguments_a_pair(capsys, pair_folder):
    code, lines, _ = predict(capsys, str(pair_folder), "good film", "great film", "good film", "awful film")
    assert code == 0 and [(line["text"], line["text_pair"]) for line in lines] == [
        ("good film", "great film"), ("good film", "awful film")]  # fmt: skip
    alone = pipeline("text-classification", model=str(pair_folder))({"text": "good film", "text_pair": "awful film"})
    assert lines[1]["score"] == pytest.approx(alone[0]["score"] if isinstance(alone, list) else alone["score"],
                                              abs=1e-5)  # fmt: skip
    code, lines, err = predict(capsys, str(pair_folder), "good film", "great film", "one more")
    assert code == 2 and not lines and "pairs of texts" in err and "got 3 arguments" in err


def test_a_file_and_text_arguments_together_are_refused(capsys, run_folder, tmp_path):
    code, lines, err = predict(capsys, str(run_folder), "--file", str(tmp_path / "missing.txt"), "a text")
    assert code == 2 and not lines and "not both" in err and "Traceback" not in err


@pytest.mark.parametrize("encoding", [None, "latin-1"])
def test_a_binary_file_is_refused_whatever_the_encoding(capsys, run_folder, tmp_path, encoding):
    import random

    data = bytes(random.Random(0).randrange(256) for _ in range(3000))
    source = tmp_path / "model.bin.txt"
    source.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" + data)
    options = ["--encoding", encoding] if encoding else []
    code, lines, err = predict(capsys, str(run_folder), "--file", str(source), *options)
    assert code == 2 and not lines and "looks like a binary file" in err and "latin-1" not in err


def test_a_program_is_refused_as_binary_not_taken_for_utf16(capsys, run_folder, tmp_path):
    """An executable has zero bytes everywhere, as utf-16 text has in every other byte."""
    source = tmp_path / "program.txt"
    source.write_bytes(b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + bytes(range(256)) * 4 + b"\x00" * 400)
    code, lines, err = predict(capsys, str(run_folder), "--file", str(source))
    assert code == 2 and not lines and "looks like a binary file" in err


def test_utf16_without_a_mark_is_named_not_read_as_zeros(capsys, run_folder, tmp_path):
    source = tmp_path / "wide.txt"
    source.write_bytes("the movie was good\nawful plot\n".encode("utf-16-le"))
    code, lines, err = predict(capsys, str(run_folder), "--file", str(source))
    assert code == 2 and not lines and "utf-16-le" in err
    code, lines, _ = predict(capsys, str(run_folder), "--file", str(source), "--encoding", "utf-16-le")
    assert code == 0 and [line["text"] for line in lines] == ["the movie was good", "awful plot"]
