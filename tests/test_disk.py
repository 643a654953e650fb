"""A full disk or a read-only one: one line naming the folder and the room needed, nothing
half-written left behind, and a run that resumes to the same weights once there is space.

The disks are real: small tmpfs mounts (root and the mount capability needed; skipped where a
test machine has neither). The disk fills during training as it does for a user, with a file
that another program wrote taking the space that is left."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import compose_tiny
from safetensors.torch import load_file
from transformers import TrainerCallback

from hf_transfer import disk, run_folder
from hf_transfer.errors import UserError
from hf_transfer.report import main as report_main
from hf_transfer.run import resume, run

STEPS = ["trainer.num_train_epochs=3", "trainer.per_device_train_batch_size=8", "trainer.save_strategy=steps",
         "trainer.save_steps=4", "trainer.eval_strategy=steps", "trainer.eval_steps=4", "trainer.save_total_limit=3",
         "trainer.load_best_model_at_end=false"]  # fmt: skip


def _mount(folder: Path, options: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=False, capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small disk here: {done.stderr.decode().strip()}")


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB disk of its own (a tmpfs), unmounted afterwards."""
    folder = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    _mount(folder, "size=16m")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave: int) -> Path:
    """Take all the space on `folder`'s disk but `leave` bytes, as another program's file would."""
    filler = folder / "someone-elses-file"
    size = max(disk.free_bytes(folder) - leave, 0) + (filler.stat().st_size if filler.exists() else 0)
    with filler.open("wb") as stream:
        os.posix_fallocate(stream.fileno(), 0, size)
    return filler


class FillAfterCheckpoint(TrainerCallback):
    """After the checkpoint of `step`, the disk fills (another program's download, say)."""

    def __init__(self, folder: Path, step: int):
        self.folder, self.step = folder, step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            fill(self.folder, leave=8192)


def test_a_full_disk_stops_the_run_in_one_line_and_it_resumes_to_the_same_weights(
    checkpoints, data_dir, tmp_path, small_disk
):
    cfg = compose_tiny(checkpoints["bert"], data_dir, *STEPS)
    whole = run(cfg, output_dir=tmp_path / "whole").folder

    folder = small_disk / "run"
    with pytest.raises(disk.NoSpace) as stopped:
        run(cfg, output_dir=folder, callbacks=[FillAfterCheckpoint(small_disk, step=4)])
    message = str(stopped.value)
    assert "\n" not in message
    assert f"no space left on the disk of '{folder}'" in message
    assert f"hf-transfer resume {folder}" in message
    assert "the half-written checkpoint-8 removed" in message
    # The complete checkpoint is kept, the half-written one is gone, the run is resumable.
    assert [p.name for p in (folder / "checkpoints").iterdir()] == ["checkpoint-4"]
    assert run_folder.state(folder) == "incomplete"

    (small_disk / "someone-elses-file").unlink()  # space is freed
    resumed = resume(folder)
    for name, tensor in load_file(str(whole / "model.safetensors")).items():
        assert load_file(str(folder / "model.safetensors"))[name].equal(tensor), name
    before, after = (json.loads((f / "metrics.json").read_text()) for f in (whole, folder))
    assert after["train_loss"] == before["train_loss"]
    assert after["test"]["f1_macro"] == before["test"]["f1_macro"]
    assert resumed.metrics["resumes"] == 1


def test_a_run_whose_checkpoint_cannot_fit_is_refused_before_it_trains(checkpoints, data_dir, small_disk):
    fill(small_disk, leave=64 * 1024)  # a tiny model's checkpoint and weights take about 300 KB
    folder = small_disk / "run"
    with pytest.raises(disk.NoSpace, match=r"not enough disk space for a checkpoint and the trained model in .*"
                       r"it needs about .* KB, .* KB is free"):  # fmt: skip
        run(compose_tiny(checkpoints["bert"], data_dir, *STEPS), output_dir=folder)
    assert not folder.exists()  # nothing half-written


def test_a_cache_that_does_not_fit_on_the_disk(checkpoints, data_dir, small_disk, monkeypatch):
    """auto: the run trains without it, with a warning; strategy.cache=true: refused in one line.
    Either way no partial cache is left filling the disk."""
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(small_disk / "cache"))
    (small_disk / "cache").mkdir()
    fill(small_disk, leave=2 * 2**20)  # room for a run of a tiny model, not for a cache and its spare
    on_disk = ["strategy=head_only", "strategy.cache_memory_share=0", "trainer.num_train_epochs=1"]
    cfg = compose_tiny(checkpoints["bert"], data_dir, *on_disk)

    with pytest.raises(disk.NoSpace, match="not enough disk space for the feature cache .* strategy.cache=false"):
        run(compose_tiny(checkpoints["bert"], data_dir, *on_disk, "strategy.cache=true"), output_dir=small_disk / "a")
    # The check comes before the file: nothing of a cache is left.
    assert not any((small_disk / "cache").rglob("*.npy"))

    result = run(cfg, output_dir=small_disk / "b")
    assert result.metrics["feature_cache"] == {"used": False, "reason": "no disk space for it"}
    assert not any((small_disk / "cache").rglob("*.npy"))


@pytest.fixture
def read_only_disk(tmp_path):
    folder = tmp_path / f"ro-{uuid.uuid4().hex[:6]}"
    _mount(folder, "size=1m")
    (folder / "runs").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_read_only_folder_is_refused_in_one_line(checkpoints, data_dir, read_only_disk, tmp_path):
    cfg = compose_tiny(checkpoints["bert"], data_dir, *STEPS)
    with pytest.raises(UserError, match=r"cannot write into the run folder '.*runs': Read-only file system; "
                       r"choose a folder you can write to \(hydra.run.dir\)"):  # fmt: skip
        run(cfg, output_dir=read_only_disk / "runs")
    with pytest.raises(UserError, match=r"cannot create the run folder '.*new': Read-only file system"):
        run(cfg, output_dir=read_only_disk / "new")

    finished = run(cfg, output_dir=tmp_path / "finished").folder
    with pytest.raises(UserError, match=r"cannot write to '.*runs/report_files': Read-only file system; give --out FOLDER"):
        report_main([str(finished), "--out", str(read_only_disk / "runs")])
