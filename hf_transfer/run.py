"""One training run, top to bottom: config -> data -> model -> strategy -> Trainer -> run folder.

`run()` is what the CLI calls and what tests call in-process. Each part is built in
assembly.py and each step lives in its own module; this file says in which order they happen,
and what the run folder gets at the end.

Modules that import torch or transformers are imported inside the functions that use them:
`hf_transfer.run` imports in a blink, and `versions.check()` runs before them (a library out
of range is one line, not an ImportError).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from transformers import set_seed
from transformers.integrations.deepspeed import unset_hf_deepspeed_config

from hf_transfer import (
    assembly,
    baselines,
    device,
    disk,
    distributed,
    models,
    outputs,
    run_folder,
    validation,
    versions,
)
from hf_transfer.assets import one_time_seconds, resolve_source
from hf_transfer.calibration import calibrate
from hf_transfer.checkpoints import Progress, ResumableCheckpoints, StopOnInterrupt
from hf_transfer.config import RunConfig, as_dict, validate
from hf_transfer.data import budget_name
from hf_transfer.errors import Interrupted, UserError
from hf_transfer.head_first import train_head_first
from hf_transfer.hub import push
from hf_transfer.imprint import can_imprint, fit_number_head, imprint_head, output_layer
from hf_transfer.measure import PeakMemory, Stopwatch, memory_for_training
from hf_transfer.strategies import make_strategy
from hf_transfer.tasks import task_class
from hf_transfer.training import predict_in_order

if TYPE_CHECKING:
    from transformers import TrainingArguments

    from hf_transfer.few_labels import FewLabels
    from hf_transfer.models import Checkpoint
    from hf_transfer.strategies import Applied, Strategy
    from hf_transfer.tasks import Task
    from hf_transfer.tasks.base import Encoded, TaskData
    from hf_transfer.training import TransferTrainer

log = logging.getLogger("hf_transfer")

STARTED_IN = ".started_in"  # the working directory the run's relative paths are relative to
SCRATCH = ".scratch"  # what a run needs only while it runs (a feature cache on disk)
# A share of train texts longer than max_length that the run warns of: their ends are never read.
LONG_TEXTS_SHARE = 0.05


@dataclass
class RunResult:
    folder: Path
    metrics: dict[str, Any]
    is_main_process: bool = True  # False on the other ranks of a multi-process run


def run(
    cfg: RunConfig | Mapping[str, Any],
    output_dir: str | Path,
    callbacks: list[Any] | None = None,
    resume: bool = False,
) -> RunResult:
    """Train and evaluate as `cfg` says; write everything into the run folder `output_dir`.

    `cfg` is a composed config (see `hf_transfer.compose.compose`) or a validated RunConfig;
    `callbacks` are extra transformers TrainerCallbacks; `resume`: continue the unfinished run
    in `output_dir` from its last complete checkpoint (see `resume`). A user error leaves no
    folder behind that this call created, and nothing of a run that never trained. Ctrl-C
    ends in `Interrupted`, with the checkpoint kept.
    """
    versions.check()  # the CLI checks first; a run started from Python is checked here
    run_cfg = cfg if isinstance(cfg, RunConfig) else validate(cfg)
    folder = Path(output_dir)
    created = not folder.exists()
    try:
        result = _run(run_cfg, folder, callbacks or [], resume)
    except UserError:
        # Only a folder this run took is this run's to tidy (another run may hold it).
        if run_folder.holds(folder):
            run_folder.discard_unstarted(folder)
            if created and run_folder.state(folder) == "empty":
                shutil.rmtree(folder, ignore_errors=True)
        raise
    except KeyboardInterrupt as err:  # outside the training steps, or a second Ctrl-C (or SIGTERM)
        raise Interrupted(_interrupted_message(folder, None), getattr(err, "status", 130)) from None
    except Exception as err:
        if disk.is_full(err) and run_folder.holds(folder):
            raise disk.NoSpace(_disk_full_message(folder)) from None
        if (refused := disk.read_only_error(err)) is not None and run_folder.holds(folder):
            where = Path(refused.filename) if refused.filename else folder
            raise disk.cannot_write(where, refused, f"make it writable and resume with: hf-transfer resume {folder}")
        raise
    finally:
        run_folder.release(folder)
    if run_cfg.hub.push and result.is_main_process:
        # After the run is complete and saved: a failed push leaves the run folder as it is.
        push(result.folder, run_cfg.hub)
    return result


def resume(folder: str | Path, callbacks: list[Any] | None = None) -> RunResult:
    """Continue the run in `folder`, with its own config.yaml, from its last complete checkpoint
    (weights, optimizer, scheduler, random states, unfreezing stage): it ends as the run would
    have, had it not stopped."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise UserError(f"'{folder}' is not a folder: give the run folder to resume")
    if run_folder.state(folder) == "complete":
        raise UserError(f"'{folder}' holds a finished run: there is nothing to resume")
    config_file = folder / "config.yaml"
    if not config_file.is_file():
        raise UserError(
            f"'{folder}' holds no run to resume (no config.yaml: the run stopped before training started, so "
            "nothing of it is lost): run the same training command again"
        )
    settings = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    _check_unchanged(folder, settings)
    # A run that began before few_labels existed goes on as it began, not under a new schedule.
    settings.setdefault("few_labels", {"max_per_class": 0})
    run_cfg = validate(settings)
    started_in = folder / STARTED_IN
    where = Path(started_in.read_text(encoding="utf-8").strip()) if started_in.is_file() else Path.cwd()
    with contextlib.chdir(where if where.is_dir() else Path.cwd()):
        return run(run_cfg, folder, callbacks, resume=True)


def _check_unchanged(folder: Path, settings: dict[str, Any]) -> None:
    """A checkpoint resumes the run that saved it: config.yaml edited since (another strategy, say)
    would go on from weights and an optimizer made for other settings."""
    checkpoint = run_folder.last_complete_checkpoint(folder)
    saved = checkpoint / "config.yaml" if checkpoint else None
    if saved is None or not saved.is_file():  # no checkpoint, or one of an earlier version
        return
    changed = _differences(yaml.safe_load(saved.read_text(encoding="utf-8")), settings)
    if changed:
        shown = "; ".join(f"{key}: {before!r} -> {after!r}" for key, before, after in changed[:3])
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise UserError(
            f"{folder / 'config.yaml'} was changed since {checkpoint.name} was saved ({shown}{more}); a checkpoint "
            "resumes only the settings it was trained with: put them back, or start a new run with the new ones"
        )


def _differences(before: Any, after: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(before, dict) and isinstance(after, dict):
        return [
            change
            for key in sorted(set(before) | set(after), key=str)
            for change in _differences(before.get(key), after.get(key), f"{prefix}{key}.")
        ]
    return [] if before == after else [(prefix.rstrip("."), before, after)]


def _disk_full_message(folder: Path) -> str:
    """The disk filled while the run was writing: the half-written checkpoint goes (it would only
    hold space), the complete ones stay, and the run resumes once there is room."""
    removed = run_folder.remove_incomplete_checkpoints(folder)
    last = run_folder.last_complete_checkpoint(folder)
    need = f"; a checkpoint of this run takes {disk.megabytes(disk.folder_size(last))}" if last else ""
    gone = f" (the half-written {', '.join(p.name for p in removed)} removed)" if removed else ""
    return (
        f"no space left on the disk of '{folder}' ({disk.megabytes(disk.free_bytes(folder))} free){gone}{need}; "
        f"free some space, then resume with: hf-transfer resume {folder}"
    )


def _interrupted_message(folder: Path, step: int | None) -> str:
    checkpoint = run_folder.last_complete_checkpoint(folder) if folder.is_dir() else None
    where = f"at step {step}" if step is not None else "before it finished"
    if checkpoint is None:
        return f"interrupted {where}; no checkpoint was saved, so there is nothing to resume"
    return (
        f"training was interrupted {where}; checkpoint {checkpoint.relative_to(folder)} is kept; "
        f"resume with: hf-transfer resume {folder}"
    )


def _run(run_cfg: RunConfig, output_dir: Path, callbacks: list[Any], resume: bool) -> RunResult:
    wall, one_time_before = Stopwatch(), one_time_seconds()
    set_seed(run_cfg.seed)
    task = task_class(run_cfg.task.type)(run_cfg.task, run_cfg.seed)
    strategy = make_strategy(run_cfg.strategy, run_cfg.model, task.new_head, task.peft_task_type)
    folder = assembly.start(run_cfg, task, strategy, Path(output_dir), resume)
    resume_from = run_folder.last_complete_checkpoint(folder) if resume else None
    log.info("loading data: %s", run_cfg.task.data.source or run_cfg.task.data.data_files)
    data = task.load()
    log.info("splits: %s", ", ".join(f"{name} {len(split)}" for name, split in data.splits.items()))
    memory = PeakMemory()
    log.info("loading model: %s", run_cfg.model.source)
    checkpoint = assembly.checkpoint(run_cfg, task)
    # Data problems first, as everywhere; then what the checkpoint cannot take, before weights load.
    _check_data(task, data, checkpoint)
    models.check_settings_fit(checkpoint, run_cfg.task, run_cfg.strategy)
    few = assembly.few_labels_plan(run_cfg, task, data, checkpoint)
    if few is not None:
        log.info("%s", few.summary())
    args = assembly.training_arguments(run_cfg, task, data, folder, few)
    set_seed(run_cfg.seed)  # again: a first run's one-time conversion must not change the head's init
    model = assembly.model(checkpoint, task, data, few)
    encoded = task.tokenize(data, checkpoint.tokenizer, checkpoint.max_length)
    imprinted = _imprint(task, model, checkpoint, encoded, args)
    probe = None
    if run_cfg.strategy.head_epochs:  # the head alone first, then the strategy from that head
        probe = train_head_first(run_cfg, strategy, task, model, checkpoint, data, encoded, folder / SCRATCH)
    applied = strategy.apply(model)
    counts = _check_room(run_cfg, applied, args, folder)
    if resume_from is not None:  # the strategy's own schedule goes on from where it was
        strategy.resume_from(resume_from)
    interrupt = StopOnInterrupt()
    callbacks = [ResumableCheckpoints(resume_from=resume_from), interrupt, *callbacks]
    trainer, cache = assembly.trainer(run_cfg, args, task, strategy, applied, checkpoint, data, encoded, folder,
                                      folder / SCRATCH, callbacks, Progress.of(resume_from), wall.start)  # fmt: skip
    setup = _describe_setup(task, applied, checkpoint, counts, cache, probe, imprinted, few)
    untrained, samples_before = _before_training(trainer, task, data, encoded, checkpoint.tokenizer, folder, resume)
    _mark_started(run_cfg, trainer, folder, resume, resume_from)
    train_output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if interrupt.interrupted_at is not None:
        raise Interrupted(_interrupted_message(folder, interrupt.interrupted_at), 128 + interrupt.signal)

    metrics = {
        **_run_metrics(run_cfg, trainer, train_output, data, folder),
        **({"resumed_from": str(resume_from.relative_to(folder))} if resume_from else {}),
        **setup,
        **strategy.record(),
    }
    results, predictions = _results_after_training(trainer, task, data, encoded, checkpoint, metrics["best_metric"],
                                                   untrained, samples_before)  # fmt: skip
    metrics.update(**results, **memory.result())
    _save_model(trainer, strategy, folder, lambda: _whole_model(checkpoint, task, data, few))
    if trainer.is_world_process_zero():
        _finish(run_cfg, task, trainer, checkpoint, folder, metrics, predictions, wall.seconds(), one_time_before)
    return RunResult(folder=folder, metrics=metrics, is_main_process=trainer.is_world_process_zero())


def _describe_setup(
    task: Task,
    applied: Applied,
    checkpoint: Checkpoint,
    counts: tuple[int, int],
    cache: dict[str, Any],
    probe: dict[str, Any] | None,
    imprinted: dict[str, Any] | None,
    few: FewLabels | None,
) -> dict[str, Any]:
    """What metrics.json records of how the run was set up: what trains, the inputs' length, the
    head, the feature cache, the head-first probe, the few-label schedule."""
    trainable, total = counts
    return {
        "trainable_parameters": trainable,
        "total_parameters": total,
        "trainable_fraction": round(trainable / total, 6),
        "trained_modules": applied.trainable_modules,
        "max_length": checkpoint.max_length,
        # What the classifier's head reads (model.pooling): "mean" or the architecture's own.
        **({"pooling": models.pooling_of(applied.model)} if task.auto_model == models.SEQUENCE_CLASSIFICATION else {}),
        "feature_cache": cache,
        **({"head_probe": probe} if probe else {}),
        **({"head_init": imprinted} if imprinted else {}),
        **({"few_labels": few.describe()} if few else {}),
    }


def _finish(
    run_cfg: RunConfig,
    task: Task,
    trainer: TransferTrainer,
    checkpoint: Checkpoint,
    folder: Path,
    metrics: dict[str, Any],
    predictions: dict[str, list[dict[str, Any]]],
    wall_seconds: float,
    one_time_before: float,
) -> None:
    """The main process completes the run folder: tokenizer, times, results, model card, COMPLETE."""
    outputs.save_whole_files(folder, checkpoint.tokenizer.save_pretrained)
    # One-time work (fetching packages, converting GGUF) is reported apart from the run's time.
    metrics["one_time_setup_s"] = round(one_time_seconds() - one_time_before, 2)
    # Over every session of a resumed run: what the checkpoint it resumed from had recorded, and this one.
    before = trainer.progress_before.wall_time_s
    metrics["wall_time_s"] = round(before + wall_seconds - metrics["one_time_setup_s"], 2)
    _write_results(run_cfg, task, folder, metrics, predictions)
    shutil.rmtree(folder / SCRATCH, ignore_errors=True)  # the run's own disk caches (HF_TRANSFER_CACHE's stay)
    outputs.use_usual_modes(folder)
    run_folder.mark_complete(folder)  # last: everything above is in place


def _mark_started(run_cfg: RunConfig, trainer: TransferTrainer, folder: Path, resume: bool, resume_from: Path | None) -> None:
    """From now on the run can be resumed, from any folder: relative paths in the config are
    relative to where it started."""
    if trainer.is_world_process_zero():
        (folder / STARTED_IN).write_text(os.getcwd() + "\n", encoding="utf-8")
        outputs.write_yaml(folder / "config.yaml", as_dict(run_cfg))
    if resume_from is not None:
        log.info("resuming from %s (step %d)", resume_from, run_folder.checkpoint_step(resume_from))
    elif resume:
        log.info("no complete checkpoint in %s: training again from the start", folder / "checkpoints")


def _results_after_training(
    trainer: TransferTrainer,
    task: Task,
    data: TaskData,
    encoded: Encoded,
    checkpoint: Checkpoint,
    best_metric: dict[str, Any],
    untrained: dict[str, Any],
    samples_before: list[tuple[str, str]],
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The trained model's scores beside the trivial baseline and the untrained model's, and
    its prediction records."""
    metrics: dict[str, Any] = {}
    if (calibrated := _calibrate(trainer, task, encoded)) is not None:
        metrics["head_calibration"] = calibrated
    evaluation, predictions = _evaluate(trainer, task, data, encoded)
    metrics.update(evaluation)
    if (baseline := baselines.record(task.baseline(data), {**evaluation, "best_metric": best_metric})) is not None:
        metrics["baseline"] = baseline
    metrics.update({f"{split}_before_training": results for split, results in untrained.items()})
    if samples_before:
        after = task.generate(trainer.model, checkpoint.tokenizer)
        predictions["generations"] = [
            {"prompt": prompt, "before_training": before, "after_training": text}
            for (prompt, before), (_, text) in zip(samples_before, after)
        ]
    return metrics, predictions


def _save_model(trainer: TransferTrainer, strategy: Strategy, folder: Path, whole_model: Callable[[], Any]) -> None:
    if distributed.is_sharded(trainer):
        # No process holds the whole model: all of them take part in gathering it.
        strategy.save_sharded(trainer, folder, whole_model)
    elif trainer.is_world_process_zero():
        strategy.save(trainer.model, folder)


def _check_room(run_cfg: RunConfig, applied: Applied, args: TrainingArguments, folder: Path) -> tuple[int, int]:
    """Log what the strategy trains. A run whose training state would not fit in memory, or whose
    first checkpoint and saved model would not fit on the disk, is refused before it trains (the
    one would swap or be killed after minutes; the other stops at the first save, resumable,
    but the time is lost). Returns the trainable and the total parameter counts."""
    model = applied.model
    trainable, total = models.count_parameters(model)
    log.info(
        "strategy %s: %s trainable of %s parameters (%.2f%%); training %s",
        run_cfg.strategy.name, f"{trainable:,}", f"{total:,}", 100 * trainable / total,
        ", ".join(applied.trainable_modules),
    )  # fmt: skip
    # Gradients and AdamW's two states, float32 each, for every trainable parameter; on an
    # accelerator the weights go there too. A floor: activations come on top.
    every = sum(p.numel() * p.element_size() for p in model.parameters())
    state = 12 * trainable
    on_device = args.device.type != "cpu"
    if on_device:
        state += every
    free, where = memory_for_training(args.device)
    sharded = bool(args.deepspeed or args.fsdp)  # each process holds a share: the whole is no measure
    if state > free and not sharded:
        raise UserError(
            f"the run needs at least {disk.megabytes(state)} of memory for its {trainable:,} trainable parameters "
            f"(their gradients and optimizer states{', and the weights' if on_device else ''}), more than the "
            f"{disk.megabytes(free)} {where}: choose a strategy that trains fewer (strategy=lora, a smaller "
            "strategy.r, head_only) or a smaller model"
        )

    weights = every
    if getattr(model, "peft_config", None):  # LoRA saves its adapters, not the base
        weights = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    checkpoint = weights + 8 * trainable if args.save_strategy != "no" else 0  # AdamW: two float32 states
    disk.require(folder, checkpoint + weights, "a checkpoint and the trained model" if checkpoint else "the trained model",
                 "choose a run folder on another disk (hydra.run.dir)")
    return trainable, total


def _imprint(
    task: Task, model: Any, checkpoint: Checkpoint, encoded: Encoded, args: TrainingArguments
) -> dict[str, Any] | None:
    """A new cosine head starts from the training examples' class centroids, a regression head from
    a ridge fit of their targets (imprint.py)."""
    if not task.new_head:
        return None
    numbers = getattr(model.config, "problem_type", None) == "regression" and output_layer(model) is not None
    if not numbers and not can_imprint(model):
        return None
    if not checkpoint.settings.pretrained:
        # A random encoder maps every text to about the same direction, and so the centroids:
        # near-parallel classes give next to no gradient (bert_sentiment stayed at one class).
        log.info("head: random class vectors, not imprinted (model.pretrained=false)")
        return None
    if distributed.zero3_enabled():  # ZeRO-3 runs the model only once wrapped
        log.warning("head: not imprinted under DeepSpeed ZeRO-3; it starts from random class vectors")
        return None
    collator = task.collator(checkpoint.tokenizer)
    if numbers:
        return fit_number_head(model, encoded.inputs["train"], collator, args.device)
    return imprint_head(model, encoded.inputs["train"], collator, args.device)


def _check_data(task: Task, data: TaskData, checkpoint: Checkpoint) -> None:
    """What `hf-transfer validate` says of the data, first: problems stop the run, the rest is
    logged; a warning where many texts are longer than the model will read."""

    tokenizer, max_length = checkpoint.tokenizer, checkpoint.max_length
    problems = validation.problems_of(data)
    if problems:
        raise UserError("; ".join(problems))
    lengths = validation.token_lengths(data.splits["train"], tokenizer)
    for line in validation.describe(data, tokenizer, max_length, lengths):
        log.info("data: %s", line)
    longer = validation.share_longer(lengths, max_length)
    if task.cuts_long_inputs and longer >= LONG_TEXTS_SHARE:
        log.warning(
            "%.0f%% of the train texts are longer than max_length %d tokens: the model reads only their first %d "
            "(task.max_length sets it, up to what the model has positions for)", 100 * longer, max_length, max_length,
        )  # fmt: skip


def _before_training(
    trainer: TransferTrainer, task: Task, data: TaskData, encoded: Encoded, tokenizer: Any, folder: Path, resume: bool
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Held-out scores and generations of the untrained model (tasks that show them), kept in
    the run folder so that a resumed run reports what the run started from."""
    record = folder / "before_training.json"
    if resume and record.is_file():
        saved = json.loads(record.read_text(encoding="utf-8"))
        return saved["metrics"], [tuple(pair) for pair in saved["generations"]]
    untrained = _evaluate(trainer, task, data, encoded)[0] if task.evaluate_before_training else {}
    if distributed.zero3_enabled():
        log.info("DeepSpeed ZeRO-3: no generations before training (the model runs only once DeepSpeed wraps it)")
        samples: list[tuple[str, str]] = []
    else:
        samples = task.generate(trainer.model, tokenizer)
    if (untrained or samples) and trainer.is_world_process_zero():
        outputs.write_json(record, {"metrics": untrained, "generations": samples})
    return untrained, samples


def _whole_model(checkpoint: Checkpoint, task: Task, data: TaskData, few: FewLabels | None) -> Any:
    """A complete copy of the run's starting model in this process, after a sharded run."""

    if distributed.zero3_enabled():
        # Training is over: this process alone loads a whole copy, not a ZeRO-3 partition.
        unset_hf_deepspeed_config()
    return assembly.model(checkpoint, task, data, few)


def _run_metrics(
    run_cfg: RunConfig, trainer: TransferTrainer, train_output: Any, data: TaskData, folder: Path
) -> dict[str, Any]:
    """What the run was and what training cost."""
    # What chose the best checkpoint: the task's metric, or trainer.metric_for_best_model.
    metric = (trainer.args.metric_for_best_model or "loss").removeprefix("eval_")
    greater_is_better = bool(trainer.args.greater_is_better)
    metrics: dict[str, Any] = {
        "name": run_cfg.name,
        "task": run_cfg.task.type,
        # The headline of the run: what chose its best checkpoint, and which way is better.
        "best_metric": {"name": metric, "greater_is_better": greater_is_better},
        "model": run_cfg.model.source,
        "model_name": run_cfg.model.name,  # the model group's option (minilm, mpnet) where one was chosen
        "pretrained": run_cfg.model.pretrained,
        "strategy": run_cfg.strategy.name,
        "seed": run_cfg.seed,
        "train_budget": budget_name(run_cfg.task.data),  # what `compare` varies; "all" for a plain run
        "examples": {name: len(split) for name, split in data.splits.items() if name not in data.extra_test},
        **_whole_run(trainer, train_output),
        # Of train_runtime_s, the evaluations during training (the validation split).
        "train_evaluation_s": round(sum(e.get("eval_runtime", 0.0) for e in trainer.state.log_history), 2),
        # As trained: strategy.min_steps and few_labels may change batches, epochs and the rate.
        "train_batch_size": trainer.args.per_device_train_batch_size,
        "learning_rate": trainer.args.learning_rate,
        "steps": trainer.state.global_step,
        # The Trainer's estimate of the training's floating-point operations (6 x tokens x parameters).
        "total_flos": trainer.state.total_flos,
        **_loss_ends(trainer.state.log_history),
        "epochs": round(trainer.state.epoch or 0, 3),
        "best_checkpoint": _relative(trainer.state.best_model_checkpoint, folder),
        "distributed": distributed.describe(trainer),
        "device": device.describe(trainer.args, trainer.model),
    }
    if trainer.optimizer is not None and any("name" in g for g in trainer.optimizer.param_groups):
        metrics["optimizer_groups"] = [
            {"name": g.get("name", str(i)), "initial_lr": g.get("initial_lr", g["lr"])}
            for i, g in enumerate(trainer.optimizer.param_groups)
        ]
    return metrics


def _whole_run(trainer: TransferTrainer, train_output: Any) -> dict[str, Any]:
    """Training time, speed and loss over every session of the run, as one that never stopped
    reports them, and how many times it was resumed. (The Trainer's own figures after a resume
    cover the resumed part only; its samples/s: all the run's samples over that part's time.)"""
    runtime = train_output.metrics["train_runtime"]
    progress = trainer.progress()
    total = trainer.progress_before.train_runtime_s + runtime
    return {
        "train_runtime_s": round(total, 2),
        "train_samples_per_second": round(train_output.metrics["train_samples_per_second"] * runtime / total, 3)
        if total > 0
        else 0.0,
        # The mean step loss over all of the run's optimizer steps.
        "train_loss": round(progress.loss_sum / max(trainer.state.global_step, 1), 6)
        if progress.loss_sum is not None
        else round(train_output.training_loss, 6),  # resumed from a checkpoint without the record
        "resumes": progress.resumes,
    }


def _calibrate(trainer: TransferTrainer, task: Task, encoded: Encoded) -> dict[str, Any] | None:
    """A new regression head's output drawn toward the mean on the validation split (calibration.py)."""

    regression = getattr(trainer.model.config, "problem_type", None) == "regression"
    if not (task.new_head and regression and "validation" in encoded.inputs):
        return None
    if distributed.is_sharded(trainer):  # no process holds the whole output layer
        log.info("head: output not rescaled (the model is sharded)")
        return None
    output = predict_in_order(trainer, encoded.inputs["validation"], "validation", sort=task.sort_eval_by_length)
    if output.label_ids is None:
        return None
    return calibrate(trainer.model, output.predictions, output.label_ids)


def _evaluate(
    trainer: TransferTrainer, task: Task, data: TaskData, encoded: Encoded
) -> tuple[dict[str, Any], dict[str, list]]:
    """Metrics and prediction records of the validation and test splits, in dataset order; the
    extra test sets (task.extra_test) are scored as the test split is, under "extra_test"."""

    metrics, predictions = {}, {}
    for split in ("validation", "test", *data.extra_test):
        if split not in encoded.inputs:
            continue
        output = predict_in_order(trainer, encoded.inputs[split], split, sort=task.sort_eval_by_length)
        scores, records = task.evaluate(output, split, data, encoded)
        scores = scores if scores is not None else "unlabeled: predicted, not scored"
        if split in data.extra_test:
            metrics.setdefault("extra_test", {})[split] = scores
        else:
            metrics[split] = scores
        if records:
            predictions[f"predictions_{split}"] = records
    return metrics, predictions


def _write_results(
    run_cfg: RunConfig,
    task: Task,
    folder: Path,
    metrics: dict[str, Any],
    predictions: dict[str, list[dict[str, Any]]],
) -> None:
    outputs.write_yaml(folder / "config.yaml", as_dict(run_cfg))
    outputs.write_json(folder / "metrics.json", metrics)
    for name, records in predictions.items():
        outputs.write_jsonl(folder / f"{name}.jsonl", records)
    data = run_cfg.task.data
    dataset = data.source or str(data.data_files)
    card = outputs.model_card(
        name=run_cfg.name,
        base_model=run_cfg.model.source,
        base_on_hub=resolve_source(run_cfg.model.source, "model") is None,
        dataset=dataset,
        dataset_on_hub=data.source is not None
        and data.data_files is None
        and resolve_source(data.source, "dataset") is None,
        pipeline_task=task.pipeline_task,
        strategy=run_cfg.strategy.name,
        trainable_modules=metrics["trained_modules"],
        metrics=metrics,
        settings={
            "epochs": metrics["epochs"],
            "learning rate": metrics["learning_rate"],
            "batch size (per device)": metrics["train_batch_size"],
            "max length": metrics["max_length"],
            "seed": run_cfg.seed,
            "train examples": metrics["examples"]["train"],
            "train time (s)": metrics["train_runtime_s"],
            "wall time (s)": metrics["wall_time_s"],
            "samples/s": metrics["train_samples_per_second"],
            "peak memory (MB)": f"{metrics['peak_memory_mb']} ({metrics['peak_memory_kind']})",
        },
        usage=task.usage_snippet("PATH_OR_REPO_ID", custom_code=outputs.ships_model_code(folder)),
        recipe=as_dict(run_cfg),
        extra_sets=getattr(run_cfg.task, "extra_test", None),
        dataset_name=run_cfg.task.name,
    )
    (folder / "README.md").write_text(card, encoding="utf-8")
    log.info("done%s", outputs.summary(metrics, folder))


def _loss_ends(history: list[dict[str, Any]]) -> dict[str, float]:
    """The first and last logged training losses: did the loss fall?"""
    losses = [entry["loss"] for entry in history if "loss" in entry]
    return {"train_loss_first_logged": losses[0], "train_loss_last_logged": losses[-1]} if losses else {}


def _relative(path: str | None, folder: Path) -> str | None:
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(folder))
    except ValueError:
        return path
