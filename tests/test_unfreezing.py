"""Gradual unfreezing and layer-wise learning rates: checked on the weights and the optimizer.

Checking `requires_grad` flags proves nothing (the optimizer may not hold the parameters);
these tests watch the weights themselves after every optimizer step, and read each
parameter group's learning rate from the optimizer the Trainer really used.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import cli_env, compose_tiny, tiny_overrides
from transformers import TrainerCallback

from hf_transfer.errors import UserError
from hf_transfer.run import run

# Parameter-name prefixes of each layer of the tiny 2-block models.
LAYERS = {
    "bert": {"top": ("bert.encoder.layer.1.", "bert.pooler."), "bottom": ("bert.encoder.layer.0.",), "embeddings": ("bert.embeddings.",)},
    "gpt2": {"top": ("transformer.h.1.", "transformer.ln_f."), "bottom": ("transformer.h.0.",), "embeddings": ("transformer.wte.", "transformer.wpe.")},
    "llama": {"top": ("model.layers.1.", "model.norm."), "bottom": ("model.layers.0.",), "embeddings": ("model.embed_tokens.",)},
}  # fmt: skip
HEAD = {"bert": "classifier.", "gpt2": "score.", "llama": "score."}


class StepWatch(TrainerCallback):
    """After each optimizer step: which layers differ from their start, and each group's rate."""

    def __init__(self, layers):
        self.layers = layers
        self.first_change: dict[str, int] = {}
        self.rates: dict[int, dict[str, float]] = {}
        self.top_dropout_on: dict[int, bool] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.model = model
        self.start = {n: p.detach().clone() for n, p in model.named_parameters()}

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        for layer, prefixes in self.layers.items():
            if layer in self.first_change:
                continue
            changed = any(
                not torch.equal(p.detach(), self.start[n])
                for n, p in self.model.named_parameters()
                if n.startswith(prefixes)
            )
            if changed:
                self.first_change[layer] = state.global_step
        self.rates[state.global_step] = {g["name"]: g["lr"] for g in optimizer.param_groups if "name" in g}
        # Dropout acts where parameters train: the top block's, once it has thawed.
        dropouts = [
            m
            for n, m in self.model.named_modules()
            if isinstance(m, torch.nn.Dropout) and (n + ".").startswith(self.layers["top"][0])
        ]
        if dropouts:  # Llama's blocks have none
            self.top_dropout_on[state.global_step] = all(m.training for m in dropouts)


def layers_of(arch):
    return {"head": (HEAD[arch],), **LAYERS[arch]}


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_blocks_stay_bit_identical_until_their_step_then_change(checkpoints, data_dir, tmp_path, arch):
    watch = StepWatch(layers_of(arch))
    cfg = compose_tiny(
        checkpoints[arch], data_dir, "strategy=partial_unfreeze", "strategy.num_layers=0",
        "strategy.unfreeze_every=3", "strategy.unfreeze_unit=step", "strategy.max_layers=1",
        "strategy.learning_rate=1e-3", "trainer.max_steps=8", "trainer.per_device_train_batch_size=8",
        "trainer.warmup_steps=0",  # with warmup, the first step has a rate of 0 and moves nothing
    )  # fmt: skip
    result = run(cfg, output_dir=tmp_path / "run", callbacks=[watch])
    # The head trains from the first step; the top block thaws after 3 steps, so its first
    # update is step 4; the bottom block and the embeddings are below max_layers: never.
    assert watch.first_change == {"head": 1, "top": 4}
    # Frozen, the top block ran in eval mode; thawed, in train mode (the frozen set is found
    # again when the trainable set changes).
    if arch != "llama":
        assert watch.top_dropout_on == {step: step >= 4 for step in range(1, 9)}
    events = json.loads((result.folder / "metrics.json").read_text())["unfreezing"]
    assert [e["step"] for e in events] == [0, 3]
    assert events[1]["unfrozen"] == [next(p for p in LAYERS[arch]["top"]).rstrip(".")]
    assert events[0]["trainable_parameters"] < events[1]["trainable_parameters"]


def test_unfreezing_by_epochs_down_to_the_embeddings(checkpoints, data_dir, tmp_path):
    watch = StepWatch(layers_of("bert"))
    cfg = compose_tiny(
        checkpoints["bert"], data_dir, "strategy=partial_unfreeze", "strategy.num_layers=1",
        "strategy.unfreeze_every=1", "strategy.unfreeze_embeddings=true", "trainer.num_train_epochs=3",
        "strategy.learning_rate=1e-3", "trainer.warmup_steps=0",
    )  # fmt: skip
    result = run(cfg, output_dir=tmp_path / "run", callbacks=[watch])
    steps_per_epoch = 5  # 72 training examples in batches of 16
    assert watch.first_change == {
        "head": 1,
        "top": 1,
        "bottom": steps_per_epoch + 1,
        "embeddings": 2 * steps_per_epoch + 1,
    }
    events = result.metrics["unfreezing"]
    assert [(e["step"], e["unfrozen"]) for e in events] == [
        (0, ["(start)"]),
        (steps_per_epoch, ["bert.encoder.layer.0"]),
        (2 * steps_per_epoch, ["embeddings"]),
    ]
    assert events[-1]["trainable_parameters"] == result.metrics["total_parameters"]


def linear_with_warmup(step, warmup, total):
    return step / warmup if step < warmup else max(0.0, (total - step) / (total - warmup))


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_layerwise_rates_follow_decay_schedule_and_warmup(checkpoints, data_dir, tmp_path, arch):
    watch = StepWatch(layers_of(arch))
    cfg = compose_tiny(
        checkpoints[arch], data_dir, "strategy=full", "strategy.layerwise_lr_decay=0.5", "strategy.learning_rate=1e-3",
        "trainer.max_steps=6", "trainer.warmup_steps=2", "trainer.lr_scheduler_type=linear",
        "trainer.per_device_train_batch_size=8",
    )  # fmt: skip
    result = run(cfg, output_dir=tmp_path / "run", callbacks=[watch])
    blocks = {"bert": "bert.encoder.layer", "llama": "model.layers"}[arch]
    depth = {"head": 0, f"{blocks}.1": 1, f"{blocks}.0": 2, "embeddings": 3}
    for step in (1, 2, 4, 6):
        rates = watch.rates[step]
        for name, rate in rates.items():
            by_hand = 1e-3 * 0.5 ** depth[name.removesuffix(" (no decay)")] * linear_with_warmup(step, 2, 6)
            assert rate == pytest.approx(by_hand, rel=1e-9, abs=1e-15), (step, name)
    assert {g["name"].removesuffix(" (no decay)") for g in result.metrics["optimizer_groups"]} == set(depth)
    assert watch.first_change.keys() == {"head", "top", "bottom", "embeddings"}


def test_groups_that_join_later_follow_the_schedule(checkpoints, data_dir, tmp_path):
    watch = StepWatch(layers_of("gpt2"))
    cfg = compose_tiny(
        checkpoints["gpt2"], data_dir, "strategy=partial_unfreeze", "strategy.num_layers=0", "strategy.unfreeze_every=2",
        "strategy.unfreeze_unit=step", "strategy.layerwise_lr_decay=0.8", "strategy.learning_rate=2e-3",
        "trainer.max_steps=6", "trainer.warmup_steps=3", "trainer.per_device_train_batch_size=8",
    )  # fmt: skip
    run(cfg, output_dir=tmp_path / "run", callbacks=[watch])
    # Warmup starts at a rate of 0, so the first step moves nothing; the blocks thaw after
    # steps 2 and 4 and move at steps 3 and 5, at the rates the schedule gives them then.
    assert watch.first_change == {"head": 2, "top": 3, "bottom": 5}
    for step in range(1, 7):
        for name, rate in watch.rates[step].items():
            layer = name.removesuffix(" (no decay)")
            depth = {"head": 0, "transformer.h.1": 1, "transformer.h.0": 2}[layer]
            assert rate == pytest.approx(2e-3 * 0.8**depth * linear_with_warmup(step, 3, 6), rel=1e-9, abs=1e-15)


def test_gradual_unfreezing_is_refused_under_multi_process_training(checkpoints, data_dir, tmp_path):
    argv = [*tiny_overrides(checkpoints["bert"], data_dir), "strategy=partial_unfreeze", "strategy.unfreeze_every=1",
            f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "hf_transfer",
        *argv,
    ]
    done = subprocess.run(command, cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert (
        done.stderr.count(
            "hf-transfer: error: gradual unfreezing (strategy.unfreeze_every) cannot run under DDP with 2 processes"
        )
        == 2
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "setting, wrapper",
    [({"ACCELERATE_USE_FSDP": "true"}, "FSDP"), ({"ACCELERATE_USE_DEEPSPEED": "true"}, "DeepSpeed"), ({}, None)],
)
def test_gradual_unfreezing_is_refused_under_sharding_even_in_one_process(monkeypatch, setting, wrapper):
    """FSDP's flat shards and DeepSpeed's partitions hold the parameters that trained when
    they wrapped the model: blocks thawed later would never train."""
    from types import SimpleNamespace

    from hf_transfer.distributed import check_strategy

    for key, value in setting.items():
        monkeypatch.setenv(key, value)
    gradual = SimpleNamespace(changes_trainable_set=True)
    if wrapper is None:
        check_strategy(1, {}, gradual)
        return
    with pytest.raises(UserError, match=f"cannot run under {wrapper}: it fixes the trainable parameters"):
        check_strategy(1, {}, gradual)
    check_strategy(1, {}, SimpleNamespace(changes_trainable_set=False))
