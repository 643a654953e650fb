"""What the device decides: hub kernels (never fetched offline), precision and loader defaults,
shapes padded to a multiple on a GPU; and what a run records of it."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import compose_tiny
from huggingface_hub import constants

from hf_transfer import assembly, device
from hf_transfer.config import validate
from hf_transfer.errors import UserError
from hf_transfer.run import run
from hf_transfer.tasks import task_class


def never() -> bool:
    raise AssertionError("asked although the answer was already known")


def decide(setting="auto", env=None, on_accelerator=True, package=True, cached=lambda: False, reachable=never):
    return device.decide_hub_kernels(setting, env, on_accelerator, package, cached, reachable)


@pytest.fixture
def online(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_hub_kernels_are_never_fetched_offline(offline, caplog):
    assert decide() is False
    with caplog.at_level(logging.WARNING, "hf_transfer.device"):
        assert decide(True) is False
    assert "HF_HUB_OFFLINE" in caplog.text and "running without them" in caplog.text
    assert decide(cached=lambda: True) is True  # a user who fetched them once keeps them offline


def test_hub_kernels_online_where_the_hub_answers(online):
    assert decide(reachable=lambda: True) is True
    assert decide(reachable=lambda: False) is False
    assert decide(reachable=lambda: False, cached=lambda: True) is True
    assert decide(True) is True  # asked for: no check of the network


def test_users_switches_win(online, caplog):
    assert decide(False) is False
    for value in ("NO", "0", "false", "off"):
        assert decide("auto", env=value) is False
    with caplog.at_level(logging.WARNING, "hf_transfer.device"):
        assert decide(True, env="NO") is False
        assert decide(True, package=False) is False
    assert "USE_HUB_KERNELS=NO" in caplog.text and "pip install kernels" in caplog.text
    assert decide(on_accelerator=False) is False  # nothing is kernelized on the CPU
    assert decide(env="YES", reachable=lambda: True) is True


def test_model_kernels_values_are_checked(checkpoints, data_dir):
    with pytest.raises(UserError, match="model.kernels"):
        validate(compose_tiny(checkpoints["bert"], data_dir, "model.kernels=sometimes"))
    assert validate(compose_tiny(checkpoints["bert"], data_dir, "model.kernels=false")).model.kernels is False


@pytest.fixture
def load_calls(monkeypatch):
    """The keyword arguments of every from_pretrained call that reaches a model class."""
    from transformers import PreTrainedModel

    calls = []
    original = PreTrainedModel.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        calls.append(kwargs)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(spy))
    return calls


def test_loading_on_a_gpu_offline_asks_for_no_hub_kernels(checkpoints, data_dir, load_calls, offline, monkeypatch):
    """What a run on a GPU passes to from_pretrained offline (transformers' default would fetch)."""
    monkeypatch.setattr(device, "accelerator", lambda: "cuda")
    monkeypatch.setattr(device, "_kernels_package", lambda: True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(data_dir / "no-cache-here"))
    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)
    cfg = validate(compose_tiny(checkpoints["bert"], data_dir))
    task = task_class("text_classification")(cfg.task, seed=0)
    data = task.load()
    model = assembly.model(assembly.checkpoint(cfg, task), task, data)
    assert load_calls and all(call.get("use_kernels") is False for call in load_calls)
    assert model.use_kernels is False
    # Cached kernels would be used: the decision reaches from_pretrained.
    monkeypatch.setattr(device, "_kernels_cached", lambda: True)
    assert device.hub_kernels("auto") is True


def test_cpu_defaults_leave_training_as_it_was():
    assert device.trainer_defaults({}, None) == {"dataloader_pin_memory": False}
    assert device.pad_multiple("cpu") is None


def test_gpu_defaults(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    defaults = device.trainer_defaults({}, "cuda")
    assert defaults["bf16"] is True and "fp16" not in defaults
    assert defaults["dataloader_pin_memory"] is True and defaults["accelerator_config"] == {"non_blocking": True}
    assert defaults["logging_nan_inf_filter"] is False  # no read of the loss on the host each step
    assert "bf16" not in device.trainer_defaults({"fp16": True}, "cuda")  # the user's precision stays
    assert "bf16" not in device.trainer_defaults({"bf16": False}, "cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert device.trainer_defaults({}, "cuda")["fp16"] is True  # an older GPU: fp16 autocast
    assert device.pad_multiple("cuda") == device.PAD_MULTIPLE


@pytest.mark.parametrize("task_type", ["text_classification", "token_classification", "causal_lm"])
def test_batches_are_padded_to_the_multiple_asked_for(checkpoints, task_type):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoints["gpt2" if task_type == "causal_lm" else "bert"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    features = [{"input_ids": [5, 6, 7, 8, 9], "attention_mask": [1] * 5},
                {"input_ids": [5, 6, 7], "attention_mask": [1] * 3}]  # fmt: skip
    if task_type == "token_classification":
        features = [{**f, "labels": [0] * len(f["input_ids"])} for f in features]
    elif task_type == "text_classification":
        features = [{**f, "labels": 1} for f in features]
    task = _task(task_type)
    assert task.collator(tokenizer)(features)["input_ids"].shape[1] == 5
    padded = task.collator(tokenizer, 16)(features)
    assert padded["input_ids"].shape[1] == 16
    assert padded["attention_mask"][1].sum() == 3  # padding stays masked
    if "labels" in padded and padded["labels"].dim() == 2:
        assert (padded["labels"][1, 3:] == -100).all()


def _task(task_type):
    """A task object for its collator alone (no config, no data)."""
    cls = task_class(task_type)
    task = cls.__new__(cls)
    task.config = cls.Config.__new__(cls.Config)
    if task_type == "causal_lm":
        task.config.packing = False
    return task


def test_a_run_records_its_device(checkpoints, data_dir, tmp_path):
    result = run(compose_tiny(checkpoints["bert"], data_dir, "trainer.num_train_epochs=1"), tmp_path / "run")
    recorded = json.loads((result.folder / "metrics.json").read_text())["device"]
    assert recorded == {"type": "cpu", "name": "cpu", "precision": "fp32", "loader_workers": 0,
                        "pad_to_multiple_of": None, "hub_kernels": False, "torch_compile": False}  # fmt: skip
    assert result.metrics["total_flos"] > 0


def test_batches_padded_as_on_a_gpu_train_as_before_with_the_feature_cache(checkpoints, data_dir, tmp_path,
                                                                           monkeypatch):  # fmt: skip
    """Padded to 16 tokens (the GPU's default here on the CPU): the cached frozen blocks stand
    in for padded rows as they do for rows padded to the batch's longest."""
    from test_feature_cache import assert_same_training

    from hf_transfer import assembly

    asked = []
    monkeypatch.setattr(assembly, "pad_multiple", lambda device_type: asked.append(device_type) or 16)
    cached, plain = assert_same_training(tmp_path, checkpoints["bert"], data_dir, "strategy=head_only")
    assert cached.metrics["feature_cache"]["used"] is True and asked == ["cpu", "cpu"]  # both runs padded to 16


def test_use_cpu_on_a_gpu_machine_gets_the_cpu_defaults(checkpoints, data_dir, tmp_path, monkeypatch):
    from hf_transfer import training

    monkeypatch.setattr(training, "accelerator", lambda: "cuda")  # a GPU machine, told to use its CPU
    cfg = validate(compose_tiny(checkpoints["bert"], data_dir))  # the tiny recipe sets trainer.use_cpu=true
    task = task_class("text_classification")(cfg.task, cfg.seed)
    args = training.arguments(training.trainer_settings(cfg, task, tmp_path))
    assert args.bf16 is False and args.dataloader_pin_memory is False
