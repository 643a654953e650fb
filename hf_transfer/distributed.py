"""Multi-process runs (accelerate launch, torchrun): one training, one run folder, no silent fallback.

Every process composes the same config; the process group exists once the trainer settings are
checked (assembly.start: building TrainingArguments starts it, with the ddp settings given).
From then on the main process prepares the run folder and hands its path to the others, which
write nothing of their own (the CLI gives their Hydra outputs a temporary folder).

Silent failures seen on this stack, each refused here:
- a launcher that meant to start N processes started one (`accelerate launch --cpu
  --num_processes 2` does): WORLD_SIZE or `expected_world_size` says so, the process group
  does not;
- the model left unwrapped while ranks step on their own (checked at the first step).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hf_transfer import run_folder
from hf_transfer.errors import UserError

# Imported inside the functions that use them, not here: torch and transformers. This module is on the
# path of --help and of a config error, which stay quick (tests/test_architecture.py).


def launched_world_size() -> int:
    """The number of processes a launcher (torchrun, accelerate launch) says it started."""
    for key in ("WORLD_SIZE", "ACCELERATE_NUM_PROCESSES"):
        value = os.environ.get(key)
        if value and value.isdigit():
            return int(value)
    return 1


def is_secondary_process() -> bool:
    """True in every process of a launch but the main one (known before any setup)."""
    return int(os.environ.get("RANK", "0") or 0) > 0


def check_world(world_size: int, expected: int | None) -> None:
    """Refuse a run whose processes are not the ones that were asked for."""
    if (
        os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true"
        and "MASTER_ADDR" in os.environ
        and "WORLD_SIZE" not in os.environ
    ):
        # What `accelerate launch --cpu --num_processes N` (N > 1) leaves behind: it sets up a
        # rendezvous address for N processes, then starts one.
        raise UserError(
            "accelerate launch --cpu started one process, not the --num_processes asked for. For several CPU "
            "processes use `accelerate launch --multi_gpu --num_processes N` with trainer.use_cpu=true, "
            'or `--config_file "$(hf-transfer accelerate-config cpu_multi_process)"`'
        )
    launched = launched_world_size()
    wanted = expected or (launched if launched > 1 else None)
    if wanted is not None and world_size != wanted:
        source = "expected_world_size" if expected else "the launcher (WORLD_SIZE)"
        raise UserError(
            f"{source} asks for {wanted} processes, but this process belongs to a world of {world_size}: "
            "the launch did not start a distributed run. On CPUs use `accelerate launch --multi_gpu "
            "--num_processes N` (not --cpu, which starts one process) or torchrun, with trainer.use_cpu=true"
        )


def check_strategy(world_size: int, trainer: Mapping[str, Any], strategy: Any) -> None:
    """Refuse, before anything loads, a strategy whose trainable set changes mid-run where the
    wrapper fixes that set when it wraps the model: DDP syncs only the parameters that required
    grad then (the others would train on each rank alone, and the ranks' weights diverge);
    FSDP and DeepSpeed build their flat shards and optimizer partitions from them (blocks
    thawed later would never train), even in one process. `trainer`: the trainer.* keys."""
    if not strategy.changes_trainable_set:
        return
    wrapper = _sharding_wrapper(trainer.get("deepspeed"), trainer.get("fsdp"))
    if wrapper is None and world_size <= 1:
        return
    under = wrapper or f"DDP with {world_size} processes"
    raise UserError(
        f"gradual unfreezing (strategy.unfreeze_every) cannot run under {under}: it fixes the trainable "
        "parameters when it wraps the model. Run it in one plain process, or set strategy.unfreeze_every=null "
        "and choose strategy.num_layers"
    )


def _sharding_wrapper(deepspeed: Any, fsdp: Any) -> str | None:
    if deepspeed or os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return "DeepSpeed"
    if fsdp or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return "FSDP"
    return None


def shared_run_folder(world_size: int, process_index: int, requested: Path, resume: bool = False) -> Path:
    """The run folder, taken by the main process; the others get its path (and its error)."""

    if world_size <= 1:
        return run_folder.prepare(requested, resume)
    import torch.distributed as dist

    message: list[Any] = [None]
    if process_index == 0:
        try:
            message = [("ok", str(run_folder.prepare(requested, resume)))]
        except UserError as err:
            message = [("error", str(err))]
    dist.broadcast_object_list(message, src=0)
    status, value = message[0]
    if status == "error":
        raise UserError(value)
    return Path(value)


def describe(trainer: Any) -> dict[str, Any]:
    """What metrics.json records of the processes that trained."""
    args = trainer.args
    return {
        "world_size": args.world_size,
        "backend": args.distributed_state.backend if args.world_size > 1 else None,
        "wrapped_as": type(trainer.model_wrapped).__name__,
        "device": str(args.device),
    }


def check_wrapped(trainer: Any) -> None:
    """Across processes the model must be wrapped (DDP, FSDP, DeepSpeed): else ranks diverge.
    And FSDP asked for must be what wraps it: accelerate picks FSDP for GPU-type devices only,
    and on CPUs quietly wraps in DDP instead (every process then holds the whole model)."""
    if trainer.args.world_size > 1 and trainer.model_wrapped is trainer.model and not _is_fsdp_module(trainer.model):
        raise RuntimeError(
            f"{trainer.args.world_size} processes, but the model was not wrapped for distributed training: "
            "each process would train alone and their weights would diverge"
        )
    args = trainer.args
    if _sharding_wrapper(getattr(args, "deepspeed", None), getattr(args, "fsdp", None)) == "FSDP" and not (
        _is_fsdp_module(trainer.model) or _is_fsdp_module(trainer.model_wrapped)
    ):
        raise UserError(
            f"FSDP was asked for (trainer.fsdp or the accelerate config), but the model was wrapped as "
            f"{type(trainer.model_wrapped).__name__}: accelerate runs FSDP on GPUs only. On CPUs, drop the FSDP "
            "settings (the processes then train under DDP)"
        )


def _is_fsdp_module(model: Any) -> bool:
    # FSDP wraps in place: the Trainer then holds the FSDP module as both model and model_wrapped.
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    return isinstance(model, (FullyShardedDataParallel, FSDPModule))


def is_sharded(trainer: Any) -> bool:
    """FSDP and DeepSpeed ZeRO-3 split the parameters across processes: no process holds the
    whole model, and gathering it to save is a collective every process takes part in."""
    if trainer.is_fsdp_enabled:
        return True
    return trainer.is_deepspeed_enabled and zero3_enabled()


def zero3_enabled() -> bool:
    """Whether models load partitioned (DeepSpeed ZeRO-3): they cannot run a forward pass
    until the DeepSpeed engine has wrapped them."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()
