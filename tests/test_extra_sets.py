"""Extra test sets (task.extra_test): read like the task's data, labels mapped by name, scored
after training like the test split, reported in metrics.json, the predictions files and the
model card; every mistake refused in one line before any weights load."""

from __future__ import annotations

import csv
import json
import random
import shutil

import pytest
import yaml
from conftest import NEGATIVE, PEOPLE, PLACES, POSITIVE, WORDS, compose_tiny, sentence, tiny_overrides

from hf_transfer.cli import main
from hf_transfer.config import validate
from hf_transfer.errors import UserError
from hf_transfer.extra_sets import ExtraTestConfig, NumericLabels, label_names_of


def tweets(n, seed=7):
    """Another domain's file: its own column names, labels -1 / 1, and neutral rows (0)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        polarity = (1, -1, 0)[i % 3]
        words = POSITIVE if polarity == 1 else NEGATIVE if polarity == -1 else ["the"]
        rows.append({"tweet": sentence(rng, words) + " lol", "polarity": polarity})
    return rows


def write_csv(path, rows):
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def exit_code(argv):
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def problems(err):
    """The problem lines `validate` printed (a logging error from another test's handler aside)."""
    return [line for line in err.splitlines() if line.startswith(("  - ", "hf-transfer: error:"))]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def tweets_overrides(path, *extra):
    return [f"task.extra_test.tweets.source={path}", "task.extra_test.tweets.columns.text=tweet",
            "task.extra_test.tweets.columns.label=polarity", "task.extra_test.tweets.label_map={-1: neg, 1: pos}",
            "task.extra_test.tweets.drop_labels=[0]", *extra]  # fmt: skip


def test_a_run_scores_each_extra_set_like_the_test_split(checkpoints, data_dir, tmp_path):
    from hf_transfer.run import run

    source = write_csv(tmp_path / "tweets.csv", tweets(30))
    # A second set in the task's own columns and label names, as JSON lines.
    reviews = tmp_path / "more_reviews.jsonl"
    rng = random.Random(11)
    rows = [{"review": sentence(rng, POSITIVE if i % 2 else NEGATIVE), "sentiment": "pos" if i % 2 else "neg"}
            for i in range(12)]  # fmt: skip
    reviews.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = compose_tiny(
        checkpoints["bert"], data_dir, *tweets_overrides(source), f"task.extra_test.reviews.source={reviews}"
    )
    result = run(cfg, output_dir=tmp_path / "run")
    folder = result.folder
    metrics = json.loads((folder / "metrics.json").read_text())

    assert list(metrics["extra_test"]) == ["tweets", "reviews"]
    assert set(metrics["examples"]) == {"train", "validation", "test"}  # the run's own splits only
    for name, expected in (("tweets", [r for r in tweets(30) if r["polarity"] != 0]), ("reviews", rows)):
        scores = metrics["extra_test"][name]
        assert set(scores) == set(metrics["test"])  # the same figures as the test split
        records = read_jsonl(folder / f"predictions_{name}.jsonl")
        # Rows in file order, neutral ones dropped, labels mapped to the task's names.
        text = "tweet" if name == "tweets" else "review"
        assert [r["text"] for r in records] == [e[text] for e in expected]
        truth = [{1: "pos", -1: "neg"}[e["polarity"]] if name == "tweets" else e["sentiment"] for e in expected]
        assert [r["label"] for r in records] == truth
        accuracy = sum(r["prediction"] == r["label"] for r in records) / len(records)
        assert scores["accuracy"] == pytest.approx(accuracy) and scores["num_examples"] == len(records)
        for label in ("neg", "pos"):
            assert scores["per_class"][label]["support"] == truth.count(label)

    # The model card: front matter the hub reads, with the scores of the test split and each set.
    card = (folder / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(card.split("---\n")[1])
    (entry,) = front["model-index"]
    by_set = {r["dataset"]["name"]: r for r in entry["results"]}
    test_set = "tiny_sentiment (test split)"  # named after the task's data
    assert set(by_set) == {test_set, "tweets", "reviews"}
    for name, results in ((test_set, metrics["test"]), ("tweets", metrics["extra_test"]["tweets"])):
        found = {m["name"]: m for m in by_set[name]["metrics"]}
        assert found["accuracy"]["value"] == results["accuracy"] and found["accuracy"]["type"] == "accuracy"
        assert found["f1_macro"] == {"type": "f1", "value": results["f1_macro"], "name": "f1_macro",
                                     "args": {"average": "macro"}}  # fmt: skip
        assert "loss" not in found and "num_examples" not in found
        assert by_set[name]["task"]["type"] == "text-classification"
    assert "base_model" not in front and "datasets" not in front  # a local checkpoint, local files
    table = card.split("## Results", 1)[1].split("##", 1)[0]
    assert "| metric | validation | test | tweets | reviews |" in table
    assert f"| accuracy | {metrics['validation']['accuracy']:.4f} | {metrics['test']['accuracy']:.4f} | " in table
    assert f"- tweets: `{source}`" in card


def test_labels_that_do_not_map_are_refused_before_any_weights_load(checkpoints, data_dir, tmp_path, capsys):
    source = write_csv(tmp_path / "tweets.csv", tweets(12))
    # Weights no loader could read: a refusal that names the labels came before any load.
    broken = tmp_path / "broken"
    shutil.copytree(checkpoints["bert"], broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    argv = tiny_overrides(broken, data_dir, f"task.extra_test.tweets.source={source}",
                          "task.extra_test.tweets.columns.text=tweet", "task.extra_test.tweets.columns.label=polarity",
                          f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    for command in (["validate"], []):
        assert exit_code([*command, *argv]) == 2
        (problem,) = problems(capsys.readouterr().err)
        assert "labels of the 'tweets' extra test set do not map to the task's labels by name" in problem
        assert "the set's labels: -1, 0, 1; the task's labels: neg, pos" in problem
        assert "task.extra_test.tweets.label_map (e.g. {-1: neg})" in problem
    assert not (tmp_path / "run").exists()
    # A label_map that names a label the task does not have is refused the same way.
    bad_map = ["task.extra_test.tweets.label_map={-1: neg, 1: positive, 0: neg}"]
    assert exit_code(["validate", *argv, *bad_map]) == 2
    (problem,) = problems(capsys.readouterr().err)
    assert "through task.extra_test.tweets.label_map: 1 -> positive (4 rows);" in problem


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task.extra_test.test.source=x.csv"], "extra test set name 'test' (key 'task.extra_test.test') is taken"),
        (["task.extra_test.Validation.source=x.csv"], "taken by the run's own validation split"),
        (["task.extra_test.a.source=x.csv", "task.extra_test.A.source=y.csv"], "differ only in case"),
        (["task.extra_test.tw.sorce=x.csv"], "unknown key 'task.extra_test.tw.sorce' (did you mean 'source'?)"),
        (["task.extra_test.tw.source=x.csv", "task.extra_test.tw.columns.txt=t"],
         "unknown key 'task.extra_test.tw.columns.txt' (did you mean 'text'?); valid keys under"),
        (["task.extra_test.tw.split=test"], "key 'task.extra_test.tw' needs a source"),
        (["task.extra_test.tw.source=x.csv", "task.extra_test.tw.numeric_labels.below=neg"],
         "'task.extra_test.tw.numeric_labels' needs below and above"),
        (["task.extra_test.tw.source=x.csv", "task.extra_test.tw.max_samples=0"], "must be at least 1"),
    ],
)  # fmt: skip
def test_config_mistakes_are_one_line_naming_the_key(checkpoints, data_dir, overrides, message):
    with pytest.raises(UserError) as caught:
        validate(compose_tiny(checkpoints["bert"], data_dir, *overrides))
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["my set", "../up", "a.b", "x" * 65, "-dash"])
def test_a_set_name_must_be_safe_as_a_file_name(name):
    from hf_transfer.config import build_task_config

    task = {"type": "text_classification", "data": {"source": "x.csv"}, "extra_test": {name: {"source": "y.csv"}}}
    with pytest.raises(UserError, match="must be letters, digits, '_' or '-'"):
        build_task_config(task)


def test_data_mistakes_name_the_key_file_or_column(checkpoints, data_dir, tmp_path, capsys):
    source = write_csv(tmp_path / "tweets.csv", tweets(12))
    base = tiny_overrides(checkpoints["bert"], data_dir, f"hydra.run.dir={tmp_path / 'run'}")
    cases = [
        ([f"task.extra_test.tw.source={tmp_path / 'nowhere.csv'}"],
         f"data file '{tmp_path / 'nowhere.csv'}' (task.extra_test.tw.source) does not exist"),
        ([f"task.extra_test.tw.source={source}"],
         "column 'review' (key 'task.extra_test.tw.columns.text, else task.columns.text') is not in the 'tw' extra "
         "test split; its columns are: tweet, polarity"),
        ([f"task.extra_test.tw.source={source}", "task.extra_test.tw.columns.text=tweet",
          "task.extra_test.tw.columns.label=label"], "column 'label' (key 'task.extra_test.tw.columns.label')"),
        ([f"task.extra_test.tw.data_files={tmp_path}"], "(task.extra_test.tw.data_files) is a folder"),
        ([f"task.extra_test.tw.source={source}", "task.extra_test.tw.split=validation"],
         "has no split 'validation' (task.extra_test.tw.split)"),
    ]  # fmt: skip
    (tmp_path / "empty.csv").write_text("")
    cases.append(([f"task.extra_test.tw.source={tmp_path / 'empty.csv'}"], "(task.extra_test.tw.source) is empty"))
    for overrides, message in cases:
        assert exit_code(["validate", *base, *overrides]) == 2, overrides
        (problem,) = problems(capsys.readouterr().err)
        assert message in problem, (message, problem)


def test_validate_describes_the_extra_sets_and_warns_of_texts_train_saw(checkpoints, data_dir, tmp_path, capsys):
    with open(data_dir / "train.csv", encoding="utf-8") as stream:
        train = list(csv.DictReader(stream))
    # The whole train file: a quarter of it is carved off as validation, the rest trains.
    copied = write_csv(tmp_path / "copy.csv", train)
    argv = tiny_overrides(checkpoints["bert"], data_dir, f"task.extra_test.copy.source={copied}",
                          f"hydra.run.dir={tmp_path / 'r'}")  # fmt: skip
    assert main(["validate", *argv]) == 0
    out = capsys.readouterr().out
    assert f"rows: train 72, validation 24, test 32, copy {len(train)}" in out
    assert "labels (copy): neg 48 (50.0%), pos 48 (50.0%)" in out
    assert "of the 96 texts of the 'copy' extra test set also occur in train" in out


def test_numeric_labels_take_the_sign_and_drop_the_neutral_rows():
    cfg = ExtraTestConfig(source="x", numeric_labels=NumericLabels(below="negative", above="positive"))
    values = [-0.9, 0.0, 2.5, "0", "-3.7", None, 0.05]
    rows, names = label_names_of(values, "hutto", cfg, ["negative", "positive"], None)
    assert rows == [0, 2, 4, 6] and names == ["negative", "positive", "negative", "positive"]
    shifted = ExtraTestConfig(source="x", numeric_labels=NumericLabels(below="negative", above="positive", cut=3))
    assert label_names_of([1, 3, 5], "stars", shifted, ["negative", "positive"], None) == (
        [0, 2],
        ["negative", "positive"],
    )
    with pytest.raises(UserError, match="numeric_labels needs numbers in the label column; the set has 'great'"):
        label_names_of([1.0, "great"], "hutto", cfg, ["negative", "positive"], None)


def test_without_a_label_map_values_map_by_name_then_through_the_tasks_own_map():
    cfg = ExtraTestConfig(source="x")
    task_map = {"rotten": "negative", "fresh": "positive"}
    rows, names = label_names_of(["fresh", "negative", "rotten"], "s", cfg, ["negative", "positive"], task_map)
    assert names == ["positive", "negative", "negative"]
    with pytest.raises(UserError, match=r"plot \(1 rows\); the set's labels: fresh, plot"):
        label_names_of(["fresh", "plot"], "s", cfg, ["negative", "positive"], task_map)
    dropped = ExtraTestConfig(source="x", drop_labels=["plot"])
    assert label_names_of(["fresh", "plot"], "s", dropped, ["negative", "positive"], task_map) == ([0], ["positive"])


def test_an_unquoted_tsv_keeps_a_text_that_starts_with_a_quote(tmp_path):
    from hf_transfer.data import DatasetConfig, load_source

    path = tmp_path / "ratings.txt"  # .txt: the format is given
    path.write_bytes(
        b'id\tsentiment\ttext\r\n1\t-0.9\t"no picture\r\n2\t2.1\twell worth it, "really"\r\n3\t0.4\tok\r\n'
    )
    quoted = load_source(DatasetConfig(source=str(path), format="tsv"))["train"]
    plain = load_source(DatasetConfig(source=str(path), format="tsv", quoted=False))["train"]
    assert len(quoted) < 3  # the quote swallows the lines after it
    assert plain["text"] == ['"no picture', 'well worth it, "really"', "ok"] and plain["sentiment"] == [-0.9, 2.1, 0.4]


def tagged(rng, person="B-person", place="B-place"):
    tokens, tags = [], []
    for _ in range(rng.randint(3, 6)):
        roll = rng.random()
        word, tag = (
            (rng.choice(PEOPLE), person)
            if roll < 0.3
            else (rng.choice(PLACES), place)
            if roll < 0.5
            else (rng.choice(WORDS), "O")
        )
        tokens.append(word)
        tags.append(tag)
    return tokens, tags


def write_conll(path, sentences):
    path.write_text("".join("".join(f"{t}\t{g}\n" for t, g in zip(*s)) + "\n" for s in sentences), encoding="utf-8")
    return path


def test_a_tagged_extra_set_is_mapped_by_tag_name_and_scored_like_the_test_split(checkpoints, tmp_path):
    from hf_transfer.run import run

    rng = random.Random(5)
    folder = tmp_path / "ner"
    folder.mkdir()
    write_conll(folder / "train.conll", [tagged(rng) for _ in range(60)])
    write_conll(folder / "test.conll", [tagged(rng) for _ in range(12)])
    # Another corpus's tag names for the same entities.
    other = [tagged(rng, "B-PER", "B-LOC") for _ in range(10)]
    source = write_conll(tmp_path / "other.conll", other)
    mapping = "task.extra_test.other.label_map={B-PER: B-person, B-LOC: B-place, O: O}"
    cfg = compose_tiny(checkpoints["bert"], folder, "task=tiny_ner", f"task.extra_test.other.source={source}", mapping)
    metrics = run(cfg, output_dir=tmp_path / "run").metrics
    scores = metrics["extra_test"]["other"]
    assert set(scores) == set(metrics["test"]) and scores["num_examples"] == 10
    records = read_jsonl(tmp_path / "run" / "predictions_other.jsonl")
    renamed = {"B-PER": "B-person", "B-LOC": "B-place", "O": "O"}
    assert [r["tags"] for r in records] == [[renamed[t] for t in tags] for _, tags in other]
    words = [(p, t) for r in records for p, t in zip(r["predicted"], r["tags"])]
    assert scores["accuracy"] == pytest.approx(sum(p == t for p, t in words) / len(words))

    unmapped = compose_tiny(checkpoints["bert"], folder, "task=tiny_ner", f"task.extra_test.other.source={source}")
    with pytest.raises(UserError, match=r"B-LOC \(\d+ tags\), B-PER \(\d+ tags\); the set's labels: B-LOC, B-PER, O; "
                                        r"the task's labels: O, B-person, B-place"):  # fmt: skip
        validate_and_load(unmapped)


def validate_and_load(cfg):
    from hf_transfer.tasks import task_class

    run_cfg = validate(cfg)
    return task_class(run_cfg.task.type)(run_cfg.task, run_cfg.seed).load()
