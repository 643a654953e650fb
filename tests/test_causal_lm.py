"""Causal LM: packing and padding, the end-of-text target, perplexity, generations, strategies."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from conftest import FILLER, NEGATIVE, POSITIVE, compose_tiny
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from hf_transfer.errors import UserError
from hf_transfer.run import run

PATTERN = "the movie was really good and the plot was great"


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    """A text to learn: one sentence again and again, with a few others mixed in."""
    folder = tmp_path_factory.mktemp("text")
    rng = random.Random(0)
    lines = [
        PATTERN if rng.random() < 0.8 else " ".join(rng.sample(FILLER + POSITIVE + NEGATIVE, 6)) for _ in range(200)
    ]
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    (folder / "test.txt").write_text(PATTERN + "\n" + "the plot was really dull\n")
    return folder


def compose_text(checkpoint, folder, *extra):
    return compose_tiny(checkpoint, folder, "task=tiny_text", "strategy.learning_rate=3e-3", *extra)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_training_lowers_held_out_perplexity_and_changes_what_it_writes(checkpoints, text_dir, tmp_path, arch):
    result = run(compose_text(checkpoints[arch], text_dir, "trainer.num_train_epochs=4"), output_dir=tmp_path / "run")
    metrics = result.metrics
    for split in ("validation", "test"):
        assert metrics[split]["perplexity"] < metrics[f"{split}_before_training"]["perplexity"] / 2
        assert metrics[split]["perplexity"] == pytest.approx(math.exp(metrics[split]["loss"]))
    (generation,) = [json.loads(line) for line in (result.folder / "generations.jsonl").read_text().splitlines()]
    assert generation["prompt"] == "the movie was" and generation["before_training"] != generation["after_training"]
    # The saved model, through the pipeline, continues the prompt as the run did (greedy).
    generate = pipeline("text-generation", model=str(result.folder))
    out = generate("the movie was", max_new_tokens=8, do_sample=False, return_full_text=False)[0]["generated_text"]
    assert out == generation["after_training"]


def test_perplexity_matches_a_hand_computed_value(checkpoints, text_dir, tmp_path):
    # One row per evaluation batch, rows of different lengths: a mean of batch means would
    # weigh the short row's tokens more than the long one's.
    cfg = compose_text(checkpoints["gpt2"], text_dir, "task.packing=false", "trainer.num_train_epochs=1",
                       "trainer.per_device_eval_batch_size=1")  # fmt: skip
    result = run(cfg, output_dir=tmp_path / "run")
    model = AutoModelForCausalLM.from_pretrained(result.folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(result.folder)
    total, count = 0.0, 0
    for text in [PATTERN, "the plot was really dull"]:  # the test split; each row ends with end-of-text
        ids = torch.tensor([tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]])
        with torch.no_grad():
            log_probs = torch.log_softmax(model(ids).logits[0, :-1], dim=-1)
        total -= float(log_probs[torch.arange(ids.shape[1] - 1), ids[0, 1:]].sum())
        count += ids.shape[1] - 1
    assert result.metrics["test"]["loss"] == pytest.approx(total / count, abs=1e-4)
    assert result.metrics["test"]["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-4)


def test_the_end_of_text_token_stays_a_target_when_it_is_also_the_pad(checkpoints):
    from hf_transfer.models import ModelConfig, load_tokenizer
    from hf_transfer.tasks.causal_lm import PaddedCausalCollator

    tokenizer = load_tokenizer(ModelConfig(source=str(checkpoints["gpt2"])), "decoder")
    eos = tokenizer.eos_token_id
    assert tokenizer.pad_token_id == eos
    rows = [
        {"input_ids": [5, 6, 7, eos], "attention_mask": [1, 1, 1, 1]},
        {"input_ids": [8, eos], "attention_mask": [1, 1]},
    ]
    batch = PaddedCausalCollator(tokenizer)(rows)
    # The first token of a row is no target (nothing predicts it): the Trainer's label count is
    # then the count of targets.
    assert batch["labels"].tolist() == [[-100, 6, 7, eos], [-100, eos, -100, -100]]
    assert batch["input_ids"].tolist()[1] == [8, eos, eos, eos]


def test_head_only_is_refused_when_the_output_layer_is_tied(checkpoints, text_dir, tmp_path):
    with pytest.raises(UserError, match="ties it to the input embeddings"):
        run(compose_text(checkpoints["gpt2"], text_dir, "strategy=head_only"), output_dir=tmp_path / "run")
    # The same for partial_unfreeze with no blocks: it would train nothing at all.
    with pytest.raises(UserError, match="has no head of its own.*Set strategy.num_layers to 1 or more"):
        run(compose_text(checkpoints["gpt2"], text_dir, "strategy=partial_unfreeze", "strategy.num_layers=0"),
            output_dir=tmp_path / "run")  # fmt: skip
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("strategy", "changes"),
    [
        ("head_only", {"lm_head.weight", "model.norm.weight"}),  # the final norm trains with the head
        ("partial_unfreeze", {"lm_head.weight", "model.norm.weight"}),
    ],
)
def test_strategies_on_an_untied_decoder(checkpoints, text_dir, tmp_path, strategy, changes):
    from test_strategies import ParameterWatch

    watch = ParameterWatch()
    extra = [f"strategy={strategy}", "trainer.num_train_epochs=1"] + (
        ["strategy.num_layers=1"] if strategy == "partial_unfreeze" else []
    )
    run(compose_text(checkpoints["llama"], text_dir, *extra), output_dir=tmp_path / "run", callbacks=[watch])
    top_block = {n for n in watch.before if n.startswith("model.layers.1.")}
    assert watch.changed == changes | (top_block if strategy == "partial_unfreeze" else set())


@pytest.mark.parametrize("strategy", ["lora", "full"])
def test_lora_and_full_on_a_tied_decoder(checkpoints, text_dir, tmp_path, strategy):
    result = run(compose_text(checkpoints["gpt2"], text_dir, f"strategy={strategy}", "trainer.num_train_epochs=2"),
                 output_dir=tmp_path / "run")  # fmt: skip
    assert result.metrics["test"]["perplexity"] < result.metrics["test_before_training"]["perplexity"]
    if strategy == "lora":
        assert result.metrics["trainable_parameters"] < result.metrics["total_parameters"] / 5
        assert (result.folder / "adapter" / "adapter_config.json").exists()


def test_a_text_column_of_a_jsonl_file(checkpoints, tmp_path):
    """Rows of a column, not lines of a file: each is one document ending with end-of-text."""
    folder = tmp_path / "data"
    folder.mkdir()
    for split, count in (("train", 200), ("test", 4)):
        rows = [{"body": PATTERN, "stars": 5}] * count
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose_text(checkpoints["gpt2"], folder, "task.columns.text=body", "task.packing=false",
                       "trainer.num_train_epochs=4", "strategy.learning_rate=1e-2")  # fmt: skip
    result = run(cfg, output_dir=tmp_path / "run")
    assert result.metrics["examples"]["test"] == 4
    assert result.metrics["test"]["perplexity"] < result.metrics["test_before_training"]["perplexity"] / 2
    # The end-of-text token was a target: after "... was great" the model now ends the text.
    tokenizer = AutoTokenizer.from_pretrained(result.folder)
    model = AutoModelForCausalLM.from_pretrained(result.folder).eval()
    with torch.no_grad():
        next_token = model(**tokenizer(PATTERN, return_tensors="pt")).logits[0, -1].argmax()
    assert int(next_token) == tokenizer.eos_token_id
