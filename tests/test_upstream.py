"""The private parts of Hydra, transformers and accelerate that hf_transfer still relies on.

Each is used in one place, with the reason beside it (there is no public way to do the same).
These tests fail loudly when an upgrade renames or changes one, instead of letting the code
around it quietly do nothing.
"""

from __future__ import annotations

import inspect

import torch
from conftest import compose_tiny


def test_the_one_hydra_internal_left_is_the_callbacks_runner():
    """hf_transfer reaches Hydra through its public API (compose.py, jobs.py) but for one name:
    the object that calls a config's hydra.callbacks, which Hydra does not make public."""
    import re
    from pathlib import Path

    from hydra._internal.callbacks import Callbacks

    import hf_transfer

    assert {"on_run_start", "on_run_end", "on_job_start", "on_job_end"} <= set(dir(Callbacks))
    package = Path(hf_transfer.__file__).parent
    private = {
        (path.name, name)
        for path in package.rglob("*.py")
        for name in re.findall(r"hydra\._internal[\w.]*", path.read_text(encoding="utf-8"))
    }
    assert private == {("jobs.py", "hydra._internal.callbacks")}


def test_an_evaluation_marks_the_model_prepared_which_training_clears(checkpoints, data_dir, tmp_path):
    """accelerate marks a model it prepared for evaluation `_is_accelerate_prepared` and would not
    wrap it for training then; TransferTrainer.train clears the mark (training.py)."""
    from accelerate import Accelerator
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(checkpoints["bert"], num_labels=2)
    Accelerator(cpu=True).prepare_model(model, evaluation_mode=True)
    assert model._is_accelerate_prepared is True


def test_the_trainer_picks_its_evaluation_sampler_where_training_overrides_it():
    """TransferTrainer overrides `_get_eval_sampler` to keep the dataset order of evaluations."""
    from transformers import Trainer

    assert "eval_dataset" in inspect.signature(Trainer._get_eval_sampler).parameters
    assert "_get_eval_sampler" in inspect.getsource(Trainer)


def test_predict_scores_with_the_trainer_compute_metrics_attribute():
    """TransferTrainer gives the Trainer a scorer that stands aside while predicting (training.py)."""
    from transformers import Trainer

    assert "self.compute_metrics(" in inspect.getsource(Trainer.evaluation_loop)


def test_head_reinitialisation_rests_on_the_init_marks(bert_with_head, data_dir):
    """models.reinit_head clears `_is_hf_initialized` and calls the model's `_init_weights`."""
    from transformers import AutoModelForSequenceClassification

    from hf_transfer import models

    model = AutoModelForSequenceClassification.from_pretrained(bert_with_head)
    assert all(getattr(p, "_is_hf_initialized", False) for p in model.classifier.parameters())
    assert callable(model._init_weights)
    before = model.classifier.weight.detach().clone()
    models.reinit_head(model)
    assert not torch.equal(before, model.classifier.weight)
    assert torch.all(model.classifier.bias == 0)


def test_the_trainer_hands_the_step_item_count_to_the_task_loss(checkpoints, data_dir, tmp_path):
    """The task's loss is the Trainer's `compute_loss_func`: each batch's call gets the item count
    of its whole optimizer step (test_distributed.py checks that accumulated and distributed
    steps then train exactly what one big batch trains)."""
    from transformers import Trainer

    from hf_transfer.run import run

    calls = []
    original = Trainer.compute_loss

    def recording(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            calls.append(
                (int(inputs["labels"].numel()), None if num_items_in_batch is None else int(num_items_in_batch))
            )
        return original(self, model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    cfg = compose_tiny(checkpoints["bert"], data_dir, "trainer.max_steps=2", "trainer.gradient_accumulation_steps=2",
                       "trainer.per_device_train_batch_size=4")  # fmt: skip
    Trainer.compute_loss = recording  # observed, not replaced: the Trainer's own code runs
    try:
        result = run(cfg, output_dir=tmp_path / "run")
    finally:
        Trainer.compute_loss = original
    assert calls == [(4, 8)] * 4  # 2 steps of 2 batches of 4: each batch knows its step holds 8
    assert result.metrics["train_loss"] > 0
