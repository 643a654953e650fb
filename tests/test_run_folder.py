"""What a run leaves behind: the best model at the root, figures, a model card, logs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import cli_env, compose_tiny
from transformers import AutoModelForSequenceClassification, TrainerCallback

from hf_transfer.run import run


def test_run_folder_contents_and_figures(checkpoints, data_dir, tmp_path):
    cfg = compose_tiny(checkpoints["bert"], data_dir, "strategy=partial_unfreeze", "strategy.num_layers=1",
                       "trainer.num_train_epochs=3", "trainer.save_total_limit=1", "trainer.report_to=tensorboard")  # fmt: skip
    result = run(cfg, output_dir=tmp_path / "run")
    folder = result.folder
    metrics = json.loads((folder / "metrics.json").read_text())
    for key in ("train_runtime_s", "train_samples_per_second", "wall_time_s", "trainable_parameters",
                "total_parameters", "peak_memory_mb", "peak_memory_kind"):  # fmt: skip
        assert key in metrics, key
    assert metrics["wall_time_s"] >= metrics["train_runtime_s"] > 0
    assert isinstance(metrics["peak_memory_mb"], float) and metrics["peak_memory_kind"] == "cpu resident memory rise"
    assert set(metrics["validation"]["per_class"]) == {"neg", "pos"}
    assert {"accuracy", "f1_macro", "loss"} <= set(metrics["test"])

    # The best checkpoint by validation accuracy is what the root holds.
    best = folder / metrics["best_checkpoint"]
    root_state = AutoModelForSequenceClassification.from_pretrained(folder).state_dict()
    best_state = AutoModelForSequenceClassification.from_pretrained(best).state_dict()
    assert all(torch.equal(root_state[k], best_state[k]) for k in root_state)
    kept = sorted(p.name for p in (folder / "checkpoints").iterdir())
    assert 1 <= len(kept) <= 2 and best.name in kept  # the limit, plus the best one

    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-classification\n")
    assert "partial_unfreeze" in card and "Trainable parameters" in card and "| accuracy |" in card
    assert 'pipeline("text-classification"' in card
    assert "name: partial_unfreeze" in (folder / "config.yaml").read_text()
    assert list((folder / "tensorboard").glob("events.out.tfevents.*"))


class HoldMemory(TrainerCallback):
    """Holds a tensor of `mib` MiB, written through, from the start of training to its end."""

    def __init__(self, mib):
        self.mib, self.block = mib, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.block = torch.ones(self.mib * 2**18)  # float32: 4 bytes each

    def on_train_end(self, args, state, control, **kwargs):
        self.block = None


PEAK_IN_A_FRESH_PROCESS = """
import json, sys
sys.path.insert(0, {tests!r})
from conftest import compose_tiny
from test_run_folder import HoldMemory
from hf_transfer.run import run

result = run(compose_tiny({checkpoint!r}, {data!r}, "trainer.num_train_epochs=1"), output_dir={folder!r},
             callbacks=[HoldMemory({mib})] if {mib} else [])
recorded = json.loads((result.folder / "metrics.json").read_text())["peak_memory_mb"]
print(json.dumps([recorded, result.metrics["peak_memory_mb"]]))
"""


def test_peak_memory_counts_what_training_held(checkpoints, data_dir, tmp_path):
    """The recorded peak is the run's: a run that holds 256 MiB during training reports them.
    Each run has a process of its own: memory an earlier run freed would be reused unseen."""
    from conftest import ROOT

    peaks = {}
    for name, mib in (("plain", 0), ("holding", 256)):
        code = PEAK_IN_A_FRESH_PROCESS.format(tests=str(ROOT / "tests"), checkpoint=str(checkpoints["bert"]),
                                              data=str(data_dir), folder=str(tmp_path / name), mib=mib)  # fmt: skip
        done = subprocess.run([sys.executable, "-c", code], env=cli_env(tmp_path), capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        recorded, returned = json.loads(done.stdout.strip().splitlines()[-1])
        assert recorded == returned
        peaks[name] = recorded
    # A tiny model: tens of MiB at most, not the process's whole resident memory (hundreds of MiB
    # with torch loaded); holding 256 MiB at once: at least that, plus no more than such a run needs.
    assert 0 <= peaks["plain"] < 128
    assert 256 * 0.98 <= peaks["holding"] < 256 + 128


def test_the_root_holds_the_best_model_not_the_last(checkpoints, data_dir, tmp_path):
    """'Best' made the first epoch on purpose (the highest validation loss, which training
    lowers): the root must hold that checkpoint, not the weights of the last step."""
    cfg = compose_tiny(checkpoints["bert"], data_dir, "trainer.num_train_epochs=3", "trainer.save_total_limit=2",
                       "trainer.metric_for_best_model=loss", "trainer.greater_is_better=true")  # fmt: skip
    result = run(cfg, output_dir=tmp_path / "run")
    kept = sorted((result.folder / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[1]))
    best, last = result.folder / result.metrics["best_checkpoint"], kept[-1]
    assert best != last and best in kept
    root = AutoModelForSequenceClassification.from_pretrained(result.folder).state_dict()
    for other, same in ((best, True), (last, False)):
        state = AutoModelForSequenceClassification.from_pretrained(other).state_dict()
        assert all(torch.equal(root[k], state[k]) for k in root) is same, other.name


def test_early_stopping_ends_training(checkpoints, data_dir, tmp_path):
    cfg = compose_tiny(checkpoints["bert"], data_dir, "trainer.num_train_epochs=30", "early_stopping.patience=1",
                       "early_stopping.threshold=0.5", "strategy.learning_rate=1e-6")  # fmt: skip
    result = run(cfg, output_dir=tmp_path / "run")
    assert result.metrics["epochs"] < 30


def test_same_seed_same_result(checkpoints, data_dir, tmp_path):
    first = run(compose_tiny(checkpoints["bert"], data_dir, "trainer.num_train_epochs=1"), output_dir=tmp_path / "a")
    second = run(compose_tiny(checkpoints["bert"], data_dir, "trainer.num_train_epochs=1"), output_dir=tmp_path / "b")
    third = run(
        compose_tiny(checkpoints["bert"], data_dir, "trainer.num_train_epochs=1", "seed=7"), output_dir=tmp_path / "c"
    )
    assert first.metrics["train_loss"] == second.metrics["train_loss"]
    assert first.metrics["train_loss"] != third.metrics["train_loss"]


def test_peak_memory_sees_a_short_lived_allocation(tmp_path):
    # In a fresh process: a long-lived test process may already hold memory it can reuse.
    code = (
        "import torch; from hf_transfer.measure import PeakMemory\n"
        "memory = PeakMemory(); block = torch.ones(50_000_000); del block  # 200 MB, gone before the reading\n"
        "print(memory.result()['peak_memory_mb'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert 180 <= float(done.stdout.split()[-1]) < 400


def test_files_saved_whole_or_not_at_all(tmp_path):
    """A save that dies halfway (a kill during the final save) leaves no half-written file."""
    from hf_transfer.outputs import save_whole_files

    def dies_halfway(folder):
        (folder / "tokenizer.json").write_text("{}")
        (folder / "tokenizer_config.json").write_text("")  # begun, never finished
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_whole_files(tmp_path, dies_halfway)
    assert list(tmp_path.iterdir()) == []

    def saves(folder):
        (folder / "vocab.txt").write_text("a\nb\n")
        (folder / "sub").mkdir()
        (folder / "sub" / "x.json").write_text("{}")

    save_whole_files(tmp_path, saves)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == ["sub/x.json",
                                                                                                 "vocab.txt"]
