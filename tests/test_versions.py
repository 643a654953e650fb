"""The declared version ranges are the ones checked: a library outside its range is refused in
one line before anything runs."""

from __future__ import annotations

import pytest

from hf_transfer import cli, versions
from hf_transfer.errors import UserError


@pytest.fixture
def installed(monkeypatch):
    """Pretend versions: {name: version or None (not installed)}; the rest as installed here."""
    fake: dict[str, str | None] = {}
    real = versions.installed_version
    monkeypatch.setattr(versions, "installed_version", lambda name: fake[name] if name in fake else real(name))
    versions.out_of_range.cache_clear()
    yield fake
    versions.out_of_range.cache_clear()


def test_this_environment_is_in_range():
    assert versions.out_of_range() == ()


def test_an_old_transformers_is_named_with_its_range_and_the_fix(installed):
    installed["transformers"] = "5.17.0"
    (problem,) = versions.out_of_range()
    assert problem == ("transformers 5.17.0 is installed, but hf_transfer is tested with transformers<6,>=5.20: "
                       "pip install 'transformers<6,>=5.20'")  # fmt: skip
    installed["transformers"] = "6.0.0"
    assert "transformers 6.0.0" in versions.out_of_range.__wrapped__()[0]


def test_each_checked_library_is_declared_with_a_lower_bound(installed):
    for name, old in {"torch": "2.10.0", "accelerate": "1.9.0", "peft": "0.17.1", "datasets": "3.6.0",
                      "huggingface_hub": "1.30.0"}.items():  # fmt: skip
        installed.clear()
        installed[name] = old
        versions.out_of_range.cache_clear()
        (problem,) = versions.out_of_range()
        assert problem.startswith(f"{name} {old} is installed"), problem
    installed.clear()
    installed["peft"] = None
    versions.out_of_range.cache_clear()
    assert versions.out_of_range() == ("peft is not installed; hf_transfer needs peft>=0.18: pip install 'peft>=0.18'",)


def test_a_local_build_suffix_is_in_range(installed):
    installed["torch"] = "2.11.0+cu130"  # the GPU build this was measured with
    assert versions.out_of_range() == ()
    installed["torch"] = "2.11.0a0+ecf3bae40a"  # NVIDIA's containers build torch so
    versions.out_of_range.cache_clear()
    assert versions.out_of_range() == ()


def test_the_command_line_refuses_in_one_line(installed, capsys):
    installed["transformers"] = "5.17.0"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["validate", "recipe=bert_sentiment"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "transformers 5.17.0 is installed" in err and "Traceback" not in err


def test_a_run_from_python_is_checked_too(installed, tmp_path):
    from hf_transfer.run import run

    installed["accelerate"] = "0.34.2"
    with pytest.raises(UserError, match="accelerate 0.34.2"):
        run({}, tmp_path / "run")
    assert not (tmp_path / "run").exists()
