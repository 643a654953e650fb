"""The libraries' versions hf_transfer is tested with, checked before a command starts.

The ranges are the ones pyproject.toml declares (read back from the installed package's
metadata, so they are stated once); CI runs a smoke subset of the tests at each lower bound.
A version outside its range is refused in one line that names it and the fix, instead of an
ImportError or a wrong result deep inside a run.
"""

from __future__ import annotations

import functools
import importlib.metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from hf_transfer.errors import UserError

DISTRIBUTION = "hf-transfer-learning"
# The libraries whose APIs the code leans on; the rest are used through these or barely.
CHECKED = ("torch", "transformers", "accelerate", "peft", "datasets", "huggingface-hub")


def check() -> None:
    """Raise a UserError naming each checked library whose installed version is out of range."""
    problems = out_of_range()
    if problems:
        raise UserError("; ".join(problems))


@functools.cache
def out_of_range() -> tuple[str, ...]:
    try:
        declared = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:  # a source tree used without installing it
        return ()
    return tuple(problem for line in declared if (problem := _problem(line)))


def _problem(requirement_line: str) -> str | None:
    requirement = Requirement(requirement_line)
    name = canonicalize_name(requirement.name)
    if name not in CHECKED or requirement.marker is not None or not requirement.specifier:
        return None  # extras (test, report, ...) and unversioned names are not checked
    wanted = f"{requirement.name}{requirement.specifier}"
    installed = installed_version(requirement.name)
    if installed is None:
        return f"{requirement.name} is not installed; hf_transfer needs {wanted}: pip install '{wanted}'"
    if requirement.specifier.contains(_release(installed), prereleases=True):
        return None
    return (
        f"{requirement.name} {installed} is installed, but hf_transfer is tested with {wanted}: "
        f"pip install '{wanted}'"
    )


def _release(version: str) -> str:
    """The release numbers of a version: NGC's torch `2.11.0a0+git...` is a 2.11.0 build."""

    try:
        return ".".join(map(str, Version(version).release))
    except InvalidVersion:
        return version


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
