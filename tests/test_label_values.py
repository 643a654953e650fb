"""Labels and columns read as the user meant them: spaces around a label name, names that differ
only in case, empty labels, and a header that names a column twice."""

from __future__ import annotations

import logging

import pytest
from conftest import compose_tiny, sentiment_rows, write_csv

from hf_transfer.config import validate
from hf_transfer.errors import UserError
from hf_transfer.tasks import task_class


def load(checkpoint, folder):
    cfg = validate(compose_tiny(checkpoint, folder))
    return task_class("text_classification")(cfg.task, cfg.seed).load()


def write(folder, rows):
    folder.mkdir()
    write_csv(folder / "train.csv", rows)
    write_csv(folder / "test.csv", sentiment_rows(20, 7))
    return folder


def test_spaces_around_a_label_are_not_another_class(checkpoints, tmp_path, caplog):
    rows = sentiment_rows(60, 1)
    for row in rows[::3]:
        row["sentiment"] = f" {row['sentiment']} "
    with caplog.at_level(logging.WARNING):
        data = load(checkpoints["bert"], write(tmp_path / "data", rows))
    assert data.labels == sorted({r["sentiment"].strip() for r in rows})
    assert "20 label values had spaces around them" in caplog.text and "read without them" in caplog.text


def test_labels_that_differ_only_in_case_are_named(checkpoints, tmp_path, caplog):
    rows = sentiment_rows(60, 1)
    rows[0]["sentiment"] = rows[0]["sentiment"].upper()
    with caplog.at_level(logging.WARNING):
        data = load(checkpoints["bert"], write(tmp_path / "data", rows))
    assert len(data.labels) == 3
    assert "differ only in case" in caplog.text and "task.label_map" in caplog.text


def test_an_empty_label_is_refused_with_its_row(checkpoints, tmp_path):
    rows = sentiment_rows(60, 1)
    rows[4]["sentiment"] = "  "
    with pytest.raises(UserError, match=r"1 row of the train split has no label in column 'sentiment'"):
        load(checkpoints["bert"], write(tmp_path / "data", rows))


def test_a_column_named_twice_is_refused(checkpoints, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    lines = ["review,sentiment,sentiment"] + [f"{r['review']},{r['sentiment']},other" for r in sentiment_rows(40, 1)]
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    write_csv(folder / "test.csv", sentiment_rows(20, 7))
    with pytest.raises(UserError, match=r"names the column 'sentiment' 2 times \(columns 2, 3\)"):
        load(checkpoints["bert"], folder)
