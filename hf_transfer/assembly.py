"""A run's parts, each built once, complete, in the order the run needs them, and handed on.

run.py trains with these parts, head_first.py builds its probe with them and validation.py
(`hf-transfer validate`) checks with them, so that each part is made one way wherever it is made:

    start               trainer.* checked (before any data loads), the processes checked, the run folder taken
    checkpoint          the pretrained checkpoint: where, its config (read once), family, pooling,
                        the tokenizer adapted to the task, the length inputs are cut to
    few_labels_plan     whether the data is a few labels a class, and then how the run trains
    training_arguments  TrainingArguments, whole and once, when the data is known
    model               the checkpoint with the task's new head
    trainer             the collator, the feature cache (computed once) and the Trainer holding both

Nothing here changes a part once it is built: each value a later part depends on (the best
metric, the schedule for little data, the process count) is computed first and passed in.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelerate import PartialState

from hf_transfer import distributed, feature_cache, few_labels, models, training
from hf_transfer.device import pad_multiple
from hf_transfer.models import Checkpoint

if TYPE_CHECKING:
    from transformers import TrainingArguments

    from hf_transfer.checkpoints import Progress
    from hf_transfer.config import RunConfig
    from hf_transfer.few_labels import FewLabels
    from hf_transfer.strategies import Applied, Strategy
    from hf_transfer.tasks import Task
    from hf_transfer.tasks.base import Encoded, TaskData
    from hf_transfer.training import TransferTrainer

log = logging.getLogger("hf_transfer")


def start(run: RunConfig, task: Task, strategy: Strategy, requested: Path, resume: bool) -> Path:
    """Check what can be checked before any data loads, and take the run folder (the main
    process takes it and tells the others).

    TrainingArguments refuses a bad trainer.* value in its own checks: it is built from the
    config here for that alone, and dropped. Building it also starts the process group under a
    launcher, with the trainer's ddp settings; the run's own is built once the data is known."""
    training.arguments(training.trainer_settings(run, task, requested))
    world = PartialState()
    distributed.check_world(world.num_processes, run.expected_world_size)
    distributed.check_strategy(world.num_processes, run.trainer, strategy)
    return distributed.shared_run_folder(world.num_processes, world.process_index, requested, resume)


def checkpoint(run: RunConfig, task: Task) -> Checkpoint:
    """The pretrained checkpoint, read once: its config, its tokenizer (adapted to the task)."""
    cfg = run.model
    location = models.checkpoint_location(cfg)
    config = models.load_base_config(cfg, location)
    family = models.detect_family(config, cfg.family)
    tokenizer = models.load_tokenizer(cfg, family, location, config)
    task.adapt_tokenizer(tokenizer, family)
    return Checkpoint(
        settings=cfg,
        location=location,
        config=config,
        family=family,
        pooling=models.resolve_pooling(cfg, task.auto_model, config, location),
        tokenizer=tokenizer,
        max_length=run.task.max_length or models.default_max_length(tokenizer, config),
    )


def few_labels_plan(run: RunConfig, task: Task, data: TaskData, checkpoint: Checkpoint) -> FewLabels | None:
    """Whether the run is a few labels a class, and then how it trains (few_labels.py)."""
    settings = training.trainer_settings(run, task, Path("."))  # (the folder only names the checkpoints')
    return few_labels.plan(run, task, data, checkpoint, settings, PartialState().num_processes)


def training_arguments(
    run: RunConfig, task: Task, data: TaskData, folder: Path, few: FewLabels | None = None
) -> TrainingArguments:
    """The run's TrainingArguments, built whole: trainer.* with the run's additions, the task's
    best metric for this data, and the schedule for this many examples: the few-label one
    (`few`, few_labels.py) or strategy.min_steps'."""
    settings = training.trainer_settings(run, task, folder)
    if "learning_rate" in run.trainer:  # logged here, where the run's own arguments are built
        log.info("trainer.learning_rate=%s overrides the strategy's %s", run.trainer["learning_rate"],
                 run.strategy.learning_rate)  # fmt: skip
    settings.update(training.best_metric(run, task, data))
    if few is not None:
        return training.arguments(few_labels.apply(settings, few))
    min_steps, why = task.min_steps(run.strategy.min_steps)
    evaluated = len(data.splits["validation"]) if "validation" in data.splits else None
    settings.update(
        training.fit_schedule(
            settings,
            min_steps,
            len(data.splits["train"]),
            evaluated,
            world_size=PartialState().num_processes,
            early_stopping=run.early_stopping.patience is not None,
            why=why,
        )
    )
    return training.arguments(settings)


def model(checkpoint: Checkpoint, task: Task, data: TaskData, few: FewLabels | None = None) -> Any:
    """The pretrained model with the task's new head, as the run starts from it (a few-label
    run's cosine head at its own scale)."""
    head = {"logit_scale": few.head_scale} if few is not None else {}
    return models.load_model(checkpoint, task.auto_model, task.new_head, **task.model_config_kwargs(data), **head)


def trainer(
    run: RunConfig,
    args: TrainingArguments,
    task: Task,
    strategy: Strategy,
    applied: Applied,
    checkpoint: Checkpoint,
    data: TaskData,
    encoded: Encoded,
    folder: Path,
    scratch: Path,
    callbacks: list[Any] = (),
    progress: Progress | None = None,
    started: float | None = None,
) -> tuple[TransferTrainer, dict[str, Any]]:
    """The Trainer of what `applied` trains, with the frozen blocks' outputs computed once where
    that pays (`strategy.cache`; the cache's disk copy goes to `scratch`); and what metrics.json
    records of the cache."""
    tokenizer = checkpoint.tokenizer
    collator = task.collator(tokenizer, pad_multiple(args.device.type))
    cache, record = feature_cache.prepare(
        run.strategy, applied, args, collator, encoded, tokenizer.padding_side, scratch
    )
    built = training.build_trainer(
        run, args, task, strategy, applied.model, tokenizer, collator, data, encoded, folder,
        feature_cache=cache, extra_callbacks=list(callbacks), progress=progress, started=started,
    )  # fmt: skip
    return built, record
