"""A user's own file, first try: the blank task, the run named after the data, headline figures
that show a class the model never predicts, and messages that say where a value came from."""

from __future__ import annotations

import csv
import json
import random

import pytest
from conftest import NEGATIVE, POSITIVE

from hf_transfer.cli import main


def write_rows(path, rows):
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def tickets(n, spam_share, seed=0):
    rng = random.Random(seed)
    return [
        {"message": " ".join(rng.sample(POSITIVE if i % round(1 / spam_share) == 0 else NEGATIVE, 3)),
         "kind": "spam" if i % round(1 / spam_share) == 0 else "ham"}
        for i in range(n)
    ]  # fmt: skip


def own_data_run(checkpoint, source, tmp_path, *extra):
    return [f"model.source={checkpoint}", "task=text_classification", f"task.data.source={source}",
            "task.columns.text=message", "task.columns.label=kind", "trainer.use_cpu=true",
            f"hydra.run.dir={tmp_path / 'run'}", *extra]  # fmt: skip


def test_an_imbalanced_file_of_ones_own_trains_first_try_and_the_summary_shows_the_rare_class(
    checkpoints, tmp_path, monkeypatch
):
    source = write_rows(tmp_path / "support_tickets.csv", tickets(160, spam_share=0.125))
    monkeypatch.chdir(tmp_path)
    # One small step: the model still predicts one class only, as an untuned run on skewed data may.
    argv = own_data_run(checkpoints["bert"], source, tmp_path, "trainer.max_steps=1", "strategy.learning_rate=1e-6")
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["name"] == "support_tickets"  # named after the data, not after the default recipe
    assert metrics["best_metric"] == {"name": "f1_macro", "greater_is_better": True}
    assert set(metrics["test"]["per_class"]) == {"ham", "spam"}
    summary = (tmp_path / "run" / "train.log").read_text().split("run folder", 1)[1]  # the end-of-run summary
    assert "f1_macro" in summary and "minority class  'spam'" in summary
    never = [n for n, row in metrics["test"]["per_class"].items() if row["support"] and row["predicted"] == 0]
    assert never and f"never predicted on test: {never[0]}" in summary


def test_a_recipe_value_that_fails_on_ones_own_data_says_where_it_came_from(checkpoints, tmp_path, capsys):
    source = write_rows(tmp_path / "q.csv", tickets(40, spam_share=0.5))
    argv = [f"model.source={checkpoints['bert']}", f"task.data.source={source}", "task.columns.text=message",
            "task.columns.label=kind", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    with pytest.raises(SystemExit) as refused:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert refused.value.code == 2 and "\n" not in err
    assert "task.label_map comes from task=rotten_tomatoes, chosen by recipe bert_sentiment" in err
    assert "task=text_classification task.data.source=" in err
    assert not (tmp_path / "run").exists()


def test_drop_labels_null_means_none(checkpoints, tmp_path, monkeypatch):
    source = write_rows(tmp_path / "t.csv", tickets(60, spam_share=0.5))
    monkeypatch.chdir(tmp_path)
    assert (
        main(own_data_run(checkpoints["bert"], source, tmp_path, "trainer.max_steps=1", "task.drop_labels=null")) == 0
    )


def test_each_blank_task_trains_on_a_file_of_ones_own(checkpoints, tmp_path, monkeypatch):
    """README's one-command starts, one per task type, on files the test writes."""
    from test_question_answering import example as qa_example
    from test_token_classification import sentence as tagged_sentence
    from test_token_classification import write_conll

    rng = random.Random(0)
    write_conll(tmp_path / "tagged.conll", [tagged_sentence(rng) for _ in range(60)])
    (tmp_path / "squad_style.jsonl").write_text("".join(json.dumps(qa_example(rng, i)) + "\n" for i in range(60)))
    (tmp_path / "notes.txt").write_text("".join(f"note {i}: the movie was good\n" for i in range(80)))
    pairs = [{"premise": f"a {w}", "hypothesis": f"the {w}", "label": "same" if i % 2 else "other"}
             for i, w in enumerate(POSITIVE * 8)]  # fmt: skip
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    monkeypatch.chdir(tmp_path)
    runs = {
        "tagged": ["task=token_classification", "task.data.source=tagged.conll"],
        "squad_style": ["task=question_answering", "task.data.source=squad_style.jsonl"],
        "notes": ["task=causal_lm", f"model.source={checkpoints['gpt2']}", "task.data.source=notes.txt"],
        "pairs": [
            "task=text_classification",
            "task.data.source=pairs.jsonl",
            "task.columns.text=premise",
            "task.columns.text_pair=hypothesis",
        ],  # fmt: skip
    }
    for name, argv in runs.items():
        model = [] if any(a.startswith("model.source") for a in argv) else [f"model.source={checkpoints['bert']}"]
        assert main([*model, *argv, "trainer.max_steps=2", "trainer.use_cpu=true"]) == 0, name
        (folder,) = (tmp_path / "runs" / name).iterdir()  # named after the data
        assert json.loads((folder / "metrics.json").read_text())["task"] == argv[0].split("=")[1]


@pytest.mark.parametrize(
    "override, name",
    [
        ("task.data.source=data/tickets.csv", "tickets"),
        ("task.data.data_files=/data/reviews.tsv", "reviews"),
        ("task.data.data_files.train=/data/emotions_train.jsonl", "emotions_train"),
        ("task.data.data_files={train: /data/news.csv, test: /data/news_test.csv}", "news"),
        ("task.data.data_files=[/data/a.csv,/data/b.csv]", "a"),
    ],
)
def test_a_run_on_given_files_is_named_after_them(override, name):
    from hf_transfer.compose import _name_after_data, _parse

    assert _name_after_data(_parse([override])) == [f"++name={name}"]
    assert _name_after_data(_parse([override, "name=mine"])) == []
