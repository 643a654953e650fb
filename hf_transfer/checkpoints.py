"""The two callbacks that make resuming from a checkpoint exact and Ctrl-C clean.

The Trainer's checkpoint holds the weights, the optimizer, the scheduler, the RNG states and
the trainer state. Two things it does not hold, added here:

- which checkpoint is complete: resume.json is written into a checkpoint folder after the
  Trainer has written all of its files, so a run killed while saving never resumes from half a
  checkpoint;
- the random state at the start of the epoch: the length-grouped sampler draws each epoch's
  order from torch's global generator, so a run resumed in the middle of a later epoch would
  see another order. The state is saved with the checkpoint and restored before the resumed
  epoch draws its order; the Trainer then restores the checkpoint's own state for the steps.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from hf_transfer.errors import Terminated
from hf_transfer.run_folder import COMPLETE_CHECKPOINT

log = logging.getLogger(__name__)


def _epoch_rng_file(folder: Path, process_index: int) -> Path:
    return folder / f"epoch_rng_state_{process_index}.pt"


def _trainer_cpu_rng(checkpoint: Path, process_index: int) -> torch.Tensor | None:
    """The torch CPU random state the Trainer saved in a checkpoint (rng_state[_N].pth)."""
    for name in (f"rng_state_{process_index}.pth", "rng_state.pth"):
        if (checkpoint / name).is_file():
            # The Trainer's own file (python and numpy states beside torch's): not weights-only.
            return torch.load(checkpoint / name, weights_only=False)["cpu"]
    return None


PROGRESS = "progress.json"  # in each checkpoint: what the run had done by then


@dataclass
class Progress:
    """What a run had done by a checkpoint, over every session so far: the sum of its step
    losses (the Trainer's train_loss is this over the steps), its training and wall time, and
    how many times it was resumed. A resumed run adds its own to it, so that metrics.json
    describes the whole run, not the part after the last resume."""

    loss_sum: float | None = 0.0  # None: not known (a checkpoint written without this record)
    train_runtime_s: float = 0.0
    wall_time_s: float = 0.0
    resumes: int = 0

    @classmethod
    def of(cls, checkpoint: Path | None) -> Progress:
        """The checkpoint's record (a resumed run is one more resume); a fresh run's: nothing yet."""
        file = checkpoint / PROGRESS if checkpoint is not None else None
        if file is None or not file.is_file():
            return cls(resumes=0) if checkpoint is None else cls(loss_sum=None, resumes=1)
        saved = cls(**json.loads(file.read_text(encoding="utf-8")))
        return dataclasses.replace(saved, resumes=saved.resumes + 1)

    def write(self, checkpoint: Path) -> None:
        (checkpoint / PROGRESS).write_text(json.dumps(dataclasses.asdict(self)) + "\n", encoding="utf-8")


class ResumableCheckpoints(TrainerCallback):
    """Marks each checkpoint complete once written, with the RNG state the epoch began with;
    when the run resumes from one, restores that state before the epoch draws its order."""

    def __init__(self, resume_from: Path | None = None):
        self.resume_from = resume_from
        self.epoch_rng: torch.Tensor | None = None

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.resume_from is None:
            self.epoch_rng = torch.get_rng_state()
            return
        checkpoint, self.resume_from = self.resume_from, None  # only the resumed epoch
        epoch = state.epoch or 0.0
        if abs(epoch - round(epoch)) < 1e-6:
            # Resumed where an epoch ends: the Trainer restores the checkpoint's own random state
            # before this epoch draws its order, and that state is this epoch's start.
            self.epoch_rng = _trainer_cpu_rng(checkpoint, args.process_index)
            return
        saved = _epoch_rng_file(checkpoint, args.process_index)
        if saved.is_file():
            torch.set_rng_state(torch.load(saved, weights_only=True))
        self.epoch_rng = torch.get_rng_state()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not folder.is_dir():
            return
        if self.epoch_rng is not None:
            torch.save(self.epoch_rng, _epoch_rng_file(folder, args.process_index))
        if not args.should_save:
            return
        settings = Path(args.output_dir).parent / "config.yaml"
        if settings.is_file():  # the settings it was saved under: resume refuses others
            shutil.copyfile(settings, folder / "config.yaml")
        record = {"step": state.global_step, "epoch": state.epoch, "max_steps": state.max_steps}
        (folder / COMPLETE_CHECKPOINT).write_text(json.dumps(record) + "\n", encoding="utf-8")


class StopOnInterrupt(TrainerCallback):
    """Ctrl-C (SIGINT) or SIGTERM (a batch scheduler's, `docker stop`'s) while training: finish
    the step, save a checkpoint, stop (`signal`: which one came). A second one stops at once.
    Only in a single process, from the main thread: across processes a checkpoint is a
    collective that every rank must reach at the same step."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.interrupted_at: int | None = None
        self.signal = int(signal.SIGINT)
        self._previous: dict[int, Any] = {}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if args.world_size > 1 or threading.current_thread() is not threading.main_thread():
            return
        self._previous = {signum: signal.signal(signum, self._on_signal) for signum in self.SIGNALS}

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.interrupted_at is not None:  # the second one
            self._restore()
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        self.interrupted_at, self.signal = -1, signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        log.warning("%s: finishing this step and saving a checkpoint (again to stop at once)", name)

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.interrupted_at is not None:
            self.interrupted_at = state.global_step
            control.should_save = True
            control.should_training_stop = True

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # Stopping mid-epoch ends the Trainer's epoch loop too, and an epoch-wise evaluation and
        # save would follow: an evaluation the uninterrupted run never made, competing for the
        # best checkpoint. The epoch did not end; the checkpoint of the step is saved already.
        epoch = state.epoch or 0.0
        if self.interrupted_at is not None and abs(epoch - round(epoch)) > 1e-6:  # cut short, not ended
            control.should_evaluate = False
            control.should_save = False

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._restore()
