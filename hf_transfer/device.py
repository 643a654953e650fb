"""What the device a run is on decides: hub kernels, precision, and the data loader's settings.

Each choice is a default that a `model.*` or `trainer.*` key overrides, chosen once when the
run's pieces are built, and recorded in metrics.json (`device`), so that a run on a GPU gets
what a GPU user would pick without thinking and says what it picked.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

# Imported inside the functions that use them, not here: torch and huggingface_hub. This module is on
# the path of --help and of a config error, which stay quick (tests/test_architecture.py).

log = logging.getLogger(__name__)

_FALSE = {"0", "no", "false", "off", "n", "f"}


def accelerator() -> str | None:
    """'cuda', 'xpu' or 'mps' where torch sees one, else None."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        return "xpu"
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return "mps"
    return None


# -- hub kernels ------------------------------------------------------------------------
# transformers (5.25 and later, with the `kernels` package it requires) replaces layers on an
# accelerator by kernels fetched from the hub unless told not to, and, offline with none
# cached, fails in from_pretrained; every load of ours passes `use_kernels` explicitly.


def hub_kernels(setting: Any = "auto") -> bool:
    """Whether from_pretrained may swap layers for hub kernels (`model.kernels`: auto, true or
    false). `auto`: on an accelerator, with the `kernels` package, where the hub can be reached
    or a kernel is cached. The user's USE_HUB_KERNELS wins over all of it."""
    return decide_hub_kernels(
        setting,
        env=os.environ.get("USE_HUB_KERNELS"),
        on_accelerator=accelerator() in ("cuda", "xpu"),
        package=_kernels_package(),
        cached=_kernels_cached,
        reachable=_hub_reachable,
    )


def decide_hub_kernels(
    setting: Any, env: str | None, on_accelerator: bool, package: bool, cached: Any, reachable: Any
) -> bool:
    """`hub_kernels`' decision from the facts it reads (`cached`, `reachable`: callables, asked
    only when needed, as a reachability check opens a connection)."""
    if setting is False:
        return False
    if env is not None and env.strip().lower() in _FALSE:
        if setting is True:
            log.warning("model.kernels=true, but USE_HUB_KERNELS=%s turns hub kernels off: running without them", env)
        return False
    if not on_accelerator:
        return False  # transformers has no hub kernel for the CPU
    if not package:
        if setting is True:
            log.warning("model.kernels=true needs the kernels package (pip install kernels): running without them")
        return False
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        if cached():
            return True
        if setting is True:
            log.warning("model.kernels=true, but HF_HUB_OFFLINE is set and no hub kernel is cached under %s: "
                        "running without them", constants.HF_HUB_CACHE)  # fmt: skip
        else:
            log.info("hub kernels: off (HF_HUB_OFFLINE, none cached)")
        return False
    if setting is True or reachable():
        return True
    log.info("hub kernels: off (the hub at %s cannot be reached and none is cached)", constants.ENDPOINT)
    return cached()


def _kernels_package() -> bool:
    return importlib.util.find_spec("kernels") is not None


def _kernels_cached() -> bool:
    """Any kernels-community repository in the hub cache: a user who fetched kernels once."""
    from huggingface_hub import constants

    cache = Path(constants.HF_HUB_CACHE)
    return cache.is_dir() and any(cache.glob("models--kernels-community--*/snapshots/*"))


def _hub_reachable(timeout: float = 2.0) -> bool:
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


# -- precision, shapes and the data loader ---------------------------------------------------
PRECISION_KEYS = ("bf16", "fp16")
# On a GPU, batches padded to a multiple of this: a handful of shapes instead of one for every
# length, so that per-shape work (cuDNN attention plans, compiled graphs) is done a few times.
PAD_MULTIPLE = 16


def pad_multiple(device_type: str) -> int | None:
    """What batches are padded to a multiple of on `device_type` (None: their longest row)."""
    return PAD_MULTIPLE if device_type in ("cuda", "xpu") else None


def trainer_defaults(trainer: dict[str, Any], device: str | None) -> dict[str, Any]:
    """TrainingArguments defaults for `device` (None: the CPU), under the user's trainer.* keys:
    bf16 autocast where the GPU has it (fp16 where only that), pinned memory copied without
    waiting, and no per-step read of the loss on the host."""
    defaults: dict[str, Any] = {}
    if device not in ("cuda", "xpu"):
        defaults["dataloader_pin_memory"] = False  # pinning needs a CUDA or XPU device
        if device is None:
            return defaults
    else:
        defaults["dataloader_pin_memory"] = True
        # Batches from pinned memory go to the device without the host waiting for the copy.
        defaults["accelerator_config"] = {"non_blocking": True}
    if not any(key in trainer for key in PRECISION_KEYS) and device == "cuda":
        import torch

        defaults["bf16" if torch.cuda.is_bf16_supported() else "fp16"] = True
    # The Trainer reads each step's loss on the host to leave NaN/inf out of the logged mean:
    # a host-device synchronisation every step, which a small model's GPU step waits on.
    defaults["logging_nan_inf_filter"] = False
    return defaults


def describe(args: Any, model: Any) -> dict[str, Any]:
    """What the run trained on and with, for metrics.json."""
    import torch

    kind = args.device.type
    name = torch.cuda.get_device_name(args.device) if kind == "cuda" else kind
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
    return {
        "type": kind,
        "name": name,
        "precision": precision,
        "loader_workers": args.dataloader_num_workers,
        "pad_to_multiple_of": pad_multiple(kind),
        "hub_kernels": bool(getattr(model, "use_kernels", False)),
        "torch_compile": bool(args.torch_compile),
    }
