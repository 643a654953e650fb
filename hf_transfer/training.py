"""TrainingArguments' keys from the config, and the Trainer that trains what the strategy chose.

`trainer.*` keys are handed to TrainingArguments as they are; this module only adds what the
run owns (the checkpoint folder, the seed, the best-model metric, the strategy's learning rate,
a schedule for little data), each computed as a value before TrainingArguments is built, and
keeps frozen modules in eval mode during training. assembly.py builds both, once.

The Trainer is configured through its public arguments and documented hooks: the task's loss
(`compute_loss_func`, normalised by the step's item count), its metric functions, and the
strategy's parameter groups (`create_optimizer`, which the Trainer documents for overriding).
The few private parts of transformers and accelerate that remain are in `TransferTrainer`,
each with its reason; tests/test_upstream.py fails when upstream changes them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import SequentialSampler
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments
from transformers.integrations import TensorBoardCallback

from hf_transfer.checkpoints import Progress
from hf_transfer.device import accelerator, trainer_defaults
from hf_transfer.distributed import check_wrapped
from hf_transfer.errors import UserError, first_line
from hf_transfer.few_labels import STEPS_ON_EVALUATIONS

if TYPE_CHECKING:
    from hf_transfer.config import RunConfig
    from hf_transfer.feature_cache import FeatureCache
    from hf_transfer.strategies import Strategy
    from hf_transfer.tasks import Task
    from hf_transfer.tasks.base import Encoded, TaskData

log = logging.getLogger(__name__)


def trainer_settings(run: RunConfig, task: Task, folder: Path) -> dict[str, Any]:
    """The TrainingArguments keys of a run as its config gives them: trainer.*, then the
    strategy's learning rate, the task's and the device's defaults; checkpoints in `folder`."""
    kwargs = dict(run.trainer)
    kwargs.setdefault("learning_rate", run.strategy.learning_rate)
    for key, value in task.training_defaults.items():
        kwargs.setdefault(key, value)
    if "metric_for_best_model" not in kwargs:  # else TrainingArguments infers the direction of the user's metric
        kwargs["metric_for_best_model"] = task.best_metric[0]
        kwargs.setdefault("greater_is_better", task.best_metric[1])
    # Stated explicitly: for a peft-wrapped model the Trainer cannot infer them, and without
    # them evaluation silently returns no labels and no metrics.
    kwargs.setdefault("label_names", ["labels"])
    device = None if kwargs.get("use_cpu") else accelerator()
    for key, value in trainer_defaults(kwargs, device).items():
        kwargs.setdefault(key, value)
    # Set deliberately: DDP tracks only parameters that require grad, so frozen ones need no
    # search for unused parameters (which costs a graph walk every step); a trainable parameter
    # the forward pass leaves unused fails loudly at the second step, and this key fixes it.
    kwargs.setdefault("ddp_find_unused_parameters", False)
    if kwargs.get("gradient_checkpointing"):
        # Non-reentrant checkpointing works when the inputs of a checkpointed block do not
        # require grad (frozen embeddings under head_only, partial_unfreeze and LoRA).
        kwargs.setdefault("gradient_checkpointing_kwargs", {"use_reentrant": False})
    kwargs["output_dir"] = str(folder / "checkpoints")
    kwargs["seed"] = run.seed
    report_to = kwargs.get("report_to", "none")
    report_to = [report_to] if isinstance(report_to, str) else list(report_to)
    _check_integrations(report_to)
    # TensorBoard is attached by build_trainer so that its logs land in the run folder.
    kwargs["report_to"] = [r for r in report_to if r not in ("tensorboard", "none")] or "none"
    return kwargs


def arguments(settings: dict[str, Any]) -> TrainingArguments:
    """TrainingArguments of `settings`, whose own checks refuse a bad trainer.* value."""
    try:
        return TrainingArguments(**settings)
    except (ValueError, TypeError) as err:
        raise UserError(f"trainer settings rejected by TrainingArguments: {first_line(err)}") from None


def best_metric(run: RunConfig, task: Task, data: TaskData) -> dict[str, Any]:
    """The task's best-model metric once its data is read: a task may choose it by what the data
    holds (token classification: f1 for entity tags, accuracy for POS tags). trainer.* keys win."""
    if "metric_for_best_model" in run.trainer:
        return {}
    name, greater_is_better = task.best_metric_for(data)
    return {"metric_for_best_model": name,
            **({} if "greater_is_better" in run.trainer else {"greater_is_better": greater_is_better})}  # fmt: skip


# The package each trainer.report_to integration imports, where the names differ.
_INTEGRATION_PACKAGES = {"comet_ml": "comet_ml", "neptune": "neptune", "clearml": "clearml", "wandb": "wandb",
                         "mlflow": "mlflow", "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio",
                         "codecarbon": "codecarbon", "azure_ml": "azureml", "flyte": "flytekit"}  # fmt: skip


def _check_integrations(report_to: list[str]) -> None:
    """A logging integration whose package is missing fails inside the Trainer: refused first."""

    for name in report_to:
        package = _INTEGRATION_PACKAGES.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise UserError(f"trainer.report_to={name} needs the {package} package: pip install {package}, "
                            "or report to tensorboard (or none)")  # fmt: skip


MAX_EVALUATIONS = 10  # per run, where strategy.min_steps adds epochs
# Where strategy.min_steps asks for more steps than the data makes, batches shrink first (more
# updates from the same examples, as few-label fine-tuning needs) but to no fewer than this:
# 16 examples learn more at batch 4 than at 8, in half the time (BENCHMARKS.md, few labels),
SMALLEST_BATCH = 4
# and only as far as this many steps an epoch.
STEPS_PER_EPOCH = 8


def fit_schedule(
    settings: dict[str, Any],
    min_steps: int,
    train_examples: int,
    eval_examples: int | None = None,
    world_size: int = 1,
    early_stopping: bool = False,
    why: str | None = None,
) -> dict[str, Any]:
    """strategy.min_steps, a schedule for the data there is: the TrainingArguments keys that
    change in `settings`. Where the data makes fewer optimizer steps, the batch shrinks (down to
    SMALLEST_BATCH, to STEPS_PER_EPOCH steps an epoch), then epochs are added; evaluations stay
    few, and cost no more than the training between them (`eval_examples`: the validation
    split's size). Where that leaves one evaluation, at the end, there is none during training
    (the run scores the validation split after it anyway) and no checkpoint (`early_stopping`:
    keep them for it). A run with trainer.max_steps trains exactly that many steps, at its own
    batch size. `why`: where the minimum comes from, for the log."""

    why = why or f"strategy.min_steps={min_steps}"

    def value(key: str) -> Any:
        return settings.get(key, _ARGUMENT_DEFAULTS[key])

    if not min_steps or (value("max_steps") or -1) > 0:
        return {}
    changes: dict[str, Any] = {}
    replicas = max(world_size, 1) * value("gradient_accumulation_steps")
    batch, asked_epochs = value("per_device_train_batch_size"), value("num_train_epochs")
    if math.ceil(train_examples / (batch * replicas)) * asked_epochs >= min_steps:
        return {}
    smaller = max(SMALLEST_BATCH, min(batch, train_examples // (STEPS_PER_EPOCH * replicas)))
    if smaller < batch:
        log.info(
            "%s: batches of %d, not trainer.per_device_train_batch_size=%d (%d training examples)",
            why, smaller, batch, train_examples,
        )  # fmt: skip
        changes["per_device_train_batch_size"] = smaller
    steps_per_epoch = max(math.ceil(train_examples / (smaller * replicas)), 1)
    if asked_epochs * steps_per_epoch >= min_steps:
        return changes
    epochs = math.ceil(min_steps / steps_per_epoch)
    trained = epochs * steps_per_epoch * smaller * replicas  # examples seen
    evaluations = MAX_EVALUATIONS
    if eval_examples:  # an evaluation of more examples than the training saw since the last is waste
        evaluations = min(MAX_EVALUATIONS, max(trained // eval_examples, 1))
    every_epochs = math.ceil(epochs / evaluations)
    epochs = every_epochs * math.ceil(epochs / every_epochs)  # the last evaluation at the end
    log.info(
        "%s: %d epochs of %d steps, not trainer.num_train_epochs=%g (strategy.min_steps=0 trains the epochs "
        "asked for)", why, epochs, steps_per_epoch, asked_epochs,
    )  # fmt: skip
    changes["num_train_epochs"] = epochs
    if value("train_sampling_strategy") == "group_by_length":
        # Grouped by length, a few dozen examples would make the same batches every epoch.
        log.info("random batches, not trainer.train_sampling_strategy=group_by_length (%d training examples)",
                 train_examples)  # fmt: skip
        changes["train_sampling_strategy"] = "random"
    # A scheduler that steps on the validation loss needs evaluations, as early stopping does.
    if evaluations == 1 and not early_stopping and value("lr_scheduler_type") not in STEPS_ON_EVALUATIONS:
        log.info(
            "evaluating after training only (%d training examples seen do not pay for evaluating %d during it); "
            "no checkpoints: a run this short trains again sooner than it would resume",
            trained, eval_examples,
        )  # fmt: skip
        return {**changes, "eval_strategy": "no", "save_strategy": "no", "load_best_model_at_end": False}
    if every_epochs > 1 and "epoch" in (value("eval_strategy"), value("save_strategy")):
        # Hundreds of tiny epochs would each be evaluated and saved.
        every = every_epochs * steps_per_epoch
        if value("eval_strategy") == "epoch":
            changes.update(eval_strategy="steps", eval_steps=every)
        if value("save_strategy") == "epoch":
            changes.update(save_strategy="steps", save_steps=every)
        log.info("evaluating and saving every %d steps (every %d epochs)", every, every_epochs)
    return changes


# What TrainingArguments takes where a key is not given (fit_schedule reads them before it exists).
_ARGUMENT_DEFAULTS = {
    field.name: field.default for field in dataclasses.fields(TrainingArguments) if field.init
}


def wants_tensorboard(run: RunConfig) -> bool:
    report_to = run.trainer.get("report_to", "none")
    return "tensorboard" in ([report_to] if isinstance(report_to, str) else report_to)


def build_trainer(
    run: RunConfig,
    args: TrainingArguments,
    task: Task,
    strategy: Strategy,
    model: Any,
    tokenizer: Any,
    collator: Any,
    data: TaskData,
    encoded: Encoded,
    folder: Path,
    feature_cache: FeatureCache | None = None,
    extra_callbacks: list[Any] = (),
    progress: Progress | None = None,
    started: float | None = None,
) -> TransferTrainer:
    callbacks: list[Any] = strategy.callbacks() + list(extra_callbacks)
    if run.early_stopping.patience is not None:
        callbacks.append(
            EarlyStoppingCallback(
                early_stopping_patience=run.early_stopping.patience,
                early_stopping_threshold=run.early_stopping.threshold,
            )
        )
    if wants_tensorboard(run) and args.process_index == 0:
        # The writer creates its events file at once: only the main process may make one.
        callbacks.append(_tensorboard_callback(folder / "tensorboard"))
    compute_metrics, preprocess_logits = task.metric_functions(data, encoded)
    validation = encoded.inputs["validation"]
    return TransferTrainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=encoded.inputs["train"],
        eval_dataset=by_length(validation)[0] if task.sort_eval_by_length else validation,
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        preprocess_logits_for_metrics=preprocess_logits,
        compute_loss_func=task.loss_function(data, args.label_smoothing_factor),
        callbacks=callbacks,
        parameter_groups=strategy.parameter_groups,
        feature_cache=feature_cache,
        progress=progress,
        started=started,
    )


def by_length(dataset: Any) -> tuple[Any, Any]:
    """The dataset sorted longest first (batches of similar length: less padding), and the order."""

    lengths = np.fromiter((len(ids) for ids in dataset["input_ids"]), dtype=np.int64, count=len(dataset))
    order = np.argsort(-lengths, kind="stable")
    return dataset.select(order), order


def predict_in_order(trainer: Trainer, dataset: Any, prefix: str, sort: bool = True) -> Any:
    """trainer.predict over length-sorted batches, with the outputs put back in dataset order.

    Evaluation does a forward pass only, so padding is most of what it can save: sorted
    batches evaluated gpt_sentiment's validation split 1.6 times as fast (74 s, not 119 s).
    Scores are left to the task (TransferTrainer.predict scores nothing).
    """

    ordered, order = by_length(dataset) if sort else (dataset, np.arange(len(dataset)))
    output = trainer.predict(ordered, metric_key_prefix=prefix)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))

    def restore(values: Any) -> Any:
        if values is None:
            return None
        if isinstance(values, (tuple, list)):
            return type(values)(restore(v) for v in values)
        return values[inverse]

    metrics = {k.removeprefix(f"{prefix}_"): v for k, v in (output.metrics or {}).items()}
    return output._replace(
        predictions=restore(output.predictions), label_ids=restore(output.label_ids), metrics=metrics
    )


def _tensorboard_callback(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(
            "trainer.report_to=tensorboard needs the tensorboard package: pip install tensorboard"
        ) from None
    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(log_dir)))


class TransferTrainer(Trainer):
    """The HF Trainer, with frozen modules kept in eval mode while the rest trains, and the
    strategy's optimizer groups (layer-wise rates, layers that thaw later).

    The Trainer switches the whole model to train mode before every step; a frozen module
    must not apply dropout (its output then depends only on its input, and the pretrained
    features are what the head was meant to see).

    `parameter_groups(model, lr, weight_decay, decay_names)` gives the optimizer's groups, or
    None for the Trainer's own (trainable parameters only).
    """

    def __init__(self, *args: Any, parameter_groups: Any = None, feature_cache: FeatureCache | None = None,
                 progress: Progress | None = None, started: float | None = None,
                 compute_metrics: Any = None, **kwargs: Any):  # fmt: skip
        # compute_metrics scores the validation split of evaluations during training; predict()
        # leaves scores to the task, split by split (a QA scorer would read the test windows as
        # validation ones), so the Trainer gets a scorer that stands aside while predicting.
        self._validation_metrics = compute_metrics
        self._predicting = False
        super().__init__(*args, compute_metrics=self._score if compute_metrics else None, **kwargs)
        self.parameter_groups = parameter_groups
        # What the run had done before this session (resumed from a checkpoint), and when this
        # session's run began (time.perf_counter): each checkpoint records the sum of both.
        self.progress_before = progress or Progress()
        self._run_started = time.perf_counter() if started is None else started
        self._train_started = time.perf_counter()
        self._loss_sum: Any = None  # on the device: read at checkpoints and at the end only
        # The frozen blocks stood in for while training and evaluating (feature_cache.py).
        self.feature_cache = feature_cache
        self._checked_wrapping = False
        self._keep_frozen_in_eval = FrozenInEval()
        self._flop_parameters: int | None = None

    def train(self, *args: Any, **kwargs: Any) -> Any:
        # Private to accelerate, no public way: an evaluation before training (a causal LM's
        # perplexity before) prepares the model for evaluation, unwrapped, and marks it
        # prepared, so training would skip the DDP wrap and each process would train alone
        # (check_wrapped stops that). The mark goes, so that training prepares the model itself.
        if self.model_wrapped is self.model and getattr(self.model, "_is_accelerate_prepared", False):
            self.model._is_accelerate_prepared = False
        self._train_started = time.perf_counter()
        with self._cached_features():
            return super().train(*args, **kwargs)

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        with self._cached_features():
            return super().evaluate(*args, **kwargs)

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        self._predicting = True
        try:
            with self._cached_features():
                return super().predict(*args, **kwargs)
        finally:
            self._predicting = False

    def _score(self, eval_prediction: Any) -> dict[str, Any]:
        return {} if self._predicting else self._validation_metrics(eval_prediction)

    def _cached_features(self) -> Any:
        return self.feature_cache.attached(self.model) if self.feature_cache else contextlib.nullcontext()

    def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
        if not self._checked_wrapping:
            check_wrapped(self)
            self._checked_wrapping = True
        loss = super().training_step(model, inputs, num_items_in_batch)
        # What the Trainer adds up for its train_loss, added up here over the whole run, in
        # float64 and in step order from the checkpoint's sum: a resumed run's is the same number.
        if self._loss_sum is None:
            self._loss_sum = self._loss_sum_start(loss.device)
        # A NaN or infinite step is left out, as the Trainer's own mean leaves it out.
        step = loss.detach().to(self._loss_sum.dtype)
        self._loss_sum += torch.where(torch.isfinite(step), step, torch.zeros_like(step))
        return loss

    def progress(self) -> Progress:
        """The run's progress so far, over every session. Synchronises, and across processes is a
        collective (the loss is their mean, as the Trainer's): called by every process, at
        checkpoints and at the end."""
        before = self.progress_before
        loss_sum = self._loss_sum if self._loss_sum is not None else self._loss_sum_start(self.args.device)
        if self.args.world_size > 1:
            loss_sum = self.accelerator.reduce(loss_sum, reduction="mean")
        return Progress(
            loss_sum=float(loss_sum) if before.loss_sum is not None else None,
            train_runtime_s=before.train_runtime_s + time.perf_counter() - self._train_started,
            wall_time_s=before.wall_time_s + time.perf_counter() - self._run_started,
            resumes=before.resumes,
        )

    def _loss_sum_start(self, device: Any) -> torch.Tensor:
        """The running loss sum as the checkpoint left it (0: a fresh run), float64 where the
        device has it (Apple's MPS has not)."""
        dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64
        return torch.tensor(self.progress_before.loss_sum or 0.0, dtype=dtype, device=device)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        if _internal_call and output_dir and Path(output_dir).name.startswith("checkpoint-"):
            progress = self.progress()  # every process: a collective under DDP
            if self.args.should_save:
                progress.write(Path(output_dir))

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        # The Trainer's own estimate (6 x tokens x non-embedding parameters), which it makes at
        # every step by counting the parameters again: counted once here, as a step on cached
        # features costs about as much as that count.
        main_input = getattr(self.model, "main_input_name", "input_ids")
        if main_input not in inputs or not hasattr(self.model, "num_parameters"):
            return 0
        if self._flop_parameters is None:
            self._flop_parameters = self.model.num_parameters(exclude_embeddings=True)
        return 6 * inputs[main_input].numel() * self._flop_parameters

    def create_optimizer(self, model: Any = None) -> Any:
        opt_model = self.model if model is None else model
        groups = None
        if self.optimizer is None and self.parameter_groups is not None:
            decay_names = set(self.get_decay_parameter_names(opt_model))
            groups = self.parameter_groups(opt_model, self.args.learning_rate, self.args.weight_decay, decay_names)
        if groups is None:
            return super().create_optimizer(model)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        for group in groups:
            log.info("optimizer group %-32s lr %.3g  %d tensors", group["name"], group["lr"], len(group["params"]))
        return self.optimizer

    def compute_loss(
        self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if model.training:
            self._keep_frozen_in_eval(model)
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        # Private to transformers, no public way: with train_sampling_strategy=group_by_length it
        # groups evaluation batches by length too, so predict() would return predictions in a
        # shuffled order; ours are written next to their examples, so evaluation keeps the
        # dataset order: sequential in one process; across processes, accelerate shards the
        # batches in order and gathers them back in order, without the padding duplicates.
        if eval_dataset is None:
            return None
        if self.args.world_size <= 1:
            return SequentialSampler(eval_dataset)
        return None


def frozen_modules(module: Any) -> list[Any]:
    """The frozen modules that go into eval mode (dropout off), outermost only: each one whose
    parameters are all frozen, and each one without parameters (a dropout) that follows frozen
    siblings only, as GPT-2's dropout over its frozen embeddings: nothing trainable acts before
    it there."""
    found: list[Any] = []
    frozen_before = trainable_before = False
    for child in module.children():
        flags = [p.requires_grad for p in child.parameters()]
        if not flags:
            if frozen_before and not trainable_before:
                found.append(child)
        elif not any(flags):
            found.append(child)
            frozen_before = True
        else:
            found.extend(frozen_modules(child))
            trainable_before = True
    return found


class FrozenInEval:
    """Frozen modules into eval mode at every training step (the Trainer puts the whole model
    in train mode before each). The module walk is done again only when the trainable set
    changes (gradual unfreezing): it costs milliseconds, and a step on cached features not
    many more."""

    def __init__(self) -> None:
        self._model: Any = None
        self._parameters: list[Any] = []
        self._trainable: tuple[bool, ...] | None = None
        self._frozen: list[Any] = []

    def __call__(self, model: Any) -> None:
        if model is not self._model:
            self._model, self._parameters, self._trainable = model, list(model.parameters()), None
        trainable = tuple(p.requires_grad for p in self._parameters)
        if trainable != self._trainable:
            self._trainable, self._frozen = trainable, frozen_modules(model)
        for frozen in self._frozen:
            frozen.eval()
