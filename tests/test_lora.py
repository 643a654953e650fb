"""LoRA runs: the adapter keeps its head, and the merged model at the root predicts the same."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import compose_tiny
from peft import AutoPeftModelForSequenceClassification, PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_transfer.run import run

TEXTS = ["the movie was good", "awful plot and dull acting", "a wonderful film", "it was a boring story"]


def logits(model, tokenizer, texts=TEXTS):
    model.eval()
    with torch.no_grad():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits


@pytest.mark.parametrize("arch", ["distilbert", "gpt2"])
def test_adapter_and_merged_model_predict_the_same(checkpoints, data_dir, tmp_path, arch):
    cfg = compose_tiny(
        checkpoints[arch], data_dir, "strategy=lora", "trainer.num_train_epochs=2", "strategy.learning_rate=5e-3"
    )
    folder = run(cfg, output_dir=tmp_path / "run").folder
    tokenizer = AutoTokenizer.from_pretrained(folder)

    merged = AutoModelForSequenceClassification.from_pretrained(folder)
    assert not any("lora" in name for name, _ in merged.named_parameters())

    # The adapter on a fresh copy of the base checkpoint: the head comes from the adapter.
    base = AutoModelForSequenceClassification.from_pretrained(
        checkpoints[arch], num_labels=2, pad_token_id=tokenizer.pad_token_id
    )
    adapted = PeftModel.from_pretrained(base, folder / "adapter")
    expected = logits(merged, tokenizer)
    assert torch.allclose(logits(adapted, tokenizer), expected, atol=1e-5)

    # And through peft's Auto class, which reads the base from adapter_config.json.
    auto = AutoPeftModelForSequenceClassification.from_pretrained(
        folder / "adapter", num_labels=2, pad_token_id=tokenizer.pad_token_id
    )
    assert torch.allclose(logits(auto, tokenizer), expected, atol=1e-5)

    # The trained head differs from what the base checkpoint would give: it was saved, not lost.
    fresh = AutoModelForSequenceClassification.from_pretrained(
        checkpoints[arch], num_labels=2, pad_token_id=tokenizer.pad_token_id
    )
    assert not torch.allclose(logits(fresh, tokenizer), expected, atol=1e-3)

    adapter_config = json.loads((folder / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["modules_to_save"]
    assert (adapter_config["fan_in_fan_out"] is True) == (arch == "gpt2")


def test_lora_run_reloads_with_identical_predictions(checkpoints, data_dir, tmp_path):
    folder = run(compose_tiny(checkpoints["bert"], data_dir, "strategy=lora"), output_dir=tmp_path / "run").folder
    tokenizer = AutoTokenizer.from_pretrained(folder)
    first = logits(AutoModelForSequenceClassification.from_pretrained(folder), tokenizer)
    second = logits(AutoModelForSequenceClassification.from_pretrained(folder), tokenizer)
    assert torch.equal(first, second)
    records = [json.loads(line) for line in (folder / "predictions_test.jsonl").read_text().splitlines()]
    reloaded = torch.softmax(
        logits(AutoModelForSequenceClassification.from_pretrained(folder), tokenizer, [r["text"] for r in records]), -1
    )
    assert torch.allclose(reloaded.max(-1).values, torch.tensor([r["score"] for r in records]), atol=1e-5)


@pytest.mark.parametrize("strategy", ["lora", "full"])
def test_the_sharded_save_path_writes_the_model_that_predicted(checkpoints, data_dir, tmp_path, monkeypatch, strategy):
    """Under FSDP or ZeRO-3 the Trainer gathers the weights and LoRA merges into a fresh base
    copy. No sharding on CPU, so the run is told it is sharded: the save path itself runs,
    gathering being one process's plain state dict."""
    from hf_transfer import distributed

    monkeypatch.setattr(distributed, "is_sharded", lambda trainer: True)
    cfg = compose_tiny(checkpoints["bert"], data_dir, f"strategy={strategy}", "trainer.num_train_epochs=2")
    folder = run(cfg, output_dir=tmp_path / "run").folder
    assert not (folder / "training_args.bin").exists() and not (folder / "adapter" / "training_args.bin").exists()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    records = [json.loads(line) for line in (folder / "predictions_test.jsonl").read_text().splitlines()]
    reloaded = torch.softmax(
        logits(AutoModelForSequenceClassification.from_pretrained(folder), tokenizer, [r["text"] for r in records]), -1
    )
    assert torch.allclose(reloaded.max(-1).values, torch.tensor([r["score"] for r in records]), atol=1e-5)
