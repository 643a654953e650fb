"""Loading a checkpoint for a task: fresh heads, random starts, decoders, sequence lengths."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_tiny
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from hf_transfer import assembly, models
from hf_transfer.config import validate
from hf_transfer.models import ModelConfig
from hf_transfer.run import run
from hf_transfer.tasks import task_class


def classification_model(checkpoint, data_dir, *extra):
    """The run's starting model for the tiny sentiment task, and the checkpoint's config."""
    cfg = validate(compose_tiny(checkpoint, data_dir, *extra))
    task = task_class("text_classification")(cfg.task, seed=0)
    data = task.load()
    return assembly.model(assembly.checkpoint(cfg, task), task, data)


def test_a_checkpoint_with_a_same_shape_head_gets_a_fresh_one(bert_with_head, data_dir):
    old = AutoModelForSequenceClassification.from_pretrained(bert_with_head)
    new = classification_model(bert_with_head, data_dir)
    assert old.classifier.weight.shape == new.classifier.weight.shape
    assert not torch.equal(old.classifier.weight, new.classifier.weight)
    assert torch.all(new.classifier.bias == 0)  # the model's own initialisation, not a leftover
    assert abs(float(new.classifier.weight.detach().std()) - old.config.initializer_range) < 0.01
    for name, parameter in old.bert.state_dict().items():
        assert torch.equal(parameter, new.bert.state_dict()[name]), name


def test_pretrained_false_is_the_same_architecture_with_random_weights(checkpoints, data_dir):
    scratch = classification_model(checkpoints["bert"], data_dir, "model.pretrained=false")
    pretrained = AutoModel.from_pretrained(checkpoints["bert"])
    scratch_base = scratch.bert.state_dict()
    assert scratch_base.keys() == pretrained.state_dict().keys()
    differs = [
        n for n, p in pretrained.state_dict().items() if p.is_floating_point() and not torch.equal(p, scratch_base[n])
    ]
    assert "embeddings.word_embeddings.weight" in differs and "encoder.layer.0.attention.self.query.weight" in differs


def test_random_start_runs_and_is_recorded(checkpoints, data_dir, tmp_path):
    result = run(
        compose_tiny(checkpoints["llama"], data_dir, "model.pretrained=false", "trainer.num_train_epochs=1"),
        output_dir=tmp_path / "run",
    )
    assert result.metrics["pretrained"] is False


def test_family_detection(checkpoints):
    for arch, family in {
        "bert": "encoder",
        "distilbert": "encoder",
        "roberta": "encoder",
        "gpt2": "decoder",
        "llama": "decoder",
    }.items():
        assert models.detect_family(AutoConfig.from_pretrained(checkpoints[arch])) == family
    assert models.detect_family(AutoConfig.from_pretrained(checkpoints["bert"]), "decoder") == "decoder"


def test_a_decoder_tokenizer_gets_a_pad_token_and_right_padding(checkpoints):
    tokenizer = models.load_tokenizer(ModelConfig(source=str(checkpoints["gpt2"])), "decoder")
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.padding_side == "right"


def test_default_max_length_is_the_smaller_limit(checkpoints):
    tokenizer = AutoTokenizer.from_pretrained(checkpoints["bert"])
    config = AutoConfig.from_pretrained(checkpoints["bert"])
    assert models.default_max_length(tokenizer, config) == 64
    tokenizer.model_max_length = int(1e30)  # what some tokenizers report
    assert models.default_max_length(tokenizer, config) == 64
    config.max_position_embeddings = 32
    assert models.default_max_length(tokenizer, config) == 32
    roberta = AutoConfig.from_pretrained(checkpoints["roberta"])  # 66 positions, 2 reserved
    assert models.default_max_length(tokenizer, roberta) == 64


def test_max_length_truncates(checkpoints, data_dir, tmp_path):
    from transformers import TrainerCallback

    class Lengths(TrainerCallback):
        def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
            self.longest = max(len(ids) for ids in train_dataloader.dataset["input_ids"])

    lengths = Lengths()
    result = run(
        compose_tiny(checkpoints["bert"], data_dir, "task.max_length=4", "trainer.num_train_epochs=1"),
        output_dir=tmp_path / "run",
        callbacks=[lengths],
    )
    assert result.metrics["max_length"] == 4 and lengths.longest == 4  # the texts are longer: cut


def test_anatomy_of_each_architecture(checkpoints):
    expected = {
        "bert": (
            "bert",
            ["classifier"],
            "bert.encoder.layer.1",
            ["bert.pooler.dense.weight", "bert.pooler.dense.bias"],
        ),
        "distilbert": ("distilbert", ["pre_classifier", "classifier"], "distilbert.transformer.layer.1", []),
        "gpt2": ("transformer", ["score"], "transformer.h.1", ["transformer.ln_f.weight", "transformer.ln_f.bias"]),
        "llama": ("model", ["score"], "model.layers.1", ["model.norm.weight"]),
    }
    for arch, (base, head, top, above) in expected.items():
        model = AutoModelForSequenceClassification.from_pretrained(checkpoints[arch], num_labels=2)
        parts = models.anatomy(model)
        assert (parts.base, parts.head, parts.blocks[-1], parts.above) == (base, head, top, above)
        assert (
            len(parts.blocks) == 2
            and parts.below
            and all("embed" in n or "wte" in n or "wpe" in n for n in parts.below)
        )


def test_gguf_without_the_gguf_package_says_what_to_install(tmp_path, monkeypatch):
    import sys

    from hf_transfer.errors import UserError

    folder = tmp_path / "gguf"
    folder.mkdir()
    (folder / "model.gguf").write_bytes(b"GGUF")
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(sys.modules, "gguf", None)  # as if it were not installed
    with pytest.raises(UserError, match=r"needs the gguf package: pip install"):
        models.checkpoint_location(ModelConfig(source=str(folder), gguf_file="model.gguf"))
