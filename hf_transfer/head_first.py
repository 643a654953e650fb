"""Head-first fine-tuning (`strategy.head_epochs=N`): a probe of the new head, then the strategy.

The new head is trained alone (head_only, on cached features: N epochs cost about one forward
pass over the data), and full, partial_unfreeze or lora then go on from that head instead of a
random one, so that their first steps do not bend the pretrained features to fit a random head
(linear probing then fine-tuning: Kumar et al., 2022, report better out-of-distribution accuracy
from it). The probe's head is kept in the run's scratch space with its record until the run is
complete, so that a resumed run starts its strategy from the same head without training the
probe again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors.torch import load_file, save_file

from hf_transfer import assembly, outputs
from hf_transfer.strategies import HeadOnly

if TYPE_CHECKING:
    from hf_transfer.config import RunConfig
    from hf_transfer.models import Checkpoint
    from hf_transfer.strategies import Strategy
    from hf_transfer.tasks import Task
    from hf_transfer.tasks.base import Encoded, TaskData

log = logging.getLogger(__name__)

RECORD = "head_probe.json"
WEIGHTS = "head_probe.safetensors"


def train_head_first(
    run_cfg: RunConfig,
    strategy: Strategy,
    task: Task,
    model: Any,
    checkpoint: Checkpoint,
    data: TaskData,
    encoded: Encoded,
    scratch: Path,
) -> dict[str, Any]:
    """Train the head of `model` alone for strategy.head_epochs epochs (or take the head a run
    that stopped kept in `scratch`); returns the probe's record for metrics.json."""
    config = run_cfg.strategy
    if (scratch / RECORD).is_file() and (scratch / WEIGHTS).is_file():
        missing = set(load_file(scratch / WEIGHTS)) - set(dict(model.named_parameters()))
        if not missing:
            model.load_state_dict(load_file(scratch / WEIGHTS, device=str(model.device)), strict=False)
            log.info("head-first: the head the probe trained is in %s", scratch / WEIGHTS)
            return json.loads((scratch / RECORD).read_text(encoding="utf-8"))

    probe_config = HeadOnly.Config(
        learning_rate=config.head_learning_rate or HeadOnly.Config.learning_rate,
        cache=config.cache,
        cache_memory_share=config.cache_memory_share,
        train_top=strategy.probe_trains_top,
    )
    probe = HeadOnly(probe_config, run_cfg.model, task.new_head, task.peft_task_type)
    applied = probe.apply(model)
    # The probe trains for its epochs and is scored once at its end; it keeps no checkpoints
    # (it is cheap to train again) and reports nowhere.
    trainer_keys = {
        **run_cfg.trainer,
        "num_train_epochs": config.head_epochs,
        "max_steps": -1,
        "learning_rate": probe_config.learning_rate,
        "eval_strategy": "no",
        "save_strategy": "no",
        "load_best_model_at_end": False,
        "report_to": "none",
    }
    probe_run = dataclasses.replace(
        run_cfg,
        trainer=trainer_keys,
        strategy=dataclasses.replace(probe_config, min_steps=0),
        early_stopping=dataclasses.replace(run_cfg.early_stopping, patience=None),
    )
    folder = scratch / "head_probe"
    args = assembly.training_arguments(probe_run, task, data, folder)
    log.info(
        "head-first: training the head alone for %s epoch(s) at rate %g", config.head_epochs, probe_config.learning_rate
    )
    trainer, cache = assembly.trainer(probe_run, args, task, probe, applied, checkpoint, data, encoded, folder, scratch)
    output = trainer.train()
    scores = {
        k.removeprefix("eval_"): v for k, v in trainer.evaluate().items() if not k.endswith(("runtime", "per_second"))
    }
    record = {
        "epochs": config.head_epochs,
        "learning_rate": probe_config.learning_rate,
        "trained_modules": applied.trainable_modules,
        "validation": scores,
        "train_runtime_s": round(output.metrics["train_runtime"], 2),
        "feature_cache": cache,
    }
    headline = args.metric_for_best_model.removeprefix("eval_")
    log.info("head-first: the probe reached validation %s %.4f", headline, scores.get(headline, float("nan")))
    if trainer.is_world_process_zero():
        head = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
        scratch.mkdir(parents=True, exist_ok=True)
        save_file(head, scratch / WEIGHTS)
        outputs.write_json(scratch / RECORD, record)
    return record
