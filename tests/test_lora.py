"""LoRA runs: the adapter keeps its head, and the merged model at the root predicts the same."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import compose_tiny, tiny_overrides
from peft import AutoPeftModelForSequenceClassification, PeftModel
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

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


# Settings under which tiny BERT learns the sentiment task well enough to predict both labels.
LEARNS = {
    "full": ["trainer.num_train_epochs=8", "strategy.learning_rate=3e-3"],
    "lora": ["trainer.num_train_epochs=10", "strategy.learning_rate=2e-2", "strategy.r=16"],
}


def predicted(model, tokenizer, texts):
    """(label name, probability) of each text, as the run's prediction records give them."""
    probabilities = torch.softmax(logits(model, tokenizer, texts), -1)
    return [(model.config.id2label[int(i)], float(p)) for p, i in zip(*probabilities.max(-1))]


def check_same_predictions(folder, model, tokenizer):
    """`model`, reloaded from the run folder, predicts every test text as the run did before saving."""
    records = [json.loads(line) for line in (folder / "predictions_test.jsonl").read_text().splitlines()]
    assert len(records) == 32
    assert {r["prediction"] for r in records} == {"neg", "pos"}  # a trained model: not one label for all
    again = predicted(model, tokenizer, [r["text"] for r in records])
    assert [label for label, _ in again] == [r["prediction"] for r in records]
    assert [score for _, score in again] == pytest.approx([r["score"] for r in records], abs=2e-6)


def test_lora_run_reloads_with_identical_predictions(checkpoints, data_dir, tmp_path):
    """The merged model at the root, and the adapter on a fresh base, both predict what the run
    predicted in memory before it saved anything."""
    cfg = compose_tiny(checkpoints["bert"], data_dir, "strategy=lora", *LEARNS["lora"])
    folder = run(cfg, output_dir=tmp_path / "run").folder
    tokenizer = AutoTokenizer.from_pretrained(folder)
    check_same_predictions(folder, AutoModelForSequenceClassification.from_pretrained(folder), tokenizer)
    check_same_predictions(folder, adapter_on_fresh_base(folder, checkpoints["bert"]), tokenizer)


def adapter_on_fresh_base(folder, checkpoint):
    """The run's adapter (with its head) on a fresh copy of the base checkpoint, through peft."""
    config = AutoConfig.from_pretrained(folder)
    base = AutoModelForSequenceClassification.from_pretrained(
        checkpoint, num_labels=2, id2label=config.id2label, label2id=config.label2id
    )
    return PeftModel.from_pretrained(base, folder / "adapter")


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_the_sharded_save_path_writes_the_model_that_predicted(checkpoints, data_dir, tmp_path, strategy):
    """Under FSDP the run gathers the weights through the Trainer (LoRA: the adapter, merged into a
    fresh base copy). A real FSDP launch of the shipped config, in one process on the CPU (see
    test_distributed.FSDP_ON_CPU): the model is FSDP-wrapped and the state dict gathered from it;
    with one process, each shard is the whole model."""
    from test_distributed import fsdp_launch

    folder = tmp_path / "run"
    learns = LEARNS[strategy]
    argv = [*tiny_overrides(checkpoints["bert"], data_dir), f"strategy={strategy}", *learns, f"hydra.run.dir={folder}"]
    done, report = fsdp_launch(tmp_path, argv)
    if strategy == "lora" and "FSDP assumes" in done.stderr and "base_layer.weight is in the state_dict" in done.stderr:
        # Found here, not fixed yet: torch FSDP1's full state dict of the peft model (shipped config:
        # use_orig_params, transformer-based wrap, peft's wrap policy for the adapters) lacks the
        # frozen base_layer weights, both at the Trainer's checkpoints and in Lora.save_sharded.
        pytest.xfail("LoRA under FSDP1: the full state dict lacks the frozen base_layer weights")
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads((folder / "metrics.json").read_text())["distributed"]["wrapped_as"] == "FullyShardedDataParallel"
    assert report["sharded"] is True and report["saved_by"] == ["save_sharded"]
    assert not (folder / "training_args.bin").exists() and not (folder / "adapter" / "training_args.bin").exists()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    check_same_predictions(folder, AutoModelForSequenceClassification.from_pretrained(folder), tokenizer)
    if strategy == "lora":
        check_same_predictions(folder, adapter_on_fresh_base(folder, checkpoints["bert"]), tokenizer)
