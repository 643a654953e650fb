"""`hf-transfer cache`: what the package-asset cache holds, and freeing it.

    hf-transfer cache list                      each cached asset: its folder, size and source
    hf-transfer cache delete model=mpnet        the cache of a config's sources (model=, task=, recipe=)
    hf-transfer cache delete FOLDER ...         by the folder name `list` shows
    hf-transfer cache delete --all

Assets are fetched into HF_TRANSFER_CACHE (default ~/.cache/hf_transfer) once and reused by
every run; a deleted one is fetched again by the next run that needs it. A folder is deleted
under the lock its fetch takes, so a fetch under way is never cut.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from hf_transfer.assets import COMPLETE_MARK, cache_root, is_package_source, parse_package_source
from hf_transfer.compose import compose
from hf_transfer.disk import folder_size, megabytes
from hf_transfer.errors import CommandParser, UserError

PROG = "hf-transfer cache"


@dataclass(frozen=True)
class Cached:
    folder: Path
    size: int
    source: str  # what the fetch recorded; "(interrupted fetch)" for a partial folder


def packages_folder() -> Path:
    return cache_root() / "packages"


def cached() -> list[Cached]:
    """Every folder of the cache, complete or left by an interrupted fetch, by name."""
    folder = packages_folder()
    if not folder.is_dir():
        return []
    found = []
    for entry in sorted(p for p in folder.iterdir() if p.is_dir()):
        mark = entry / COMPLETE_MARK
        source = mark.read_text(encoding="utf-8").strip() if mark.exists() else "(interrupted fetch)"
        found.append(Cached(entry, folder_size(entry), source))
    return found


def config_sources(overrides: list[str]) -> list[str]:
    """The package sources a config group names (`model=mpnet`: its model; `task=NAME`: its data
    and extra test sets; `recipe=NAME`: both)."""

    groups = {o.split("=", 1)[0] for o in overrides}
    cfg = compose(overrides)
    sources = []
    if groups & {"model", "recipe"}:
        sources.append(cfg.model.source)
    if groups & {"task", "recipe"}:
        sources.append(cfg.task.data.source)
        sources += [extra.source for extra in (cfg.task.get("extra_test") or {}).values()]
    return [s for s in sources if isinstance(s, str) and is_package_source(s)]


def delete(folder: Path) -> None:
    """Delete one cache folder, under its fetch's lock taken without waiting: a fetch under way is refused, not cut."""

    key = folder.name.removeprefix(".").split(".partial-")[0]
    try:
        with FileLock(str(folder.parent / f"{key}.lock")).acquire(timeout=0):
            shutil.rmtree(folder)
    except Timeout:
        raise UserError(f"{folder.name} is being fetched by another run: delete it once that run has it") from None


def main(argv: list[str]) -> int:
    parse = CommandParser(
        prog=PROG,
        description="List the package assets (pretrained checkpoints, datasets) cached in "
        f"{cache_root()} (HF_TRANSFER_CACHE), or delete them; a deleted asset is fetched again when a run needs it.",
    )
    action = parse.add_subparsers(dest="action", required=True, metavar="{list,delete}")
    action.add_parser("list", help="each cached asset: folder, size, source")
    remove = action.add_parser("delete", help="delete cached assets", prog=f"{PROG} delete")
    remove.add_argument("what", nargs="*", help="GROUP=OPTION (model=mpnet, task=NAME, recipe=NAME) or a folder name")
    remove.add_argument("--all", action="store_true", help="every cached asset")
    args = parse.parse_args(argv)
    entries = cached()
    if args.action == "list":
        return _list(entries)
    if args.all == bool(args.what):
        raise UserError(f"{PROG} delete: name what to delete (model=NAME, task=NAME, a folder `list` shows) or --all")
    chosen = entries if args.all else _chosen(args.what, entries)
    for entry in chosen:
        delete(entry.folder)
        print(f"deleted {entry.folder.name} ({megabytes(entry.size)})")
    print(f"freed {megabytes(sum(e.size for e in chosen))}" if chosen else "nothing cached to delete")
    return 0


def _list(entries: list[Cached]) -> int:
    if not entries:
        print(f"nothing cached in {packages_folder()}")
        return 0
    width = max(len(e.folder.name) for e in entries)
    for entry in entries:
        print(f"{entry.folder.name:<{width}}  {megabytes(entry.size):>9}  {entry.source}")
    total = sum(e.size for e in entries)
    print(f"{len(entries)} cached, {megabytes(total)} in {packages_folder()}", file=sys.stderr)
    return 0


def _chosen(names: list[str], entries: list[Cached]) -> list[Cached]:
    by_name = {e.folder.name: e for e in entries}
    chosen: dict[str, Cached] = {}
    groups = [n for n in names if "=" in n]
    for source in config_sources(groups) if groups else ():
        key = parse_package_source(source).cache_key
        if key in by_name:
            chosen[key] = by_name[key]
    for name in (n for n in names if "=" not in n):
        if name.rstrip("/") not in by_name:
            known = ", ".join(by_name) or "none"
            raise UserError(f"no cached asset named '{name}' in {packages_folder()} (cached: {known}; see {PROG} list)")
        chosen[name.rstrip("/")] = by_name[name.rstrip("/")]
    return list(chosen.values())
