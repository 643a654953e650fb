"""A non-editable install, called from an unrelated folder, finds the shipped config and recipes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv

from conftest import ROOT, cli_env


def test_wheel_install_finds_recipes_from_anywhere(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".git", "runs", "build", "*.egg-info", "__pycache__", ".venv*")
    )
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(wheels), str(source)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "--quiet", str(wheel)], capture_output=True, text=True
    )
    assert install.returncode == 0, install.stderr[-3000:]
    shutil.rmtree(source)  # nothing may come from the checkout any more

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = cli_env(tmp_path)
    where = subprocess.run([python, "-c", "import hf_transfer; print(hf_transfer.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True)  # fmt: skip
    assert str(env_dir) in where.stdout, where.stdout + where.stderr

    helped = subprocess.run(
        [env_dir / "bin" / "hf-transfer", "--help"], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert helped.returncode == 0, helped.stderr
    recipe_line = next(line for line in helped.stdout.splitlines() if line.startswith("recipe: "))
    assert "bert_sentiment" in recipe_line.removeprefix("recipe: ").split(", ")

    shown = subprocess.run([python, "-m", "hf_transfer", "recipe=bert_sentiment", "--cfg", "job"], cwd=elsewhere,
                           env=env, capture_output=True, text=True)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "name: bert_sentiment" in shown.stdout
    assert not any(elsewhere.iterdir())
