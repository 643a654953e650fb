"""One run per folder: take it before anything is written, and say what it holds.

A run folder is in one of three states:

- empty: nothing of a run yet (it may hold Hydra's records of a run that was refused);
- incomplete: a run started training (config.yaml is written then) and did not finish: killed,
  interrupted or failed. `hf-transfer resume RUN_DIR` continues it from its last complete
  checkpoint;
- complete: the marker file COMPLETE is there, written last, after the model, the metrics and
  the model card (folders of earlier versions, without it, count by their metrics.json).

A folder is taken with an exclusive lock (`.lock`) for the whole run, so that a second run
started into it, at the same time or later, is refused instead of mixing its files in.
Nothing here imports torch: `report`, `push` and the CLI ask it before anything heavy loads.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Literal

from hf_transfer.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; folders are still checked
    fcntl = None  # type: ignore[assignment]

COMPLETE = "COMPLETE"
LOCK = ".lock"
COMPLETE_CHECKPOINT = "resume.json"  # written into a checkpoint once the Trainer wrote all of it

State = Literal["empty", "incomplete", "complete"]

_held: dict[Path, tuple[int, int]] = {}  # folder -> (file descriptor, times taken in this process)


class FolderInUse(UserError):
    """Another process holds the run folder: nothing in it is this run's to clean up."""


def state(folder: Path) -> State:
    if (folder / COMPLETE).exists():
        return "complete"
    # A folder of an earlier version, which wrote no COMPLETE (nor a lock): its metrics say it.
    if not (folder / LOCK).exists() and (folder / "metrics.json").exists() and (folder / "config.json").exists():
        return "complete"
    if (folder / "config.yaml").exists() or last_complete_checkpoint(folder) is not None:
        return "incomplete"
    return "empty"


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The latest checkpoint of a run folder that was written to the end, or None."""
    candidates = [p for p in (folder / "checkpoints").glob("checkpoint-*") if p.name.rsplit("-", 1)[1].isdigit()]
    complete = [p for p in candidates if (p / COMPLETE_CHECKPOINT).is_file()]
    return max(complete, key=checkpoint_step, default=None)


def remove_incomplete_checkpoints(folder: Path) -> list[Path]:
    """Remove the checkpoints a stopped save left half-written (they are never resumed from)."""

    half = [p for p in (folder / "checkpoints").glob("checkpoint-*") if not (p / COMPLETE_CHECKPOINT).is_file()]
    for checkpoint in half:
        shutil.rmtree(checkpoint, ignore_errors=True)
    return half


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])


def resume_hint(folder: Path) -> str:
    checkpoint = last_complete_checkpoint(folder)
    where = f"last complete checkpoint: step {checkpoint_step(checkpoint)}" if checkpoint else "no checkpoint yet"
    return f"it holds a run that did not finish ({where}); resume it with: hf-transfer resume {folder}"


def check_free(folder: Path, key: str = "hydra.run.dir") -> None:
    """Refuse a folder that holds a run, finished or not: never overwrite or mix runs."""
    found = state(folder)
    if found == "complete":
        raise UserError(f"{key} '{folder}' already holds a run (finished); choose another folder")
    if found == "incomplete":
        raise UserError(f"{key} '{folder}': {resume_hint(folder)}; or choose another folder")


def prepare(path: str | Path, resume: bool = False, key: str = "output folder") -> Path:
    """Take the run folder for this run: a free one, or with `resume`, one whose run did not
    finish (`key`: what named it, for the message). Returns its absolute path.

    The one place a run folder is taken and checked: the CLI takes it before Hydra writes into
    it, and the run, called from the CLI or from Python, takes it again (counted: see release)."""
    folder = Path(path).expanduser().resolve()
    if state(folder) == "complete" and not resume:  # refused before taking it: a finished run's folder stays as it is
        check_free(folder, key=key)
    take(folder)  # a folder another run holds is refused here (FolderInUse)
    try:
        if not resume:
            check_free(folder, key=key)
        elif state(folder) == "complete":
            raise UserError(f"'{folder}' holds a finished run: there is nothing to resume")
    except UserError:
        release(folder)
        raise
    return folder


def claim_new(folder: Path) -> Path:
    """A new folder named `folder`, or `folder-2`, `folder-3`... when that is taken: created
    atomically, so runs started in the same second never share one."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    for number in range(1, 1000):
        candidate = folder if number == 1 else folder.with_name(f"{folder.name}-{number}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise UserError(f"could not find a free run folder next to '{folder}'")  # pragma: no cover


def take(folder: Path) -> None:
    """Hold `folder` for this process's run (created if needed); a folder another process holds
    is refused. Taken again by the same process, it is counted (see release)."""
    folder = folder.resolve()
    if folder in _held:
        fd, count = _held[folder]
        _held[folder] = (fd, count + 1)
        return
    if folder.exists() and not folder.is_dir():
        raise UserError(f"run folder '{folder}' is a file: give hydra.run.dir a folder (a new one, or a run's)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (PermissionError, OSError) as err:
        raise UserError(f"cannot create the run folder '{folder}': {err.strerror or err}; choose a folder you can "
                        "write to (hydra.run.dir)") from None  # fmt: skip
    if fcntl is None:  # pragma: no cover
        return
    try:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:  # a read-only folder (or disk), or one that is not ours
        raise UserError(f"cannot write into the run folder '{folder}': {err.strerror or err}; choose a folder you "
                        "can write to (hydra.run.dir)") from None  # fmt: skip
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise FolderInUse(
            f"run folder '{folder}' is in use by another run ({holder}); wait for it to end or choose another folder"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"process {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
    _held[folder] = (fd, 1)


def release(folder: Path) -> None:
    folder = folder.resolve()
    if folder not in _held:
        return
    fd, count = _held[folder]
    if count > 1:
        _held[folder] = (fd, count - 1)
        return
    del _held[folder]
    os.close(fd)  # closing the descriptor drops the lock; the file stays (removing it would race)


def mark_complete(folder: Path) -> None:
    (folder / COMPLETE).write_text(f"finished {time.strftime('%Y-%m-%d %H:%M:%S')}\n", encoding="utf-8")


def holds(folder: Path) -> bool:
    """Whether this process holds `folder` (took it for its run)."""
    return folder.resolve() in _held


def discard_unstarted(folder: Path) -> None:
    """Remove what a run that never trained wrote (an empty checkpoints/ folder), so that the
    corrected command can use the folder. Only for a folder this process holds."""
    if not holds(folder):
        return
    checkpoints = folder / "checkpoints"
    if checkpoints.is_dir() and not any(checkpoints.iterdir()):
        checkpoints.rmdir()
