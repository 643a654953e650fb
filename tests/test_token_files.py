"""A user's own token-tagged files: the usual split names in a folder, CoNLL files with more
columns, a damaged line, a folder of CoNLL files with no format named."""

from __future__ import annotations

import json
import logging
import random

import pytest
from test_token_classification import compose_ner, sentence, write_conll

from hf_transfer.config import validate
from hf_transfer.errors import UserError
from hf_transfer.tasks import task_class


def load(checkpoint, folder, *extra):
    cfg = validate(compose_ner(checkpoint, folder, *extra))
    return task_class("token_classification")(cfg.task, cfg.seed).load()


def sentences(count, seed=0):
    rng = random.Random(seed)
    return [sentence(rng) for _ in range(count)]


def test_the_usual_split_names_are_read_and_said(checkpoints, tmp_path, caplog):
    write_conll(tmp_path / "train.conll", sentences(40))
    write_conll(tmp_path / "valid.conll", sentences(10, 1))
    write_conll(tmp_path / "dev.conll", sentences(5, 2))
    write_conll(tmp_path / "Test.conll", sentences(10, 3))
    with caplog.at_level(logging.INFO):
        data = load(checkpoints["bert"], tmp_path)
    assert len(data.splits["validation"]) == 15 and len(data.splits["test"]) == 10  # not carved from train
    assert "validation <- dev.conll, valid.conll" in caplog.text and "test <- Test.conll" in caplog.text


def four_columns(path, rows):
    """CoNLL-2003's layout: token, part of speech, chunk tag, entity tag."""
    with path.open("w") as stream:
        for tokens, tags in rows:
            for token, tag in zip(tokens, tags):
                chunk = "B-NP" if tag.startswith("B-") else "I-NP" if tag.startswith("I-") else "O"
                stream.write(f"{token}\tNN\t{chunk}\t{tag}\n")
            stream.write("\n")


def test_a_field_of_a_conll_file_is_chosen_by_its_number(checkpoints, tmp_path):
    four_columns(tmp_path / "train.conll", sentences(40))
    assert {"person", "place"} <= {t[2:] for t in load(checkpoints["bert"], tmp_path).labels if t != "O"}
    chunks = load(checkpoints["bert"], tmp_path, "task.columns.tags=3").labels
    assert sorted(chunks) == ["B-NP", "I-NP", "O"]


def test_a_line_that_lost_its_tab_is_named(checkpoints, tmp_path):
    four_columns(tmp_path / "train.conll", sentences(40))
    lines = (tmp_path / "train.conll").read_text().splitlines()
    damaged = next(i for i, line in enumerate(lines) if i > 5 and line)
    head, _, tag = lines[damaged].rpartition("\t")
    lines[damaged] = head + tag  # the tab before the entity tag lost: "O" + "B-place" -> "OB-place"
    (tmp_path / "train.conll").write_text("\n".join(lines) + "\n")
    expected = rf"train.conll, line {damaged + 1}: 3 fields, but line 1 has 4 .*lost or extra"
    with pytest.raises(UserError, match=expected):
        load(checkpoints["bert"], tmp_path)


def test_a_stray_tag_among_entity_tags_is_refused_not_scored_as_plain_tags(checkpoints, tmp_path):
    rows = sentences(60)
    rows[7][1][0] = "XO"
    with (tmp_path / "train.jsonl").open("w") as stream:
        stream.writelines(json.dumps({"tokens": t, "tags": g}) + "\n" for t, g in rows)
    with pytest.raises(UserError, match=r"tag 'XO' \(1 time; first on the word .*, word 1 of train sentence 8\)"):
        load(checkpoints["bert"], tmp_path)
    assert load(checkpoints["bert"], tmp_path, "task.tag_scheme=none").scheme == "none"  # the way out it names


def test_conll_files_read_as_text_get_the_format_to_name(checkpoints, tmp_path):
    write_conll(tmp_path / "train.txt", sentences(40))
    with pytest.raises(UserError, match=r"column 'tokens' .*look like CoNLL .*task.data.format=conll"):
        load(checkpoints["bert"], tmp_path, "task.data.format=null")  # as the blank task leaves it


def test_files_of_one_split_must_agree_and_tokens_may_hold_spaces(checkpoints, tmp_path):
    from hf_transfer.data import read_conll

    (tmp_path / "a.conll").write_text("Paris\u00a0Nord\tB-place\nis\tO\n")  # a non-breaking space in a token
    assert read_conll([tmp_path / "a.conll"])["tokens"] == [["Paris\u00a0Nord", "is"]]
    (tmp_path / "b.conll").write_text("x\tNN\tB-NP\tO\n")
    with pytest.raises(UserError, match=r"b.conll, line 1: 4 fields, but .*a.conll, line 1, has 2"):
        read_conll([tmp_path / "a.conll", tmp_path / "b.conll"])
