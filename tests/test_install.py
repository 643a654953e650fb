"""A non-editable install, called from an unrelated folder, finds the shipped config and recipes."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import venv
from pathlib import Path

from conftest import ROOT, cli_env


def outer_dependency_dirs() -> list[str]:
    """Where the interpreter running the tests finds its packages (torch, transformers, hydra...):
    its sys.path as its site set it up (a virtual environment's own site-packages, or the system's,
    with the folders their .pth files add), less the checkout's own source folders (a venv made
    inside the checkout, as `.venv`, is kept: its site-packages hold the dependencies)."""
    source = {ROOT, ROOT / "tests", ROOT / "hf_transfer"}
    dirs = []
    for entry in sys.path:
        path = Path(entry or ".").resolve()
        if path.is_dir() and path not in source:
            dirs.append(str(path))
    return list(dict.fromkeys(dirs))


def test_wheel_install_finds_recipes_from_anywhere(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".git", "runs", "build", "*.egg-info", "__pycache__", ".venv*")
    )
    wheels = tmp_path / "wheels"
    # Without build isolation where setuptools is at hand (no index needed); else pip fetches it.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "--quiet", "-w", str(wheels), str(source)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("*.whl")

    # A fresh environment that holds only the wheel; its dependencies come from the environment
    # running the tests, whichever that is (a user's venv, or the system's Python in CI), as plain
    # path entries: no .pth file of theirs runs, so an editable install of hf_transfer there
    # cannot stand in for anything the wheel lacks.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=False, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "--quiet", str(wheel)], capture_output=True, text=True
    )
    assert install.returncode == 0, install.stderr[-3000:]
    inner = subprocess.run(
        [python, "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True
    ).stdout.strip()
    (Path(inner) / "outer_dependencies.pth").write_text("".join(d + "\n" for d in outer_dependency_dirs()))
    shutil.rmtree(source)  # nothing may come from the checkout any more

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = cli_env(tmp_path)
    env.pop("PYTHONPATH", None)
    code = "import torch, transformers, hydra, hf_transfer; print(hf_transfer.__file__)"
    where = subprocess.run([python, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert where.stdout.startswith(str(env_dir)), where.stdout + where.stderr

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
