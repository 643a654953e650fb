"""`hf-transfer validate`: every problem found before training, reported together, nothing written."""

from __future__ import annotations

import csv

from conftest import tiny_overrides

from hf_transfer.cli import main


def test_validate_reports_every_problem_together_and_writes_nothing(checkpoints, data_dir, tmp_path, capsys):
    folder = tmp_path / "run"
    argv = [*tiny_overrides(checkpoints["bert"], data_dir), "task.columns.text=reveiw", "strategy=lora",
            "strategy.target_modules=[qkv]", f"hydra.run.dir={folder}"]  # fmt: skip
    assert main(["validate", *argv]) == 2
    err = capsys.readouterr().err
    problems = [line for line in err.splitlines() if line.startswith("  - ")]
    assert len(problems) == 2
    assert "column 'reveiw' (key 'task.columns.text')" in problems[0] and "did you mean 'review'" in problems[0]
    assert "LoRA target modules ['qkv']" in problems[1] and "query" in problems[1]
    assert not folder.exists()


def test_validate_describes_good_data(checkpoints, data_dir, tmp_path, capsys):
    assert main(["validate", *tiny_overrides(checkpoints["bert"], data_dir), f"hydra.run.dir={tmp_path / 'r'}"]) == 0
    out = capsys.readouterr().out
    with open(data_dir / "train.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert f"rows: train {len(rows) - round(0.25 * len(rows))}" in out  # tiny_sentiment carves a quarter
    assert "labels (train): neg 36 (50.0%), pos 36 (50.0%)" in out
    assert "train length in tokens: median" in out and "longer than max_length" in out
    assert "no problems found" in out
    assert not (tmp_path / "r").exists()


def test_validate_finds_labels_that_train_never_has(checkpoints, tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    rows = [{"review": f"text {i}", "sentiment": "pos" if i % 2 else "neg"} for i in range(40)]
    for name, part in (("train", rows), ("validation", rows[:6] + [{"review": "odd", "sentiment": "mixed"}])):
        with (folder / f"{name}.csv").open("w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=["review", "sentiment"])
            writer.writeheader()
            writer.writerows(part)
    argv = [*tiny_overrides(checkpoints["bert"], folder), "task.labels=[neg,pos,mixed]"]
    assert main(["validate", *argv]) == 2
    assert "labels ['mixed'] occur in the validation split but never in train" in capsys.readouterr().err


def test_a_validate_mistake_is_one_line_before_torch_loads(tmp_path):
    """validate reaches torch and transformers (the assembly) only once the config is good."""
    import subprocess
    import sys

    from conftest import cli_env

    code = (
        "import sys\nfrom hf_transfer.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as end:\n"
        "    print(end.code, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, "validate", "strategy=ful"], cwd=tmp_path,
                          env=cli_env(tmp_path), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.stdout.split() == ["2", "False", "False"], done.stderr[-2000:]
    assert "unknown strategy 'ful'" in done.stderr and "Traceback" not in done.stderr
