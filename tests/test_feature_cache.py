"""The frozen part computed once (feature_cache.py): a cached run is the uncached run, faster.

For each architecture, a run on cached features and one without, same seed, must log the same
losses at every step and end with the same trained parameters (within float tolerance: the
frozen blocks saw other paddings), for head_only and partial_unfreeze, with and without
gradual unfreezing, for sequence and token classification.
"""

from __future__ import annotations

import pytest
import torch
from conftest import ARCHITECTURES, compose_tiny
from safetensors.torch import load_file
from transformers import TrainerCallback

from hf_transfer.run import run


class LossLog(TrainerCallback):
    def __init__(self):
        self.losses = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append((state.global_step, logs["loss"]))


def train(folder, checkpoint, data, cache, *overrides, task=None):
    log = LossLog()
    extra = [f"task={task}"] if task else []
    cfg = compose_tiny(checkpoint, data, *extra, f"strategy.cache={cache}", "seed=7", *overrides)
    result = run(cfg, output_dir=folder, callbacks=[log])
    return result, log.losses, load_file(folder / "model.safetensors")


def assert_same_training(tmp_path, checkpoint, data, *overrides, task=None):
    cached, cached_losses, cached_weights = train(tmp_path / "cached", checkpoint, data, "true", *overrides, task=task)
    plain, plain_losses, plain_weights = train(tmp_path / "plain", checkpoint, data, "false", *overrides, task=task)
    record = cached.metrics["feature_cache"]
    assert record["used"] and record["cached_batches"] > 0 and record["uncached_batches"] == 0, record
    assert plain.metrics["feature_cache"] == {"used": False, "reason": "strategy.cache=false"}
    assert [s for s, _ in cached_losses] == [s for s, _ in plain_losses] and len(cached_losses) >= 3
    for (step, ours), (_, theirs) in zip(cached_losses, plain_losses):
        assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-5), f"loss at step {step}"
    assert cached_weights.keys() == plain_weights.keys()
    for name, tensor in plain_weights.items():
        torch.testing.assert_close(cached_weights[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    assert cached.metrics["test"]["loss"] == pytest.approx(plain.metrics["test"]["loss"], rel=1e-4)
    predicted = [(tmp_path / name / "predictions_test.jsonl").read_text() for name in ("cached", "plain")]
    assert predicted[0] == predicted[1]
    return cached, plain


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("strategy", ["head_only", "partial_unfreeze"])
def test_cached_sequence_classification_trains_as_uncached(checkpoints, data_dir, tmp_path, arch, strategy):
    extra = ["strategy.num_layers=1"] if strategy == "partial_unfreeze" else []
    cached, _ = assert_same_training(tmp_path, checkpoints[arch], data_dir, f"strategy={strategy}", *extra)
    assert cached.metrics["feature_cache"]["frozen_blocks"] == (2 if strategy == "head_only" else 1)


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_cached_gradual_unfreezing_trains_as_uncached(checkpoints, data_dir, tmp_path, arch):
    # Block 1 thaws after the first epoch, block 0 never: the cache holds block 0's output.
    cached, _ = assert_same_training(
        tmp_path, checkpoints[arch], data_dir, "strategy=partial_unfreeze", "strategy.num_layers=0",
        "strategy.unfreeze_every=1", "strategy.max_layers=1",
    )  # fmt: skip
    assert cached.metrics["feature_cache"]["frozen_blocks"] == 1
    thawed = [name for event in cached.metrics["unfreezing"] for name in event["unfrozen"]]
    assert thawed[-1].endswith(".1"), thawed  # block 1 did thaw, while block 0 stayed cached


@pytest.fixture(scope="module")
def ner_data(tmp_path_factory):
    import random

    from test_token_classification import sentence, write_conll

    folder = tmp_path_factory.mktemp("ner")
    rng = random.Random(0)
    write_conll(folder / "train.conll", [sentence(rng) for _ in range(120)])
    write_conll(folder / "test.conll", [sentence(rng) for _ in range(30)])
    return folder


@pytest.mark.parametrize("arch", ["bert", "roberta", "llama"])
@pytest.mark.parametrize("strategy", ["head_only", "partial_unfreeze"])
def test_cached_token_classification_trains_as_uncached(checkpoints, ner_data, tmp_path, arch, strategy):
    extra = ["strategy.num_layers=1"] if strategy == "partial_unfreeze" else []
    assert_same_training(tmp_path, checkpoints[arch], ner_data, f"strategy={strategy}", *extra, task="tiny_ner")
