"""trainer.torch_compile=true works with every strategy and task: a compiled run trains the same
parameters to the same values as an eager one (TorchDynamo's aot_eager backend here: the graph
capture a GPU run compiles, without a compiler on the CPU), and says it was compiled."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_tiny
from safetensors.torch import load_file
from test_causal_lm import compose_text, text_dir  # noqa: F401 - a fixture
from test_token_classification import compose_ner, ner_data  # noqa: F401 - a fixture

from hf_transfer.run import run

COMPILED = ("trainer.torch_compile=true", "trainer.torch_compile_backend=aot_eager")


def eager_and_compiled(compose, tmp_path, *extra):
    from torch._dynamo.utils import counters

    eager = run(compose(*extra), tmp_path / "eager")
    torch._dynamo.reset()
    counters.clear()
    compiled = run(compose(*extra, *COMPILED), tmp_path / "compiled")
    assert counters["stats"]["unique_graphs"] > 0  # TorchDynamo did capture the model's graphs
    assert compiled.metrics["device"]["torch_compile"] is True and eager.metrics["device"]["torch_compile"] is False
    return eager, compiled


def assert_same_weights(eager, compiled):
    before, after = load_file(eager.folder / "model.safetensors"), load_file(compiled.folder / "model.safetensors")
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        torch.testing.assert_close(after[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    assert compiled.metrics["train_loss"] == pytest.approx(eager.metrics["train_loss"], rel=1e-4)


@pytest.mark.parametrize(
    "strategy",
    [
        ("strategy=full",),
        ("strategy=head_only",),  # the feature cache stands aside: compiled blocks are not replaced
        ("strategy=partial_unfreeze", "strategy.num_layers=1", "strategy.unfreeze_every=1"),  # thaws mid-run
        ("strategy=lora",),
    ],
    ids=lambda s: s[0].removeprefix("strategy="),
)
def test_each_strategy_compiles_to_the_eager_result(checkpoints, data_dir, tmp_path, strategy):
    def compose(*extra):
        return compose_tiny(checkpoints["bert"], data_dir, "trainer.num_train_epochs=2", *strategy, *extra)

    eager, compiled = eager_and_compiled(compose, tmp_path)
    assert_same_weights(eager, compiled)
    if strategy[0] == "strategy=head_only":
        assert compiled.metrics["feature_cache"]["used"] is False
        assert "torch_compile" in compiled.metrics["feature_cache"]["reason"]


def test_token_classification_compiles(checkpoints, ner_data, tmp_path):  # noqa: F811
    eager, compiled = eager_and_compiled(lambda *e: compose_ner(checkpoints["bert"], ner_data, *e), tmp_path,
                                         "trainer.num_train_epochs=1")  # fmt: skip
    assert_same_weights(eager, compiled)


def test_causal_lm_compiles(checkpoints, text_dir, tmp_path):  # noqa: F811
    eager, compiled = eager_and_compiled(lambda *e: compose_text(checkpoints["llama"], text_dir, *e), tmp_path,
                                         "trainer.num_train_epochs=1")  # fmt: skip
    assert_same_weights(eager, compiled)
