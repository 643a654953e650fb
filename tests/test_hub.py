"""Pushing to a hub and loading back, against a fake hub on loopback (tests/hub_server.py).

The real huggingface_hub client reads HF_ENDPOINT and HF_HUB_OFFLINE once, at import, and the
test process is offline: every client call runs in a subprocess with its own environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import TEST_RECIPES, compose_tiny
from hub_server import HubServer
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_transfer.run import run

TOKEN = "hf_test_token_3f9a1c"
TEXTS = ["the movie was good", "awful plot and dull acting", "a wonderful film"]


@pytest.fixture(scope="module")
def hub():
    with HubServer(token=TOKEN) as server:
        yield server
        assert server.errors == []


def hub_env(tmp_path, server, token=TOKEN, endpoint=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "HUGGINGFACE_"))}
    env.update({"HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_DISABLE_XET": "1", "OMP_NUM_THREADS": "1",
                "HF_TRANSFER_CACHE": os.environ["HF_TRANSFER_CACHE"], "TOKENIZERS_PARALLELISM": "false"})  # fmt: skip
    if endpoint:
        env["HF_ENDPOINT"] = server.url
    if token:
        env["HF_TOKEN"] = token
    return env


def cli(env, *argv, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "hf_transfer", *argv], env=env, cwd=cwd, capture_output=True, text=True
    )


def logits_in_subprocess(env, code):
    """Run `code` (which sets `model` and `tokenizer`) in a fresh process; return its logits."""
    script = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, torch
        model.eval()
        with torch.no_grad():
            out = model(**tokenizer({TEXTS!r}, padding=True, return_tensors="pt")).logits
        print("LOGITS", json.dumps(out.tolist()))
    """)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("LOGITS"))
    return torch.tensor(json.loads(line.split(" ", 1)[1]))


def local_logits(folder):
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        return model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits


def snapshot(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def finished_run(checkpoints, data_dir, tmp_path_factory):
    cfg = compose_tiny(checkpoints["bert"], data_dir, "trainer.num_train_epochs=1")
    return run(cfg, output_dir=tmp_path_factory.mktemp("hub") / "run").folder


def test_push_a_run_folder_and_load_it_back(hub, finished_run, tmp_path):
    env = hub_env(tmp_path, hub)
    done = cli(env, "push", str(finished_run), "--repo-id", "tester/tiny-run", "--private", "--revision", "dev",
               "--commit-message", "first model")  # fmt: skip
    assert done.returncode == 0, done.stderr
    repo = hub.repos["tester/tiny-run"]
    assert repo["private"] is True and "first model" in repo["messages"]
    pushed = set(repo["branches"]["dev"])
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "config.yaml", "metrics.json"} <= pushed
    assert not any(
        p.startswith(("checkpoints/", ".hydra/")) or p in ("train.log",) or p.startswith("predictions") for p in pushed
    )

    loaded = logits_in_subprocess(
        hub_env(tmp_path / "reader", hub),
        """
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        model = AutoModelForSequenceClassification.from_pretrained("tester/tiny-run", revision="dev")
        tokenizer = AutoTokenizer.from_pretrained("tester/tiny-run", revision="dev")
        """,
    )
    assert torch.allclose(loaded, local_logits(finished_run), atol=1e-6)


def test_the_endpoint_can_come_from_the_command_line(hub, finished_run, tmp_path):
    env = hub_env(tmp_path, hub, endpoint=False)
    done = cli(env, "push", str(finished_run), "--repo-id", "org/from-flag", "--endpoint", hub.url)
    assert done.returncode == 0, done.stderr
    assert "config.json" in hub.repos["org/from-flag"]["branches"]["main"]


def test_a_wrong_token_fails_clearly_and_leaves_the_run_alone(hub, finished_run, tmp_path):
    before = snapshot(finished_run)
    done = cli(hub_env(tmp_path, hub, token="hf_wrong"), "push", str(finished_run), "--repo-id", "tester/refused")
    assert done.returncode == 2
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("hf-transfer: error: push of ")
    assert (
        "refused the token" in message
        and f"retry with: hf-transfer push {finished_run} --repo-id tester/refused" in message
    )
    assert "Traceback" not in done.stderr and "hf_wrong" not in done.stderr + done.stdout
    assert snapshot(finished_run) == before
    assert "tester/refused" not in hub.repos


def test_no_token_at_all(hub, finished_run, tmp_path):
    done = cli(hub_env(tmp_path, hub, token=None), "push", str(finished_run), "--repo-id", "tester/anonymous")
    assert done.returncode == 2 and "set HF_TOKEN or run `hf auth login`" in done.stderr


def test_train_push_and_reload_a_lora_adapter_on_a_hub_base(hub, checkpoints, data_dir, tmp_path):
    # The base checkpoint lives on the hub, so the adapter names a base anyone can load.
    hub.create_repo("tester/tiny-bert")
    hub.commit("tester/tiny-bert", {p.name: p.read_bytes() for p in checkpoints["bert"].iterdir() if p.is_file()})
    run_dir = tmp_path / "run"
    env = hub_env(tmp_path, hub)
    done = cli(
        env, f"--config-dir={TEST_RECIPES}", "recipe=tiny", "model.source=tester/tiny-bert", f"task.data.source={data_dir}",
        "strategy=lora", "trainer.num_train_epochs=2", "strategy.learning_rate=5e-3", "hub.push=true",
        "hub.repo_id=tester/lora-run", f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    pushed = hub.repos["tester/lora-run"]["branches"]["main"]
    assert "adapter/adapter_model.safetensors" in pushed and "model.safetensors" in pushed
    adapter_branch = hub.repos["tester/lora-run"]["branches"]["adapter"]
    assert json.loads(adapter_branch["adapter_config.json"])["base_model_name_or_path"] == "tester/tiny-bert"

    reader = hub_env(tmp_path / "reader", hub)
    adapter = logits_in_subprocess(
        reader,
        """
        from peft import AutoPeftModelForSequenceClassification
        from transformers import AutoTokenizer
        model = AutoPeftModelForSequenceClassification.from_pretrained("tester/lora-run", revision="adapter", num_labels=2)
        tokenizer = AutoTokenizer.from_pretrained("tester/lora-run")
        """,
    )
    merged = local_logits(run_dir)
    assert torch.allclose(adapter, merged, atol=1e-5)

    # The token was handed to the hub client only: it is in no file of the run, binary or not.
    token = TOKEN.encode()
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert token not in path.read_bytes(), path
    assert TOKEN not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("pooling", "reason"),
    [
        ("architecture", "local path"),
        # peft's Auto classes would rebuild the base as BertForSequenceClassification.
        ("mean", "code beside its weights"),
    ],
)
def test_a_lora_adapter_others_cannot_load_is_not_pushed(pooling, reason, hub, checkpoints, data_dir, tmp_path):
    folder = run(
        compose_tiny(checkpoints["bert"], data_dir, "strategy=lora", "trainer.num_train_epochs=1",
                     f"model.pooling={pooling}"),
        output_dir=tmp_path / "run",
    ).folder  # fmt: skip
    repo = f"tester/unshared-lora-{pooling}"
    done = cli(hub_env(tmp_path, hub), "push", str(folder), "--repo-id", repo)
    assert done.returncode == 0, done.stderr
    assert "adapter/ is not pushed" in done.stderr and reason in done.stderr
    branches = hub.repos[repo]["branches"]
    assert "adapter" not in branches
    assert "model.safetensors" in branches["main"] and not any(p.startswith("adapter/") for p in branches["main"])


def test_push_needs_a_finished_run(hub, tmp_path):
    done = cli(hub_env(tmp_path, hub), "push", str(tmp_path), "--repo-id", "tester/x")
    assert done.returncode == 2 and "is not a finished run folder" in done.stderr


def test_predict_from_a_hub_id_uses_the_pushed_run_settings(hub, checkpoints, tmp_path):
    """`predict org/name` reads the run's config.yaml from the hub: here a multi-label
    threshold of 0.99, so no label is given (the default 0.5 would give some)."""
    from conftest import write_csv
    from test_label_kinds import compose_kind, rows

    write_csv(tmp_path / "train.csv", rows(60, 1))
    cfg = compose_kind(checkpoints["bert"], tmp_path, "task.problem_type=multi_label", "task.columns.label=kinds",
                       "task.label_separator=';'", "task.threshold=0.99", "trainer.num_train_epochs=1")  # fmt: skip
    folder = run(cfg, output_dir=tmp_path / "run").folder
    env = hub_env(tmp_path, hub)
    assert cli(env, "push", str(folder), "--repo-id", "tester/kinds").returncode == 0
    done = cli(hub_env(tmp_path / "reader", hub), "predict", "tester/kinds", *TEXTS)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    from hf_transfer.predict import load_predictor

    local = list(load_predictor(str(folder)).predict([{"text": text} for text in TEXTS], batch_size=8))
    assert [line["labels"] for line in lines] == [[]] * len(TEXTS)
    assert any(score >= 0.5 for line in lines for score in line["scores"].values())  # 0.5 would give some
    assert [line["scores"] for line in lines] == [line["scores"] for line in local]


def test_a_push_that_fails_at_the_end_of_a_run_keeps_the_run(hub, checkpoints, data_dir, tmp_path):
    """hub.endpoint from the config (no HF_ENDPOINT), a refused token: the run is complete and
    stays; the message says how to push it again."""
    run_dir = tmp_path / "run"
    env = hub_env(tmp_path, hub, token="hf_wrong", endpoint=False)
    done = cli(
        env, f"--config-dir={TEST_RECIPES}", "recipe=tiny", f"model.source={checkpoints['bert']}",
        f"task.data.source={data_dir}", "trainer.num_train_epochs=1", "hub.push=true", "hub.repo_id=tester/late",
        f"hub.endpoint={hub.url}", f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert "refused the token" in done.stderr and f"--endpoint {hub.url}" in done.stderr
    assert (run_dir / "metrics.json").exists() and (run_dir / "model.safetensors").exists()
    assert "hf_wrong" not in done.stderr + done.stdout and "tester/late" not in hub.repos
