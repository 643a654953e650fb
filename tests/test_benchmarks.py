"""benchmarks/gpu.py's pieces that run without a GPU: every case it plans composes into a valid
run (a GPU session is too short to find a bad override there), and its step timer measures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import compose_tiny

from hf_transfer.compose import compose
from hf_transfer.config import validate
from hf_transfer.run import run

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import gpu  # noqa: E402 - benchmarks/gpu.py


@pytest.mark.parametrize("quick, diagnose", [(False, True), (True, False)])
def test_every_planned_case_composes_into_a_valid_run(tmp_path, quick, diagnose):
    cases = [(spec, case) for kind, spec in gpu.gpu_plan(quick, diagnose) if kind == "ours" for case in spec["cases"]]
    assert {c["name"] for _, c in cases} >= {"hf_transfer, batch 32", "hf_transfer, batch 256"}
    for spec, case in cases:
        folder = gpu.run_folder(tmp_path, case["name"])
        validate(compose([*spec["base"], *case["overrides"], f"hydra.run.dir={folder}"]))


def test_the_step_timer_measures_a_run(checkpoints, data_dir, tmp_path):
    probe = gpu.probe_callback(steps=5, profile=True)
    run(compose_tiny(checkpoints["bert"], data_dir, "trainer.max_steps=30", "trainer.per_device_train_batch_size=4"),
        tmp_path / "run", [probe])  # fmt: skip
    figures = probe.figures()
    assert figures["step_ms"] > 0 and figures["profile_host_ms_per_step"] > 0
    assert "top operations by host time" in figures["profile"]
