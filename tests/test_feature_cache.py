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
from test_token_classification import ner_data  # noqa: F401, F811 - the fixture, shared
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
    if (tmp_path / "plain" / "predictions_test.jsonl").exists():  # a causal LM writes none
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


@pytest.mark.parametrize("arch", ["bert", "roberta", "llama"])
@pytest.mark.parametrize("strategy", ["head_only", "partial_unfreeze"])
def test_cached_token_classification_trains_as_uncached(checkpoints, ner_data, tmp_path, arch, strategy):  # noqa: F811
    extra = ["strategy.num_layers=1"] if strategy == "partial_unfreeze" else []
    assert_same_training(tmp_path, checkpoints[arch], ner_data, f"strategy={strategy}", *extra, task="tiny_ner")


class StartOfTraining(TrainerCallback):
    """The parameters as the strategy's own training starts (after any head-first probe)."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.parameters = {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_head_first_trains_the_head_alone_then_the_strategy_from_it(checkpoints, data_dir, tmp_path, strategy):
    from safetensors.torch import load_file as load

    starts = {}
    for epochs in (0, 2):
        start = StartOfTraining()
        cfg = compose_tiny(checkpoints["bert"], data_dir, f"strategy={strategy}", f"strategy.head_epochs={epochs}")
        result = run(cfg, output_dir=tmp_path / f"probe{epochs}", callbacks=[start])
        starts[epochs] = start.parameters
    pretrained = load(checkpoints["bert"] / "model.safetensors")
    probe = result.metrics["head_probe"]
    assert probe["epochs"] == 2 and probe["feature_cache"]["used"] and probe["feature_cache"]["frozen_blocks"] == 2
    assert 0 <= probe["validation"]["accuracy"] <= 1 and "loss" in probe["validation"]
    head = [n for n in starts[2] if "classifier" in n]
    assert head and all(not torch.equal(starts[0][n], starts[2][n]) for n in head)  # the probe trained the head
    # ...and nothing of the pretrained base, but for the pooler where the strategy keeps the whole model.
    base = {n: p for n, p in starts[2].items() if "lora_" not in n and "classifier" not in n}
    moved = {n for n, p in base.items() if not torch.equal(p, pretrained[_pretrained_name(n)])}
    assert moved == ({"bert.pooler.dense.weight", "bert.pooler.dense.bias"} if strategy == "full" else set()), moved
    assert not (tmp_path / "probe2" / ".scratch").exists()  # the probe's head went with the scratch space


def _pretrained_name(name):
    # The checkpoint is a bare BertModel; peft adds its own prefixes and wrappers.
    name = name.removeprefix("base_model.model.").replace(".base_layer", "")
    return name.removeprefix("bert.")


def test_a_disk_cache_is_reused_and_an_unfinished_one_is_not(checkpoints, data_dir, tmp_path, monkeypatch):
    root = tmp_path / "cache_root"
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(root))
    on_disk = ("strategy=head_only", "strategy.cache_memory_share=0")
    first, _, first_weights = train(tmp_path / "first", checkpoints["bert"], data_dir, "true", *on_disk)
    assert first.metrics["feature_cache"]["storage"] == "disk" and not first.metrics["feature_cache"]["reused"]
    (folder,) = (root / "features").iterdir()
    again, _, again_weights = train(tmp_path / "again", checkpoints["bert"], data_dir, "true", *on_disk)
    assert again.metrics["feature_cache"]["reused"]
    # A build that never finished (killed before meta.json, written last) is built again.
    (folder / "meta.json").unlink()
    rebuilt, _, rebuilt_weights = train(tmp_path / "rebuilt", checkpoints["bert"], data_dir, "true", *on_disk)
    assert not rebuilt.metrics["feature_cache"]["reused"] and (folder / "meta.json").is_file()
    memory, _, memory_weights = train(tmp_path / "memory", checkpoints["bert"], data_dir, "true", "strategy=head_only")
    assert memory.metrics["feature_cache"]["storage"] == "memory"
    for weights in (again_weights, rebuilt_weights, memory_weights):
        assert all(torch.equal(weights[n], t) for n, t in first_weights.items())
    assert [p.name for p in (root / "features").iterdir()] == [folder.name]  # no partial folder left


def test_without_a_cache_root_the_disk_cache_lives_in_the_run_folder_until_it_is_complete(
    checkpoints, data_dir, tmp_path, monkeypatch
):
    seen = {}

    class LookInside(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            seen["scratch"] = sorted(p.name for p in (tmp_path / "run" / ".scratch").iterdir())

    monkeypatch.delenv("HF_TRANSFER_CACHE")
    cfg = compose_tiny(checkpoints["bert"], data_dir, "strategy=head_only", "strategy.cache_memory_share=0")
    result = run(cfg, output_dir=tmp_path / "run", callbacks=[LookInside()])
    assert result.metrics["feature_cache"]["storage"] == "disk" and len(seen["scratch"]) == 1
    assert not (tmp_path / "run" / ".scratch").exists()


@pytest.mark.parametrize(
    "overrides, reason",
    [
        (["strategy=full"], "strategy full trains every block"),
        (["strategy=lora"], "strategy lora trains every block"),
        (["strategy=partial_unfreeze", "strategy.num_layers=2"], "all 2 blocks train"),
        (["strategy=head_only", "trainer.max_steps=2"], "training sees 32 examples, fewer than the"),
        (["strategy=head_only", "strategy.cache=false"], "strategy.cache=false"),
    ],
)
def test_auto_caches_only_where_it_pays(checkpoints, data_dir, tmp_path, overrides, reason):
    result = run(compose_tiny(checkpoints["bert"], data_dir, *overrides), output_dir=tmp_path / "run")
    record = result.metrics["feature_cache"]
    assert not record["used"] and record["reason"].startswith(reason), record


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["strategy=full", "strategy.cache=true"], "strategy.cache=true, but strategy full trains every block"),
        (["strategy=head_only", "strategy.cache=yes"], "key 'strategy.cache' must be"),
        (["strategy=head_only", "strategy.cache_memory_share=2"], "strategy.cache_memory_share must be between"),
        (["strategy=head_only", "strategy.head_epochs=1"], "strategy.head_epochs is for full, partial_unfreeze"),
        (["strategy=full", "strategy.head_epochs=-1"], "strategy.head_epochs must be 0"),
    ],
)
def test_cache_settings_are_checked_before_anything_loads(checkpoints, data_dir, overrides, message):
    from hf_transfer.config import validate
    from hf_transfer.errors import UserError

    with pytest.raises(UserError, match=message.replace(".", r"\.")):
        validate(compose_tiny(checkpoints["bert"], data_dir, *overrides))


def test_cache_true_where_it_cannot_be_exact_is_refused(checkpoints, data_dir, tmp_path):
    from hf_transfer.errors import UserError

    cfg = compose_tiny(checkpoints["bert"], data_dir, "strategy=partial_unfreeze", "strategy.num_layers=2",
                       "strategy.cache=true")  # fmt: skip
    with pytest.raises(UserError, match="strategy.cache=true, but nothing can be cached: all 2 blocks train"):
        run(cfg, output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("packing", ["true", "false"])
@pytest.mark.parametrize("strategy", ["head_only", "partial_unfreeze"])
def test_cached_causal_lm_trains_as_uncached(checkpoints, tmp_path_factory, tmp_path, strategy, packing):
    """A decoder's own output layer (untied, Llama-style) on cached features: packed blocks of
    one length (the collator does not pad them) and padded lines."""
    import random

    from conftest import FILLER, NEGATIVE, POSITIVE

    folder = tmp_path_factory.mktemp("text")
    rng = random.Random(0)
    lines = [" ".join(rng.sample(FILLER + POSITIVE + NEGATIVE, rng.randint(3, 9))) for _ in range(120)]
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    (folder / "test.txt").write_text("\n".join(lines[:8]) + "\n")
    extra = ["strategy.num_layers=1"] if strategy == "partial_unfreeze" else []
    assert_same_training(tmp_path, checkpoints["llama"], folder, f"strategy={strategy}", f"task.packing={packing}",
                         "strategy.learning_rate=3e-3", "trainer.num_train_epochs=4", *extra, task="tiny_text")  # fmt: skip
