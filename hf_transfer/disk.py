"""A full or read-only disk stops a run with one line, not a traceback: what was being written,
where, how much room it needs, and how to go on. Nothing here imports torch.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from hf_transfer.errors import UserError

_FULL = {errno.ENOSPC, errno.EDQUOT}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}
# Libraries that write through their own code (safetensors, torch's zip writer) raise their own
# types; their messages carry the system's words.
_FULL_WORDS = ("No space left on device", "Disk quota exceeded")


class NoSpace(UserError):
    """There is not room on the disk for what a run must write."""


def megabytes(size: int) -> str:
    return f"{size / 2**20:,.0f} MB" if size >= 2**20 else f"{size / 2**10:,.0f} KB"


def free_bytes(path: Path) -> int:
    """Free space on the disk that holds `path` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def is_full(err: BaseException) -> bool:
    """Whether `err` (or what caused it) is the disk running out of space."""
    return any(
        (isinstance(e, OSError) and e.errno in _FULL) or any(words in str(e) for words in _FULL_WORDS)
        for e in _chain(err)
    )


def read_only_error(err: BaseException) -> OSError | None:
    """The write refused for want of permission (or a read-only disk) behind `err`, if that is what it is."""
    return next((e for e in _chain(err) if isinstance(e, OSError) and e.errno in _READ_ONLY), None)


def require(folder: Path, needed: int, what: str, fix: str) -> None:
    """Refuse, before writing, what would not fit in `folder`'s disk (`fix`: how else to go on)."""
    free = free_bytes(folder)
    if free < needed:
        raise NoSpace(
            f"not enough disk space for {what} in '{folder}': it needs about {megabytes(needed)}, "
            f"{megabytes(free)} is free; free some space, or {fix}"
        )


def cannot_write(path: Path, err: OSError, fix: str) -> UserError:
    """A write refused by the system, as one line naming the path and the fix."""
    return UserError(f"cannot write to '{path}': {err.strerror or err}; {fix}")
