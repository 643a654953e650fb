"""Each strategy trains exactly what it claims, on five architectures.

A callback snapshots every parameter when training starts and compares at the end: the
parameters a strategy trains must all have moved, every other one must be bit-identical.
"""

from __future__ import annotations

import re

import pytest
import torch
from conftest import ARCHITECTURES, compose_tiny
from transformers import AutoModel, AutoModelForSequenceClassification, TrainerCallback

from hf_transfer.run import run

# What a strategy may change, as patterns over parameter names, per architecture.
HEAD = {
    "bert": r"^classifier\.",
    "distilbert": r"^(pre_classifier|classifier)\.",
    "roberta": r"^classifier\.",
    "mpnet": r"^classifier\.",
    "gpt2": r"^score\.",
    "llama": r"^score\.",
}
# What sits over the blocks: head_only trains it with the head (strategy.train_top).
TOP = {
    "bert": r"^bert\.pooler\.",
    "distilbert": None,
    "roberta": None,
    "mpnet": None,  # its relative position table sits after the blocks but feeds them all: not a top
    "gpt2": r"^transformer\.ln_f\.",
    "llama": r"^model\.norm\.",
}
TOP_BLOCK = {
    "bert": r"^bert\.(encoder\.layer\.1\.|pooler\.)",
    "distilbert": r"^distilbert\.transformer\.layer\.1\.",
    "roberta": r"^roberta\.encoder\.layer\.1\.",
    "mpnet": r"^mpnet\.encoder\.layer\.1\.",
    "gpt2": r"^transformer\.(h\.1\.|ln_f\.)",
    "llama": r"^model\.(layers\.1\.|norm\.)",
}


class ParameterWatch(TrainerCallback):
    """Records which parameters changed between the start and the end of training."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.model = model
        self.before = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.frozen_in_train_mode = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        # Checked mid-training: every module whose parameters are all frozen is in eval mode.
        if self.frozen_in_train_mode is None:
            self.frozen_in_train_mode = [
                name
                for name, module in model.named_modules()
                if list(module.parameters())
                and not any(p.requires_grad for p in module.parameters())
                and module.training
            ]
            self.dropouts_in_train_mode = {
                name
                for name, module in model.named_modules()
                if isinstance(module, torch.nn.Dropout) and module.training
            }
            self.trainable_in_train_mode = all(
                module.training
                for module in model.modules()
                if any(p.requires_grad for p in module.parameters(recurse=False))
            )

    def on_train_end(self, args, state, control, model=None, **kwargs):
        after = dict(self.model.named_parameters())
        self.changed = {n for n, before in self.before.items() if not torch.equal(before, after[n].detach())}
        self.unchanged = set(self.before) - self.changed
        self.trainable = {n for n, p in after.items() if p.requires_grad}


def train_with_watch(checkpoints, data_dir, tmp_path, arch, *overrides):
    watch = ParameterWatch()
    cfg = compose_tiny(checkpoints[arch], data_dir, "trainer.num_train_epochs=1", *overrides)
    result = run(cfg, output_dir=tmp_path / "run", callbacks=[watch])
    return watch, result


def matching(names, pattern):
    return {n for n in names if re.search(pattern, n)}


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("top", [True, False], ids=["with_top", "head_alone"])
def test_head_only_trains_the_head_and_nothing_else(checkpoints, data_dir, tmp_path, arch, top):
    watch, result = train_with_watch(checkpoints, data_dir, tmp_path, arch, "strategy=head_only",
                                     f"strategy.train_top={str(top).lower()}")  # fmt: skip
    # By default what sits over the blocks (a pooler, a final norm) trains with the head.
    head = matching(watch.before, HEAD[arch] + (f"|{TOP[arch]}" if top and TOP[arch] else ""))
    assert head and watch.changed == head
    assert watch.frozen_in_train_mode == []
    assert watch.trainable_in_train_mode
    assert result.metrics["trainable_parameters"] == sum(watch.before[n].numel() for n in head)

    # The saved base is the checkpoint's base, bit for bit.
    base = AutoModel.from_pretrained(checkpoints[arch]).state_dict()
    saved = AutoModelForSequenceClassification.from_pretrained(result.folder).base_model.state_dict()
    assert saved.keys() <= base.keys()  # RoBERTa's classifier drops the checkpoint's pooler
    for name, parameter in saved.items():
        if not (top and TOP[arch] and re.search(TOP[arch], f"{result_prefix(arch)}.{name}")):
            assert torch.equal(parameter, base[name]), name


def result_prefix(arch):
    prefixes = {"bert": "bert", "distilbert": "distilbert", "roberta": "roberta", "mpnet": "mpnet", "gpt2": "transformer"}
    return prefixes.get(arch, "model")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_full_trains_every_parameter(checkpoints, data_dir, tmp_path, arch):
    watch, result = train_with_watch(checkpoints, data_dir, tmp_path, arch, "strategy=full")
    assert watch.changed == set(watch.before)
    assert result.metrics["trainable_parameters"] == result.metrics["total_parameters"]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_partial_unfreeze_trains_head_and_top_block_only(checkpoints, data_dir, tmp_path, arch):
    watch, _ = train_with_watch(
        checkpoints, data_dir, tmp_path, arch, "strategy=partial_unfreeze", "strategy.num_layers=1"
    )
    expected = matching(watch.before, HEAD[arch]) | matching(watch.before, TOP_BLOCK[arch])
    assert watch.changed == expected
    # Embeddings and the lower block never move.
    assert not any(re.search(r"(embed|wte|wpe|layer\.0\.|layers\.0\.|h\.0\.)", n) for n in watch.changed)
    assert watch.frozen_in_train_mode == []
    # Dropout acts only in what trains: the top block and the head (GPT-2's over its frozen
    # embeddings, a module without parameters, is off too).
    trained_part = re.compile(f"{TOP_BLOCK[arch]}|{HEAD[arch]}|^dropout\\.$")  # the model's own, under the head
    assert {name for name in watch.dropouts_in_train_mode if not trained_part.search(name + ".")} == set()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_lora_trains_adapters_and_the_whole_head(checkpoints, data_dir, tmp_path, arch):
    watch, result = train_with_watch(checkpoints, data_dir, tmp_path, arch, "strategy=lora")
    adapters = matching(watch.before, r"\.lora_[AB]\.")
    head_copies = matching(watch.before, r"modules_to_save\.default\.")
    assert adapters and head_copies
    # Every head parameter has a trained, saved copy: DistilBERT's pre_classifier included.
    plain = AutoModelForSequenceClassification.from_pretrained(checkpoints[arch], num_labels=2)
    expected_head = matching(dict(plain.named_parameters()), HEAD[arch])
    copied = {re.sub(r"^base_model\.model\.|modules_to_save\.default\.", "", n) for n in head_copies}
    assert copied == expected_head
    assert watch.changed == adapters | head_copies
    assert watch.trainable == adapters | head_copies
    assert (result.folder / "adapter" / "adapter_model.safetensors").exists()


def test_partial_unfreeze_refuses_more_layers_than_the_model_has(checkpoints, data_dir, tmp_path):
    from hf_transfer.errors import UserError

    cfg = compose_tiny(checkpoints["bert"], data_dir, "strategy=partial_unfreeze", "strategy.num_layers=5")
    with pytest.raises(UserError, match="num_layers=5.*2 transformer blocks"):
        run(cfg, output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_lora_names_the_available_modules_for_a_bad_target(checkpoints, data_dir, tmp_path):
    from hf_transfer.errors import UserError

    cfg = compose_tiny(checkpoints["bert"], data_dir, "strategy=lora", "strategy.target_modules=[q_proj]")
    with pytest.raises(UserError, match=r"\['q_proj'\].*query"):
        run(cfg, output_dir=tmp_path / "run")


def test_min_steps_shrinks_batches_adds_epochs_and_keeps_evaluations_few(checkpoints, data_dir, tmp_path):
    """head_only's default strategy.min_steps=1000 (the tiny recipe sets 0): the 72 training
    examples at batch 16 would make 5 steps an epoch; batches of 9 make 8, so 125 epochs,
    rounded to 130 for 10 evaluations of 13 epochs each, the last at the end."""

    class Evaluations(TrainerCallback):
        steps = []

        def on_evaluate(self, args, state, control, **kwargs):
            self.steps.append(state.global_step)

    cfg = compose_tiny(checkpoints["bert"], data_dir, "strategy=head_only", "strategy.min_steps=1000")
    result = run(cfg, output_dir=tmp_path / "run", callbacks=[Evaluations()])
    assert result.metrics["examples"]["train"] == 72
    assert result.metrics["train_batch_size"] == 9
    assert result.metrics["epochs"] == 130
    assert result.metrics["steps"] == 1040
    assert Evaluations.steps == list(range(104, 1041, 104))
    assert 0 < result.metrics["train_evaluation_s"] < result.metrics["train_runtime_s"]
    # A run with max_steps trains exactly those, at its own batch size.
    capped = run(compose_tiny(checkpoints["bert"], data_dir, "strategy=head_only", "strategy.min_steps=1000",
                              "trainer.max_steps=7"), output_dir=tmp_path / "capped")  # fmt: skip
    assert capped.metrics["epochs"] == pytest.approx(7 / 5)
    assert capped.metrics["train_batch_size"] == 16


@pytest.mark.parametrize(
    ("examples", "validation", "batch", "epochs", "every"),
    [
        # 8 labelled examples a class: batches of 4, 10 epochs. 160 examples trained do not pay
        # for evaluating 1,281 during training: the run scores them after it, and keeps no
        # checkpoint of a run this short.
        (16, 1281, 4, 10, "after"),
        # 64 a class: batches of 16 (8 steps an epoch), 5 epochs, likewise.
        (128, 1281, 16, 5, "after"),
        # 160 examples trained pay for 3 evaluations of 50: every 4 epochs, the last at the end.
        (16, 50, 4, 12, 16),
        # Enough data: nothing changes.
        (10_000, 1281, 32, 1, None),
        # Evaluations of unknown cost: MAX_EVALUATIONS of them, after each of the 10 epochs,
        (16, None, 4, 10, "epoch"),
        # or every 2 epochs where there are 20.
        (8, None, 4, 20, 4),
    ],
)
@pytest.mark.parametrize("early_stopping", [False, True])
def test_min_steps_schedule_for_few_labels(examples, validation, batch, epochs, every, early_stopping, tmp_path):
    from transformers import TrainingArguments

    from hf_transfer.training import fit_schedule

    settings = {"output_dir": str(tmp_path), "per_device_train_batch_size": 32, "num_train_epochs": 1,
                "eval_strategy": "epoch", "save_strategy": "epoch", "load_best_model_at_end": True,
                "train_sampling_strategy": "group_by_length", "use_cpu": True}  # fmt: skip
    changes = fit_schedule(settings, 40, examples, validation, early_stopping=early_stopping)
    args = TrainingArguments(**{**settings, **changes})  # built once, whole: its own checks pass
    assert (args.per_device_train_batch_size, args.num_train_epochs) == (batch, epochs)
    # Grouped by length, the few examples would make the same batches every epoch.
    assert args.train_sampling_strategy == ("group_by_length" if every is None else "random")
    if every == "after" and not early_stopping:
        assert (args.eval_strategy, args.save_strategy, args.load_best_model_at_end) == ("no", "no", False)
    elif every == "after":  # early stopping needs its evaluations and the best checkpoint
        assert (args.eval_strategy, args.eval_steps, args.save_steps) == ("steps", 40, 40)
        assert args.load_best_model_at_end
    elif every in (None, "epoch"):
        assert (args.eval_strategy, args.save_strategy) == ("epoch", "epoch")
    else:
        assert (args.eval_strategy, args.eval_steps, args.save_steps) == ("steps", every, every)


def test_the_few_label_schedule_keeps_evaluations_for_a_scheduler_that_steps_on_them(tmp_path):
    """reduce_lr_on_plateau steps on the validation loss: where 16 examples would otherwise get
    no evaluation during training, they keep one (and TrainingArguments accepts the whole)."""
    from transformers import TrainingArguments

    from hf_transfer.training import fit_schedule

    settings = {"output_dir": str(tmp_path), "per_device_train_batch_size": 32, "num_train_epochs": 1,
                "eval_strategy": "epoch", "save_strategy": "epoch", "use_cpu": True}  # fmt: skip
    plain = fit_schedule(settings, 40, 16, 1000)
    assert plain["eval_strategy"] == "no"
    plateau = {**settings, "lr_scheduler_type": "reduce_lr_on_plateau"}
    changes = fit_schedule(plateau, 40, 16, 1000)
    assert changes["eval_strategy"] != "no"
    args = TrainingArguments(**{**plateau, **changes})
    assert args.eval_strategy == "steps" and args.num_train_epochs == 10
