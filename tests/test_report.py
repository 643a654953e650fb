"""`hf-transfer report`: one table of the runs under a folder, each with its own headline metric."""

from __future__ import annotations

import csv
import json
import shutil

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
