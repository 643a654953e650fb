"""`hf-transfer predict`: from a run folder, with texts from each input form, as JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import cli_env, compose_tiny
from transformers import pipeline

from hf_transfer.cli import main
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
    table.write_text("id,review\n1,good\n")
    code, _, err = predict(capsys, str(run_folder), "-f", str(table))
    assert code == 2 and "column 'text' (--column) is not in" in err and "id, review" in err


def test_a_folder_without_a_model(capsys, tmp_path):
    code, _, err = predict(capsys, str(tmp_path), "hello")
    assert code == 2 and "holds no model" in err
