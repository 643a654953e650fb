"""Reading data files: text encodings, the format a file's name says against task.data.format,
files that cannot be used, and a property test over generated malformed files.

Everything loads through the task's own data path (`Task.load`, from a composed and validated
config) or `data.load_raw`; no model is needed, and none is loaded.
"""

from __future__ import annotations

import codecs
import contextlib
import copy
import csv
import gzip
import io
import itertools
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import TEST_RECIPES, sentiment_rows, write_csv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_transfer.compose import compose
from hf_transfer.config import validate
from hf_transfer.data import DatasetConfig, load_raw
from hf_transfer.encodings import guess_encoding
from hf_transfer.errors import UserError
from hf_transfer.run import run
from hf_transfer.tasks import task_class

LATIN = ["le café était bon", "très mauvais", "ça va", "déçu", "génial", "à éviter", "sûr", "où", "élan", "reçu"]


def broken_checkpoint(tmp_path: Path) -> Path:
    """A folder that looks like a checkpoint (config.json, weights) but cannot load: a run that
    reports a data mistake with it found the mistake before loading the model."""
    model = tmp_path / "broken-model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("not a config")
    (model / "model.safetensors").write_bytes(b"")
    return model


def tiny_config(tmp_path: Path, *extra: str):
    """The test recipe (text classification, columns review and sentiment) on a broken checkpoint."""
    model = broken_checkpoint(tmp_path)
    return compose(["recipe=tiny", f"model.source={model}", *extra], config_dir=str(TEST_RECIPES))


def load(cfg):
    run_cfg = validate(cfg)
    return task_class(run_cfg.task.type)(run_cfg.task, run_cfg.seed).load()


def latin_rows(n: int = 20) -> list[dict[str, str]]:
    return [{"review": LATIN[i % len(LATIN)] + f" {i}", "sentiment": "pos" if i % 2 else "neg"} for i in range(n)]


def write(path: Path, text: str, encoding: str) -> Path:
    data = text.encode(encoding)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def as_text(fmt: str, rows: list[dict[str, str]]) -> str:
    if fmt in ("csv", "tsv", "csv.gz"):
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["review", "sentiment"], delimiter="\t" if fmt == "tsv" else ",")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if fmt == "json":
        return json.dumps(rows, ensure_ascii=False)
    if fmt == "txt":
        return "".join(r["review"] + "\n" for r in rows)
    assert fmt == "conll"
    return "".join(" ".join(f"{w}\tO" for w in r["review"].split()).replace(" ", "\n") + "\n\n" for r in rows)


# -- A. encodings --------------------------------------------------------------------------
def test_a_latin1_csv_is_refused_in_one_line_naming_the_byte_and_the_encoding_to_set(capsys, tmp_path, monkeypatch):
    from hf_transfer.cli import main

    folder = tmp_path / "data"
    folder.mkdir()
    train = folder / "train.csv"
    write(train, as_text("csv", latin_rows()), "latin-1")
    model = broken_checkpoint(tmp_path)
    monkeypatch.chdir(tmp_path)
    handlers = list(logging.root.handlers)
    try:
        main([f"--config-dir={TEST_RECIPES}", "recipe=tiny", f"model.source={model}", f"task.data.source={folder}"])
    except SystemExit as exit_:
        code = exit_.code
    finally:  # Hydra's log handlers write to this test's captured stderr, closed after it
        for handler in set(logging.root.handlers) - set(handlers):
            logging.root.removeHandler(handler)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("hf-transfer")]
    # "review,sentiment\r\nle caf" (csv writes \r\n): é is byte 24 (from 0), on line 2.
    assert code == 2 and len(errors) == 1
    assert errors[0].startswith(
        f"hf-transfer: error: data file '{train}' (task.data.source) is not valid utf-8 text: byte 0xe9 at "
        "offset 24 (line 2); it looks like cp1252: set task.data.encoding=cp1252 (or the file's own encoding)"
    )
    assert "Traceback" not in err and not (tmp_path / "runs").exists()
    data = load(tiny_config(tmp_path, f"task.data.source={folder}", "task.data.encoding=cp1252"))
    texts = list(data.splits["train"]["text"]) + list(data.splits["validation"]["text"])
    assert sorted(texts) == sorted(r["review"] for r in latin_rows())


@pytest.mark.parametrize("fmt", ["csv", "tsv", "csv.gz", "jsonl", "json", "txt", "conll"])
def test_every_text_format_reads_the_configured_encoding(tmp_path, fmt):
    rows = latin_rows(6)
    path = write(tmp_path / f"train.{fmt}", as_text(fmt, rows), "latin-1")
    extra = {"format": "conll"} if fmt == "conll" else {}
    with pytest.raises(UserError) as refused:
        load_raw(DatasetConfig(source=str(path), **extra))
    message = str(refused.value)
    assert "\n" not in message and f"data file '{path}'" in message and "byte 0xe9 at offset" in message
    assert "task.data.encoding=cp1252" in message
    raw = load_raw(DatasetConfig(source=str(path), encoding="latin-1", **extra))["train"]
    if fmt == "txt":
        assert raw["text"] == [r["review"] + "\n" for r in rows]
    elif fmt == "conll":
        assert [" ".join(t) for t in raw["tokens"]] == [r["review"] for r in rows]
    else:
        assert raw["review"] == [r["review"] for r in rows]


def test_the_offset_and_line_are_the_files_own_beyond_the_first_chunk(tmp_path):
    """datasets reports positions inside a chunk; the message gives the byte's place in the file."""
    head = "".join(f"plain ascii review {i},pos\n" for i in range(60000))  # ~1.6 MB, past one read
    path = tmp_path / "train.csv"
    path.write_bytes(b"review,sentiment\n" + head.encode() + "un café,neg\n".encode("latin-1"))
    offset = len(b"review,sentiment\n" + head.encode() + b"un caf")
    with pytest.raises(UserError, match=rf"byte 0xe9 at offset {offset} \(line 60002\)"):
        load_raw(DatasetConfig(source=str(path)))


@pytest.mark.parametrize(
    ("text", "encoding", "guess"),
    [
        ("review\nle café était très “bon”\n", "cp1252", "cp1252"),
        ("review\ncafé\n", "latin-1", "cp1252"),
        ("review\ncafé au lait\n", "utf-16", "utf-16"),
        ("review\nЭто очень хороший фильм, правда\n", "cp1251", "cp1251"),
    ],
)
def test_the_guessed_encoding(tmp_path, text, encoding, guess):
    if encoding == "cp1251":  # a non-Latin script: charset_normalizer's guess, where it is installed
        pytest.importorskip("charset_normalizer")
    path = tmp_path / "train.csv"
    path.write_bytes(text.encode(encoding))
    with pytest.raises(UserError, match=f"it looks like {guess}: set task.data.encoding={guess} "):
        load_raw(DatasetConfig(source=str(path)))
    assert guess_encoding(text.encode(encoding), "utf-8") == guess


def test_an_unknown_encoding_is_refused_by_the_config(tmp_path):
    with pytest.raises(UserError, match=r"unknown text encoding 'utf9' \(task.data.encoding\)"):
        validate(tiny_config(tmp_path, "task.data.source=x.csv", "task.data.encoding=utf9"))


# -- B. the format a file's name says ------------------------------------------------------
def ner_rows(n: int) -> list[dict[str, list[str]]]:
    return [
        {"tokens": ["alice", "went", "to", f"paris{i}"], "tags": ["B-person", "O", "O", "B-place"]} for i in range(n)
    ]


def test_a_recipes_conll_format_does_not_apply_to_a_users_jsonl(tmp_path, caplog):
    """bert_ner's task (wnut16) says format: conll, for its own file; a .jsonl given instead is
    read as JSON lines (it used to be read as one CoNLL sentence: "train has 1 examples")."""
    path = tmp_path / "tweets.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ner_rows(20)))
    cfg = compose(["recipe=bert_ner", f"task.data.source={path}"])
    assert cfg.task.data.format == "conll"
    with caplog.at_level(logging.INFO, logger="hf_transfer.data"):
        data = load(cfg)
    assert sum(len(split) for split in data.splits.values()) == 20
    assert set(data.labels) == {"B-person", "B-place", "O"}
    assert f"reading '{path}' as json, as its name says (task.data.format=conll" in caplog.text


def test_a_recipes_conll_format_still_reads_a_txt_file(tmp_path):
    """.txt names no structured format (CoNLL data often ends in .txt): the recipe's format stands."""
    path = tmp_path / "tweets.txt"
    path.write_text("".join(" ".join(f"{t}\t{g}" for t, g in zip(r["tokens"], r["tags"])).replace(" ", "\n") + "\n\n"
                            for r in ner_rows(20)))  # fmt: skip
    data = load(compose(["recipe=bert_ner", f"task.data.source={path}"]))
    assert sum(len(split) for split in data.splits.values()) == 20


def test_a_tsv_format_reads_a_csv_named_file_with_tabs(tmp_path):
    """csv and tsv differ only by delimiter: an explicit format is a choice of delimiter."""
    path = tmp_path / "train.csv"
    path.write_text("review\tsentiment\ngood, really\tpos\n")
    assert load_raw(DatasetConfig(source=str(path), format="tsv"))["train"][0] == {"review": "good, really",
                                                                                  "sentiment": "pos"}  # fmt: skip


def test_a_trailing_delimiter_does_not_shift_the_columns(tmp_path):
    """pandas takes an unnamed first column for an index and shifts the rest: texts became labels."""
    path = tmp_path / "train.csv"
    path.write_text("review,sentiment\ngood film,pos,\nbad film,neg,\n")
    assert load_raw(DatasetConfig(source=str(path)))["train"]["review"] == ["good film", "bad film"]


# -- C. files that cannot be used ----------------------------------------------------------
@contextlib.contextmanager
def unreadable(path: Path):
    """`path` with no read permission, for this process: root reads any file, so as root the
    check runs with the effective user id of nobody (the real one stays root, to switch back)."""
    path.chmod(0)
    switched = False
    try:
        if os.geteuid() == 0:
            os.seteuid(65534)
            switched = True
        if os.access(path, os.R_OK, effective_ids=True):
            pytest.skip("cannot take read permission away here")
        yield
    finally:
        if switched:
            os.seteuid(0)
        path.chmod(0o644)


@pytest.fixture
def open_folder():
    """A folder every user may enter (pytest's tmp_path is root's alone, which would hide the
    permission check behind another)."""
    folder = Path(tempfile.mkdtemp(prefix="hf-transfer-perm-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_an_unreadable_data_file(tmp_path, open_folder):
    train = write_csv(open_folder / "train.csv", sentiment_rows(10, seed=1))
    train.chmod(0o644)
    cfg = tiny_config(tmp_path, "task.data.source=null", f"task.data.data_files.train={train}")
    run_cfg = validate(cfg)
    task = task_class(run_cfg.task.type)(run_cfg.task, run_cfg.seed)
    with unreadable(train), pytest.raises(UserError) as refused:
        task.load()
    assert str(refused.value) == (
        f"data file '{train}' (task.data.data_files.train) cannot be read: permission denied "
        "(give your user read permission: chmod u+r FILE)"
    )


@pytest.mark.parametrize("case", ["folder", "header only", "empty"])
def test_bad_data_files_end_in_one_line_before_the_model_loads(tmp_path, case):
    train = tmp_path / "train.csv"
    if case == "folder":
        train = tmp_path / "train"
        train.mkdir()
        message = f"data file '{train}' (task.data.data_files.train) is a folder: name a file in it, or give "
    elif case == "header only":
        train.write_text("review,sentiment\n")
        message = f"data file '{train}' (task.data.data_files.train) has no rows (a header only?): add rows"
    else:
        train.write_text("")
        message = f"data file '{train}' (task.data.data_files.train) is empty"
    cfg = tiny_config(tmp_path, "task.data.source=null", f"task.data.data_files.train={train}")
    with pytest.raises(UserError) as refused:
        run(cfg, output_dir=tmp_path / "run")  # the checkpoint is broken: loading it would fail
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)
    assert not (tmp_path / "run").exists()


# -- E. generated malformed files ----------------------------------------------------------
HEADERS = [
    ["review", "sentiment"],
    ["sentiment", "review"],
    ["review"],
    ["text", "label"],
    ["review", "sentiment", "x"],
    [],
]
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12) | st.sampled_from(
    LATIN + ["", " "]
)
cells = texts | st.sampled_from(["pos", "neg", "", '"', ",", "\t", "\n", "1", "-1"]) | st.none()
good_rows = st.tuples(texts, st.sampled_from(["pos", "neg"])).map(list)
odd_rows = st.lists(cells, max_size=4)


def sometimes(draw, one_in: int) -> bool:
    """True about once in `one_in` draws (hypothesis favours small numbers: 0 is the usual case)."""
    return draw(st.integers(0, one_in - 1)) == one_in - 1


@st.composite
def data_files(draw):
    """(file name, bytes, task.data.encoding) of a plausible data file, often a broken one:
    wrong or missing columns, odd cells, no header, another encoding, cut short, a stray byte."""
    fmt = draw(st.sampled_from(["csv", "tsv", "jsonl", "json", "csv.gz"]))
    header = draw(st.sampled_from(HEADERS)) if sometimes(draw, 4) else HEADERS[0]
    body = (
        []
        if sometimes(draw, 10)
        else draw(st.lists(odd_rows if sometimes(draw, 12) else good_rows, min_size=2, max_size=12))
    )
    if fmt in ("csv", "tsv", "csv.gz"):
        out = io.StringIO()
        writer = csv.writer(out, delimiter="\t" if fmt == "tsv" else ",")
        if not sometimes(draw, 6) or not body:
            writer.writerow(header)
        writer.writerows([["" if c is None else c for c in row] for row in body])
        text = out.getvalue()
    else:
        records = [dict(zip(header, row)) for row in body]
        text = ("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records) if fmt == "jsonl"
                else json.dumps(records, ensure_ascii=False))  # fmt: skip
    written_as = draw(st.sampled_from(["utf-8", "latin-1", "cp1252", "utf-16"])) if sometimes(draw, 2) else "utf-8"
    data = text.encode(written_as, errors="replace")
    mutation = draw(st.sampled_from(["truncate", "bad byte", "empty"])) if sometimes(draw, 3) else None
    if mutation == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif mutation == "bad byte":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + bytes([draw(st.integers(0x80, 0xFF))]) + data[at:]
    elif mutation == "empty":
        data = b""
    if fmt == "csv.gz":
        data = gzip.compress(data)
    encoding = draw(st.sampled_from([None, "latin-1", "utf-16", "cp1252"])) if sometimes(draw, 3) else written_as
    return f"train.{fmt}", data, encoding


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(tiny_config(tmp_path_factory.mktemp("composed"), "task.data.source=null",
                                              "task.data.data_files.train=placeholder.csv"))  # fmt: skip


counter = itertools.count()


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=data_files())
def test_malformed_files_load_or_end_in_one_line(composed, tmp_path, case):
    name, data, encoding = case
    folder = tmp_path / f"case{next(counter)}"  # a fresh file each time: no reader cache applies
    folder.mkdir()
    path = folder / name
    path.write_bytes(data)
    cfg = copy.deepcopy(composed)
    cfg["task"]["data"].update(data_files={"train": str(path)}, encoding=encoding)
    try:
        data_read = load(cfg)
    except UserError as err:
        message = str(err)
        assert message and "\n" not in message, message
        plain = gzip.decompress(data) if name.endswith(".gz") else data
        if _undecodable(plain, encoding) and plain:
            # Control bytes among them: refused as binary, where no encoding would help.
            assert "task.data.encoding" in message or "looks like a binary file" in message, message
    else:
        plain = gzip.decompress(data) if name.endswith(".gz") else data
        assert not _undecodable(plain, encoding), "undecodable bytes were read as text"
        assert len(data_read.splits["train"]) > 0
    assert [p.name for p in folder.iterdir()] == [name]  # nothing written next to the data


def _undecodable(data: bytes, encoding: str | None) -> bool:
    """Whether a stream decoder (what every reader uses) fails on `data`: also utf-16 without a
    byte-order mark, which bytes.decode would read as little-endian."""
    try:
        codecs.getincrementaldecoder(encoding or "utf-8-sig")().decode(data, final=True)
    except UnicodeError:
        return True
    return False


def test_a_tables_delimiter_decides_between_csv_and_tsv(tmp_path):
    """A recipe's `format: tsv` is for its own file: a user's comma-separated .csv is read as
    csv; a tab-separated file named .csv as tsv; a header with neither keeps the old rule."""
    from hf_transfer.data import format_for

    commas, tabs, single = tmp_path / "tweets.csv", tmp_path / "tabs.csv", tmp_path / "one.tsv"
    commas.write_text("text,label\nhello,pos\n")
    tabs.write_text("text\tlabel\nhello\tpos\n")
    single.write_text("text\nhello\n")
    assert format_for(commas, "tsv") == "csv" and format_for(commas, None) == "csv"
    assert format_for(tabs, None) == "tsv" and format_for(tabs, "csv") == "tsv"
    assert format_for(single, "csv") == "csv" and format_for(single, None) == "tsv"
    assert format_for(tmp_path / "x.jsonl", "conll") == "json"  # another kind of data: the name wins


def test_a_folders_files_are_told_by_the_split_word_in_their_names(tmp_path, caplog):
    """questions_train.csv, train-00000-of-00002.csv, imdb.dev.csv: the names users' files and
    the hub's exports have; a name with two split words, or none, and files that are not data
    or are hidden (an editor's lock file) are left out."""
    write_csv(tmp_path / "questions_train.csv", sentiment_rows(40, seed=1))
    write_csv(tmp_path / "train-00001-of-00002.csv", sentiment_rows(20, seed=2))
    write_csv(tmp_path / "imdb.dev.csv", sentiment_rows(12, seed=3))
    write_csv(tmp_path / "questions_test.csv", sentiment_rows(10, seed=4))
    write_csv(tmp_path / "train_test_notes.csv", sentiment_rows(7, seed=5))
    write_csv(tmp_path / "retrained.csv", sentiment_rows(9, seed=6))
    (tmp_path / ".~lock.questions_train.csv#").write_text("a lock file, not data")
    (tmp_path / "training_args.bin").write_bytes(b"\x00\x01")
    with caplog.at_level(logging.INFO):
        splits = load_raw(DatasetConfig(source=str(tmp_path)))
    assert {name: len(split) for name, split in splits.items()} == {"train": 60, "validation": 12, "test": 10}
    assert "train split read from 2 files together: questions_train.csv, train-00001-of-00002.csv" in caplog.text


def test_files_named_after_their_splits_come_first(tmp_path):
    """With train.csv there, train_backup.csv is not read into it."""
    write_csv(tmp_path / "train.csv", sentiment_rows(40, seed=1))
    write_csv(tmp_path / "train_backup.csv", sentiment_rows(30, seed=2))
    write_csv(tmp_path / "test.csv", sentiment_rows(10, seed=3))
    splits = load_raw(DatasetConfig(source=str(tmp_path)))
    assert {name: len(split) for name, split in splits.items()} == {"train": 40, "test": 10}
