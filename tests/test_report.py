"""`hf-transfer report`: one table of the runs under a folder, each with its own headline metric."""

from __future__ import annotations

import base64
import csv
import html
import json
import shutil

import pytest
from conftest import compose_tiny

from hf_transfer import run_folder
from hf_transfer.cli import main
from hf_transfer.run import run


def test_report_shows_each_runs_recorded_headline_and_the_unfinished_ones(checkpoints, data_dir, tmp_path, capsys):
    root = tmp_path / "runs"
    full = run(compose_tiny(checkpoints["bert"], data_dir, "trainer.max_steps=2", "task.metric_for_best_model=accuracy"),
               output_dir=root / "full").folder  # fmt: skip
    macro = run(compose_tiny(checkpoints["bert"], data_dir, "strategy=head_only", "trainer.max_steps=2",
                             "task.metric_for_best_model=loss"), output_dir=root / "head").folder  # fmt: skip
    unfinished = run(compose_tiny(checkpoints["bert"], data_dir, "strategy=lora", "trainer.max_steps=2"),
                     output_dir=root / "lora").folder  # fmt: skip
    (unfinished / run_folder.COMPLETE).unlink()
    for name in ("metrics.json", "config.json"):
        (unfinished / name).unlink()  # as a run killed after its first checkpoint looks

    assert main(["report", str(root), "--csv", str(tmp_path / "runs.csv")]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]] for line in table[2:]}
    assert set(rows) == {"full", "head", "lora"}
    for name, folder, metric in (("full", full, "accuracy"), ("head", macro, "loss")):
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["best_metric"]["name"] == metric
        assert rows[name][5] == metric
        assert rows[name][7] == f"{metrics['test'][metric]:.4f}"
        assert rows[name][3] == f"{metrics['trainable_parameters']:,}"
    step = run_folder.checkpoint_step(run_folder.last_complete_checkpoint(unfinished))
    assert rows["lora"][1] == "lora" and rows["lora"][5] == f"incomplete: step {step}"

    with open(tmp_path / "runs.csv", newline="") as stream:
        written = {r["run"]: r for r in csv.DictReader(stream)}
    full_metrics = json.loads((full / "metrics.json").read_text())
    assert int(written["full"]["trainable"]) == full_metrics["trainable_parameters"]  # a number, no commas
    assert float(written["full"]["test"]) == full_metrics["test"]["accuracy"]


def test_hydras_records_and_older_run_folders_read_as_they_should(checkpoints, data_dir, tmp_path, capsys):
    from conftest import tiny_overrides

    root = tmp_path / "runs"
    assert (
        main([*tiny_overrides(checkpoints["bert"], data_dir, "trainer.max_steps=1"), f"hydra.run.dir={root / 'cli'}"])
        == 0
    )
    old = root / "old"  # a run folder of an earlier version: no COMPLETE, no lock, no best_metric
    shutil.copytree(root / "cli", old)
    for name in (run_folder.COMPLETE, run_folder.LOCK):
        (old / name).unlink()
    metrics = json.loads((old / "metrics.json").read_text())
    del metrics["best_metric"]
    (old / "metrics.json").write_text(json.dumps(metrics))
    capsys.readouterr()
    assert main(["report", str(root)]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")][2:]
    assert sorted(line.split("|")[1].strip() for line in table) == ["cli", "old"]  # no cli/.hydra row
    metric = {line.split("|")[1].strip(): line.split("|")[6].strip() for line in table}
    assert metric == {"cli": "f1_macro", "old": "accuracy"}  # recorded; else the usual headline it has


# -- report.md and report.html -------------------------------------------------------------
# (strategy, pretrained, budget, train examples, seed, test accuracy, train s, out-of-domain accuracy)
CELLS = [
    ("full", True, "4/class", 8, 42, 0.70, 1.0, None),
    ("full", True, "4/class", 8, 43, 0.74, 1.2, None),
    ("full", True, "all", 72, 42, 0.90, 10.0, 0.81),
    ("full", True, "all", 72, 43, 0.92, 10.0, 0.83),
    ("lora", True, "4/class", 8, 42, 0.80, 0.5, None),
    ("lora", True, "all", 72, 42, 0.905, 3.0, 0.724),
    ("full", False, "4/class", 8, 42, 0.55, 1.0, None),
    ("full", False, "all", 72, 42, 0.75, 9.0, 0.60),
]


@pytest.fixture(scope="module")
def template(checkpoints, data_dir, tmp_path_factory):
    """One real tiny run, for the comparison folders below to copy into their cells."""
    root = tmp_path_factory.mktemp("template")
    return run(compose_tiny(checkpoints["bert"], data_dir, "trainer.max_steps=1",
                            "task.metric_for_best_model=accuracy"), output_dir=root / "template").folder  # fmt: skip


@pytest.fixture(scope="module")
def comparison(template, tmp_path_factory):
    """A comparison folder: the template run, copied into cells whose figures are set here."""
    root = tmp_path_factory.mktemp("comparison")
    for strategy, pretrained, budget, examples, seed, test, seconds, outside in CELLS:
        cell = (
            root / "cmp" / strategy / ("pretrained" if pretrained else "random") / budget.replace("/", "") / str(seed)
        )
        shutil.copytree(template, cell, ignore=shutil.ignore_patterns("checkpoints"))
        metrics = json.loads((cell / "metrics.json").read_text())
        metrics.update(
            strategy=strategy, pretrained=pretrained, train_budget=budget, seed=seed, train_runtime_s=seconds
        )
        metrics["examples"]["train"] = examples
        metrics["test"]["accuracy"] = test
        if outside is not None:  # as the out-of-domain sets are recorded: extra_test.NAME.METRIC
            metrics["extra_test"] = {"shifted": {"accuracy": outside, "f1_macro": 0.5}}
        (cell / "metrics.json").write_text(json.dumps(metrics))
    return root / "cmp"


def _task_rows(markdown_text: str) -> dict[tuple[str, str, str], list[str]]:
    rows = {}
    for line in markdown_text.split("## Every run")[0].splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[1] in ("pretrained", "random"):
            rows[tuple(cells[:3])] = cells
    return rows


def test_the_report_holds_the_runs_numbers_and_findings(comparison, tmp_path, capsys):
    import statistics

    out = tmp_path / "report"
    assert main(["report", str(comparison), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    rows = _task_rows(text)
    assert len(rows) == 6  # cells: the seeds of one setting are one row
    full_all = rows[("full", "pretrained", "all")]
    assert full_all[3:9] == ["72", "2", f"{statistics.fmean([0.90, 0.92]):.4f}", f"{statistics.stdev([0.90, 0.92]):.4f}",
                             f"{statistics.fmean([0.81, 0.83]):.4f}", "10.0"]  # fmt: skip
    assert rows[("lora", "pretrained", "4/class")][5:8] == ["0.8000", "-", "-"]  # one seed: no spread

    # The findings, computed here from CELLS: best = full pretrained all (0.91); within one point
    # (0.01) and fastest: lora all (0.905 in 3 s); the random start's best with all the data is
    # 0.75, first matched with 8 examples (lora 4/class 0.80); out of domain full keeps 0.82 / 0.91.
    best, best_sd = statistics.fmean([0.90, 0.92]), statistics.stdev([0.90, 0.92])
    expected = [
        f"The best test accuracy, {best:.4f} (mean of 2 seeds, ± {best_sd:.4f}), came from full from the "
        "pretrained start with all 72 training examples.",
        "The fastest to get within one point (0.01) of it was lora from the pretrained start with all 72 training "
        f"examples: 0.9050 in 3.0 s of training, against 10.0 s for the best ({10 / 3:.1f}x the time).",
        "From random weights the best test accuracy with all the data (72 examples) was 0.7500 (full); the "
        f"pretrained start matched it with 8 labelled examples (lora, budget 4/class: 0.8000), {72 / 8:.1f}x fewer.",
        "Out of domain on shifted (pretrained start, the most training data), of its in-domain test accuracy: "
        f"full kept {0.82 / best:.0%} ({best:.4f} -> 0.8200); lora kept {0.724 / 0.905:.0%} (0.9050 -> 0.7240).",
    ]
    for sentence in expected:
        assert f"- {sentence}" in text
    html_text = (out / "report.html").read_text()
    for sentence in expected:
        assert html.escape(sentence) in html_text
    assert expected[0] in capsys.readouterr().out  # and in the terminal

    # The figures: valid PNG files, decodable, linked from report.md and inside report.html.
    import matplotlib.image

    pictures = sorted((out / "report_files").glob("*.png"))
    assert {p.name.split("-", 1)[1] for p in pictures} == {"learning_curve.png", "metric_vs_time.png",
                                                           "metric_vs_parameters.png", "out_of_domain.png"}  # fmt: skip
    for picture in pictures:
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = matplotlib.image.imread(picture).shape
        assert width > 300 and height > 200
        assert f"](report_files/{picture.name})" in text
    sources = _no_external_requests(html_text)
    assert len(sources) == len(pictures)
    embedded = {base64.b64decode(s.removeprefix("data:image/png;base64,")) for s in sources}
    assert embedded == {p.read_bytes() for p in pictures}


def _no_external_requests(page: str) -> list[str]:
    """Every src/href of the page (all must be data: URIs or in-page anchors), checked; the srcs."""
    from html.parser import HTMLParser

    found: list[tuple[str, str, str]] = []

    class Links(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.extend((tag, name, value or "") for name, value in attrs if name in ("src", "href", "srcset"))
            assert tag not in ("script", "link", "iframe", "object", "embed"), tag

    Links().feed(page)
    for tag, name, value in found:
        assert value.startswith(("data:", "#")), (tag, name, value[:80])
    assert "@import" not in page and "url(" not in page and "http://" not in page and "https://" not in page
    return [value for tag, name, value in found if tag == "img"]


def test_without_matplotlib_the_report_has_its_tables_and_findings_and_says_how_to_get_plots(
    comparison, tmp_path, monkeypatch, capsys
):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    out = tmp_path / "plain"
    assert main(["report", str(comparison), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "pip install 'hf-transfer-learning[report]'" in text and "![" not in text
    assert len(_task_rows(text)) == 6 and "- The best test accuracy" in text
    assert not (out / "report_files").exists()
    assert _no_external_requests((out / "report.html").read_text()) == []
    assert "no plots" in capsys.readouterr().out


def test_runs_are_one_cell_only_when_all_but_the_seed_is_the_same(tmp_path):
    """Runs of 2 and 10 epochs are two rows, labelled by what differs; seeds of one setting are one."""
    import yaml

    from hf_transfer.report import settings_of
    from hf_transfer.report_summary import findings, summarise

    def run_folder(name, epochs, seed, accuracy):
        folder = tmp_path / name
        folder.mkdir()
        config = {"seed": seed, "name": "tiny", "trainer": {"num_train_epochs": epochs, "disable_tqdm": seed > 1},
                  "strategy": {"name": "full"}}  # fmt: skip
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        metrics = {"name": "tiny", "task": "text_classification", "strategy": "full", "seed": seed,
                   "best_metric": {"name": "accuracy", "greater_is_better": True}, "test": {"accuracy": accuracy},
                   "examples": {"train": 100}, "train_runtime_s": float(epochs), "train_samples_per_second": 1.0,
                   "trainable_parameters": 1}  # fmt: skip
        return {**metrics, "_settings": settings_of(folder)}

    runs = [run_folder("a", 2, 1, 0.6), run_folder("b", 2, 2, 0.62), run_folder("c", 10, 1, 0.9)]
    (task,) = summarise(runs)
    assert [(c.variant, c.test) for c in task.cells] == [
        ("trainer.num_train_epochs=10", [0.9]), ("trainer.num_train_epochs=2", [0.6, 0.62])]  # fmt: skip
    assert findings(task)[0].startswith("The best test accuracy, 0.9000, came from full (trainer.num_train_epochs=10)")
    (task,) = summarise(runs[:2])  # the same setting, two seeds (disable_tqdm is no setting)
    assert [(c.variant, len(c.test)) for c in task.cells] == [("", 2)]


def test_no_report_is_written_into_an_unfinished_run(checkpoints, data_dir, tmp_path, capsys):
    from hf_transfer import run_folder
    from hf_transfer.cli import main

    folder = run(compose_tiny(checkpoints["bert"], data_dir, "trainer.max_steps=2"), tmp_path / "run").folder
    (folder / run_folder.COMPLETE).unlink()  # as if it had been killed
    with pytest.raises(SystemExit) as refused:
        main(["report", str(folder)])
    assert refused.value.code == 2 and "unfinished run" in capsys.readouterr().err
    assert not (folder / "report.md").exists()
    assert main(["report", str(folder), "--out", str(tmp_path / "elsewhere")]) == 0


# -- runs of two models ----------------------------------------------------------------------
# (model, pretrained, budget, train examples, seed, test accuracy, train s): `full` throughout,
# as `compare --models minilm,mpnet --strategies full` makes them; mpnet has no random start.
MODEL_CELLS = [
    ("minilm", True, "4/class", 8, 42, 0.70, 1.0),
    ("minilm", True, "4/class", 8, 43, 0.72, 1.0),
    ("minilm", True, "all", 72, 42, 0.925, 8.0),
    ("minilm", False, "all", 72, 42, 0.66, 9.0),
    ("mpnet", True, "4/class", 8, 42, 0.78, 3.0),
    ("mpnet", True, "4/class", 8, 43, 0.80, 3.0),
    ("mpnet", True, "all", 72, 42, 0.93, 20.0),
]


@pytest.fixture(scope="module")
def two_models(template, tmp_path_factory):
    """A comparison folder of cells of two models (OUT/MODEL/STRATEGY/START/BUDGET/seedN), the
    runs named as a run is by default, ${task.name}-${model.name}."""
    root = tmp_path_factory.mktemp("two_models") / "cmp"
    for model, pretrained, budget, examples, seed, test, seconds in MODEL_CELLS:
        start = "pretrained" if pretrained else "random"
        cell = root / model / "full" / start / budget.replace("/", "") / f"seed{seed}"
        shutil.copytree(template, cell, ignore=shutil.ignore_patterns("checkpoints"))
        metrics = json.loads((cell / "metrics.json").read_text())
        metrics.update(name=f"tiny_sentiment-{model}", model_name=model, model=f"org/{model}-checkpoint",
                       strategy="full", pretrained=pretrained, train_budget=budget, seed=seed,
                       train_runtime_s=seconds)  # fmt: skip
        metrics["examples"]["train"] = examples
        metrics["test"]["accuracy"] = test
        metrics.pop("baseline", None)  # (no sentence on the tiny run's trivial baseline: not a figure set here)
        (cell / "metrics.json").write_text(json.dumps(metrics))
    return root


def test_runs_of_two_models_are_one_task_with_a_row_a_line_and_a_sentence_naming_each_model(
    two_models, tmp_path, monkeypatch
):
    import statistics

    from hf_transfer import report_plots

    curves = []  # each learning curve's legend: (label, marker) of each line
    draw = report_plots._png

    def legend_of(figure, axes):
        if axes.get_title().endswith("learning curve"):
            handles, labels = axes.get_legend_handles_labels()
            curves.append([(label, bars[0].get_marker()) for bars, label in zip(handles, labels)])
        return draw(figure, axes)

    monkeypatch.setattr(report_plots, "_png", legend_of)
    out = tmp_path / "report"
    assert main(["report", str(two_models), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    task_part = text.split("## Every run")[0]

    # One section (the runs' names less their -MODEL ending), a model column, a row per model's setting.
    assert [line for line in task_part.splitlines() if line.startswith("## ")] == [
        "## tiny_sentiment (text_classification)"
    ]
    assert "| model | strategy | start | budget | train examples | seeds | test accuracy | ± (sd) |" in task_part
    rows = [[c.strip() for c in line.strip("|").split("|")][:7] for line in task_part.splitlines()
            if line.startswith(("| minilm ", "| mpnet "))]  # fmt: skip
    mean = statistics.fmean
    assert rows == [
        ["minilm", "full", "pretrained", "4/class", "8", "2", f"{mean([0.70, 0.72]):.4f}"],
        ["minilm", "full", "pretrained", "all", "72", "1", "0.9250"],
        ["minilm", "full", "random", "all", "72", "1", "0.6600"],
        ["mpnet", "full", "pretrained", "4/class", "8", "2", f"{mean([0.78, 0.80]):.4f}"],
        ["mpnet", "full", "pretrained", "all", "72", "1", "0.9300"],
    ]

    # The sentences, computed here from MODEL_CELLS, each naming the model. mpnet has no random
    # start of its own: its labels are counted against minilm's.
    random_best = "From minilm's random weights the best test accuracy with all the data (72 examples) was 0.6600"
    expected = [
        ("The best test accuracy, 0.9300, came from full on mpnet from the pretrained start with all 72 training "
         "examples."),
        ("The fastest to get within one point (0.01) of it was full on minilm from the pretrained start with all 72 "
         "training examples: 0.9250 in 8.0 s of training, against 20.0 s for the best (2.5x the time)."),
        (f"{random_best} (full); minilm's pretrained start matched it with 8 labelled examples (full, budget 4/class: "
         f"{mean([0.70, 0.72]):.4f}), 9.0x fewer."),
        (f"{random_best} (full); mpnet's pretrained start matched it with 8 labelled examples (full, budget 4/class: "
         f"{mean([0.78, 0.80]):.4f}), 9.0x fewer."),
    ]  # fmt: skip
    for sentence in expected:
        assert f"- {sentence}" in task_part
        assert html.escape(sentence) in (out / "report.html").read_text()

    # The learning curve: a line per model and start, the strategy's colour, the model's marker.
    assert curves == [[("full, minilm (pretrained)", "o"), ("full, minilm (random)", "o"),
                       ("full, mpnet (pretrained)", "^")]]  # fmt: skip
    assert len(list((out / "report_files").glob("*learning_curve.png"))) == 1


def test_a_runs_model_is_its_model_name_else_what_older_runs_recorded():
    from hf_transfer.report_summary import findings, model_of, summarise

    assert model_of({"model_name": "mpnet", "model": "org/all-mpnet-base-v2"}) == "mpnet"
    assert model_of({"model": "org/all-mpnet-base-v2", "_settings": {"model.name": '"mpnet"'}}) == "mpnet"
    assert model_of({"model": "org/all-mpnet-base-v2", "_settings": {"model.name": "null"}}) == "all-mpnet-base-v2"
    assert model_of({"model": "/checkpoints/tiny_bert/"}) == "tiny_bert"

    def metrics(name, model, accuracy):
        return {"name": name, "model": f"org/{model}", "task": "text_classification", "strategy": "full", "seed": 1,
                "best_metric": {"name": "accuracy", "greater_is_better": True}, "test": {"accuracy": accuracy},
                "examples": {"train": 100}, "train_runtime_s": 1.0, "train_samples_per_second": 1.0,
                "trainable_parameters": 1}  # fmt: skip

    # One model: titled, shown and said as before there were models.
    (task,) = summarise([metrics("rotten_tomatoes-minilm", "minilm", 0.8)])
    assert (task.title, task.several_models) == ("rotten_tomatoes-minilm (text_classification)", False)
    assert findings(task)[0] == (
        "The best test accuracy, 0.8000, came from full from the pretrained start with all 100 training examples."
    )
    # Two (older runs, no model_name): one task, named after the task; the cells named after the model.
    two = [metrics("rotten_tomatoes-minilm", "minilm", 0.8), metrics("rotten_tomatoes-mpnet", "mpnet", 0.9)]
    (task,) = summarise(two)
    assert (task.title, task.models) == ("rotten_tomatoes (text_classification)", ["minilm", "mpnet"])
    assert findings(task)[0].startswith("The best test accuracy, 0.9000, came from full on mpnet from the pretrained")
    # A recipe's name (bert_sentiment) has no -MODEL ending: the title is the name.
    (task,) = summarise([metrics("bert_sentiment", "minilm", 0.8), metrics("bert_sentiment", "mpnet", 0.9)])
    assert task.title == "bert_sentiment (text_classification)" and task.several_models
