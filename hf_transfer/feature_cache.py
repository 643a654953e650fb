"""The frozen part of a model computed once: head_only and partial_unfreeze train on cached features.

When the lowest K transformer blocks (and the embeddings below them) stay frozen for a whole
run, the output of block K-1 for an example never changes: frozen modules run in eval mode
(training.FrozenInEval), so it is a pure function of the example's inputs. `build`
computes it once for every example of every split; while the Trainer trains and evaluates,
`FeatureCache.attached` stands in for blocks 0..K-1: block 0 hands on the cached output of
block K-1, the others up to K-1 hand on their input. Everything else (attention masks,
position ids, rotary embeddings, the blocks that train, the head) is the model's own forward.

An example is found by its content (the real tokens of each of its inputs), so any sampler,
batch order, padding or process split finds it; a batch with an example that is not cached
runs the whole model as usual. Only real tokens are stored, never padding.

A cache larger than `memory_share` of the available memory lives on disk, as memory-mapped
arrays keyed by everything that changes them (the frozen weights, the inputs, the boundary,
the dtype): under HF_TRANSFER_CACHE, where later runs find it, else in the run folder's
scratch space. A build writes into a `.partial` folder renamed when complete, so an
interrupted build is never taken for a complete one. Multi-process runs cache on disk: each
process computes its share of the examples, and all of them read the whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil
import torch
import transformers
from accelerate import PartialState
from tqdm.auto import tqdm

from hf_transfer import disk
from hf_transfer.distributed import zero3_enabled
from hf_transfer.errors import UserError
from hf_transfer.models import anatomy

if TYPE_CHECKING:
    from transformers import TrainingArguments

    from hf_transfer.strategies import Applied, StrategyConfig
    from hf_transfer.tasks.base import Encoded

log = logging.getLogger(__name__)

# Inputs that say what is learned, or which positions are real: not part of an example's identity.
_NOT_KEYS = {"labels", "label", "attention_mask", "start_positions", "end_positions"}
_BUILD_BATCH = 64
# Room left on the disk beyond a cache on it: what the run writes next (logs, checkpoints) needs some.
SPARE_BYTES = 64 * 2**20


@dataclass
class Decision:
    """Whether a run trains on cached features, and why (for the log and metrics.json)."""

    frozen_blocks: int  # the blocks computed once; 0: no cache
    reason: str

    @property
    def used(self) -> bool:
        return self.frozen_blocks > 0


def decide(
    setting: Any, frozen_blocks: int, why_frozen: str, args: TrainingArguments, train_examples: int, padding_side: str
) -> Decision:
    """`strategy.cache` (auto | true | false) against what the run is: on when it pays and is
    exact. `true` where it cannot be refuses with the reason (a UserError)."""

    if setting is False:
        return Decision(0, "strategy.cache=false")
    impossible = None
    if frozen_blocks == 0:
        impossible = why_frozen
    elif zero3_enabled() or getattr(args, "fsdp", None):
        impossible = "the frozen blocks are sharded across processes (DeepSpeed ZeRO-3 or FSDP)"
    elif getattr(args, "torch_compile", False):
        impossible = "trainer.torch_compile compiles the blocks the cache stands in for"
    elif padding_side != "right":
        impossible = f"the tokenizer pads on the {padding_side}: positions would depend on the padding"
    if impossible is not None:
        if setting is True:
            raise UserError(f"strategy.cache=true, but nothing can be cached: {impossible}. Set strategy.cache=auto")
        return Decision(0, impossible)
    seen = _examples_trained(args)
    if setting == "auto" and seen is not None and seen < train_examples:
        return Decision(
            0, f"training sees {seen:,} examples, fewer than the {train_examples:,} the cache would compute first"
        )
    return Decision(frozen_blocks, f"{why_frozen}: their outputs are computed once")


def _examples_trained(args: TrainingArguments) -> int | None:
    """Examples a run with max_steps trains on (None: whole epochs)."""
    if getattr(args, "max_steps", -1) is None or args.max_steps <= 0:
        return None
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(args.world_size, 1)
    return args.max_steps * per_step


def example_key(values: dict[str, Any]) -> bytes:
    """An example's identity: the real tokens of each input but the labels and the mask."""
    parts = []
    for name in sorted(values):
        if name not in _NOT_KEYS:
            parts.append(name.encode() + b"=" + np.asarray(values[name], dtype=np.int64).tobytes())
    return b";".join(parts)


@dataclass
class _Store:
    """The cached block outputs of every example, real tokens only, one row after another."""

    features: np.ndarray  # (tokens, hidden), in memory or memory-mapped
    offsets: np.ndarray  # example i is features[offsets[i]:offsets[i + 1]]
    dtype: torch.dtype

    def batch(self, rows: list[int], length: int, device: Any) -> torch.Tensor:
        out = torch.zeros(len(rows), length, self.features.shape[1], dtype=self.dtype)
        for i, row in enumerate(rows):
            start, end = int(self.offsets[row]), int(self.offsets[row + 1])
            out[i, : end - start] = _from_numpy(self.features[start:end], self.dtype)
        return out.to(device)


@dataclass
class FeatureCache:
    """The outputs of blocks 0..frozen_blocks-1 of every example, and the stand-ins that use them."""

    blocks: list[Any]  # the model's transformer blocks
    frozen_blocks: int
    index: dict[bytes, int]
    store: _Store
    returns_tuple: bool
    record: dict[str, Any] = field(default_factory=dict)
    hits: int = 0  # forward passes that ran on cached features
    misses: int = 0  # forward passes that ran the whole model: an example the cache did not hold
    _current: torch.Tensor | None = None
    _attached: int = 0

    @contextlib.contextmanager
    def attached(self, model: Any) -> Iterator[None]:
        """Stand in for the frozen blocks while the Trainer trains or evaluates `model`."""
        if self._attached:  # evaluation inside training: already in place
            yield
            return
        handles = [
            model.register_forward_pre_hook(self._select, with_kwargs=True),
            model.register_forward_hook(self._clear, always_call=True),
        ]
        frozen = self.blocks[: self.frozen_blocks]
        own = [block.__dict__.get("forward") for block in frozen]  # a forward set on the instance (hooks)
        for i, block in enumerate(frozen):
            block.forward = self._stand_in(block.forward, first=i == 0)
        self._attached += 1
        try:
            yield
        finally:
            self._attached -= 1
            for handle in handles:
                handle.remove()
            for block, forward in zip(frozen, own):
                if forward is None:
                    del block.forward  # the class's own forward again
                else:
                    block.forward = forward
            self._current = None
            self.record.update(cached_batches=self.hits, uncached_batches=self.misses)

    def _select(self, module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        rows = batch_rows(self.index, kwargs)
        if rows is None:
            self.misses += 1
            return
        ids = kwargs["input_ids"]
        self._current = self.store.batch(rows, ids.shape[1], ids.device)
        self.hits += 1

    def _clear(self, module: Any, args: tuple, output: Any) -> None:
        self._current = None

    def _stand_in(self, forward: Callable, first: bool) -> Callable:
        def stand_in(*args: Any, **kwargs: Any) -> Any:
            if self._current is None:
                return forward(*args, **kwargs)
            hidden_states = args[0] if args else kwargs["hidden_states"]
            out = self._current.to(hidden_states.dtype) if first else hidden_states
            return (out,) if self.returns_tuple else out

        return stand_in


def batch_rows(index: dict[bytes, int], inputs: dict[str, Any]) -> list[int] | None:
    """The cache rows of a batch of model inputs, or None when one of its examples is not cached
    (or the call is not a plain forward pass: generation with a key-value cache)."""
    ids = inputs.get("input_ids")
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        return None
    if inputs.get("past_key_values") is not None or inputs.get("cache") is not None:
        return None
    # To numpy once for the batch: per-example tensor slicing costs more than the step it serves.
    sequences = {
        k: v.detach().cpu().numpy().astype(np.int64, copy=False)
        for k, v in inputs.items()
        if k not in _NOT_KEYS and isinstance(v, torch.Tensor) and v.shape == ids.shape
    }
    mask = inputs.get("attention_mask")
    real = (
        mask.detach().cpu().numpy().astype(bool) if isinstance(mask, torch.Tensor) and mask.shape == ids.shape else None
    )
    rows = []
    for i in range(ids.shape[0]):
        row = index.get(example_key({k: v[i] if real is None else v[i][real[i]] for k, v in sequences.items()}))
        if row is None:
            return None
        rows.append(row)
    return rows


class _Stop(Exception):
    """Raised by the hook on the last frozen block: nothing above it is needed to build."""


def build(
    decision: Decision,
    model: Any,
    blocks: list[Any],
    below: list[str],
    datasets: dict[str, Any],
    collator: Callable,
    *,
    device: Any,
    autocast: Callable[[], Any],
    scratch: Path,
    memory_share: float,
    process_index: int = 0,
    world_size: int = 1,
    wait: Callable[[], None] = lambda: None,
) -> FeatureCache | None:
    """Compute the output of block `decision.frozen_blocks - 1` for every distinct example of
    `datasets` (the encoded splits), or load it from a complete disk cache with the same key.
    `below`: the names of the parameters under the blocks (the embeddings). None when the data
    collator changes the inputs (batches would not find their examples)."""
    started = time.perf_counter()
    frozen = decision.frozen_blocks
    rows, index = _distinct_examples(datasets)
    lengths = np.fromiter((len(r["input_ids"]) for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    batches = _batches(lengths, _pads(collator, rows, lengths))
    sample = [int(i) for i in batches[0]]
    if batch_rows(index, collator([rows[i] for i in sample])) != sample:
        # The collator adds or changes inputs: batches would never find their examples.
        log.warning("feature cache: off (the data collator changes the inputs it pads)")
        return None
    model_was_training = model.training
    model.eval()
    try:  # a build that fails (a full disk) leaves the model as it found it
        probe, returns_tuple = _run_frozen(model, blocks[frozen - 1], collator([rows[0]]), device, autocast)
        hidden, dtype = probe.shape[-1], probe.dtype
        size = int(offsets[-1]) * hidden * probe.element_size()
        on_disk = world_size > 1 or size > memory_share * _available_memory()
        folder = _cache_folder(scratch, _key(model, blocks, frozen, below, index, dtype))
        loaded = _load(folder) if on_disk else None
        if loaded is None:
            partial = _partial(folder, scratch)
            features = _allocate(partial, (int(offsets[-1]), hidden), dtype, on_disk, process_index, wait)
            mine = batches[process_index::world_size]  # each process computes its share
            for batch in tqdm(mine, desc="Caching frozen features", disable=process_index != 0):
                out, _ = _run_frozen(model, blocks[frozen - 1], collator([rows[i] for i in batch]), device, autocast)
                for j, row in enumerate(batch):
                    features[offsets[row] : offsets[row + 1]] = _to_numpy(out[j, : lengths[row]])
            if on_disk:
                features.flush()
                wait()  # every process has written its share
                if process_index == 0:
                    _complete(partial, folder, {"tokens": int(offsets[-1]), "hidden": hidden, "dtype": str(dtype)})
                wait()
                features = _load(folder)
        else:
            features = loaded
    finally:
        model.train(model_was_training)
    store = _Store(features=features, offsets=offsets, dtype=dtype)
    record = {
        "used": True,
        "reason": decision.reason,
        "frozen_blocks": frozen,
        "blocks": len(blocks),
        "examples": len(rows),
        "tokens": int(offsets[-1]),
        "size_mb": round(size / 2**20, 1),
        "storage": "disk" if on_disk else "memory",
        "reused": loaded is not None,
        "build_s": round(time.perf_counter() - started, 2),
    }
    return FeatureCache(blocks, frozen, index, store, returns_tuple, record)


def _distinct_examples(datasets: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[bytes, int]]:
    rows: list[dict[str, Any]] = []
    index: dict[bytes, int] = {}
    for dataset in datasets.values():
        for row in dataset:
            key = example_key({k: v for k, v in row.items() if _is_sequence(v, row)})
            if key not in index:
                index[key] = len(rows)
                rows.append(row)
    return rows, index


def _pads(collator: Callable, rows: list[dict[str, Any]], lengths: np.ndarray) -> bool:
    """Whether the collator pads rows of different lengths (packed blocks are not padded)."""
    longest, shortest = int(np.argmax(lengths)), int(np.argmin(lengths))
    try:
        collator([rows[longest], rows[shortest]])
    except (ValueError, RuntimeError):
        return False
    return True


def _batches(lengths: np.ndarray, pads: bool) -> list[np.ndarray]:
    """Rows in batches of similar lengths, longest first (little padding); of equal lengths
    where the collator does not pad."""
    order = np.argsort(-lengths, kind="stable")
    groups = [order] if pads else np.split(order, np.flatnonzero(np.diff(lengths[order])) + 1)
    return [group[i : i + _BUILD_BATCH] for group in groups for i in range(0, len(group), _BUILD_BATCH)]


def _is_sequence(value: Any, row: dict[str, Any]) -> bool:
    return isinstance(value, list) and len(value) == len(row["input_ids"])


def _run_frozen(
    model: Any, last_frozen: Any, batch: dict[str, Any], device: Any, autocast: Callable
) -> tuple[torch.Tensor, bool]:
    """The output of `last_frozen` for a collated batch (the model's forward stops there), and
    whether the block returns it in a tuple."""
    captured: dict[str, Any] = {}

    def capture(module: Any, args: tuple, output: Any) -> None:
        captured["out"] = output
        raise _Stop

    inputs = {k: v.to(device) for k, v in batch.items() if k not in ("labels", "start_positions", "end_positions")}
    handle = last_frozen.register_forward_hook(capture)
    try:
        with torch.no_grad(), autocast():
            model(**inputs)
    except _Stop:
        pass
    finally:
        handle.remove()
    out = captured["out"]
    returns_tuple = isinstance(out, tuple)
    return (out[0] if returns_tuple else out).detach().cpu(), returns_tuple


def _key(
    model: Any, blocks: list[Any], frozen: int, below: list[str], index: dict[bytes, int], dtype: torch.dtype
) -> str:
    """Everything the cached values depend on: the weights up to the boundary, the model's
    config, the inputs, the boundary and the dtype."""

    digest = hashlib.sha256()
    digest.update(f"{frozen}|{dtype}|{transformers.__version__}|".encode())
    digest.update(model.config.to_json_string(use_diff=False).encode())
    parameters = dict(model.named_parameters())
    tensors = [(name, parameters[name]) for name in below]
    tensors += [(f"block{i}.{n}", p) for i, block in enumerate(blocks[:frozen]) for n, p in block.named_parameters()]
    for name, tensor in tensors:
        digest.update(name.encode())
        digest.update(_to_numpy(tensor.detach().cpu()).tobytes())
    for example in index:
        digest.update(hashlib.sha256(example).digest())
    return digest.hexdigest()[:32]


def _cache_folder(scratch: Path, key: str) -> Path:
    configured = os.environ.get("HF_TRANSFER_CACHE")
    root = Path(configured).expanduser() / "features" if configured else scratch
    return root / key


def _load(folder: Path) -> np.ndarray | None:
    if not (folder / "meta.json").is_file():  # written last: a folder without it is not complete
        return None
    return np.load(folder / "features.npy", mmap_mode="r")


def _allocate(
    partial: Path, shape: tuple[int, int], dtype: torch.dtype, on_disk: bool, process_index: int, wait: Callable
) -> np.ndarray:
    np_dtype = _NUMPY_DTYPES[dtype]
    if not on_disk:
        return np.empty(shape, dtype=np_dtype)
    size = int(np.prod(shape)) * np.dtype(np_dtype).itemsize
    # Every process asks (the same disk, the same answer): none is left waiting for another.
    disk.require(partial.parent, size + SPARE_BYTES, "the feature cache", "set strategy.cache=false")
    if process_index == 0:
        shutil.rmtree(partial, ignore_errors=True)  # an interrupted build's leftovers
        partial.mkdir(parents=True)
        file = partial / "features.npy"
        np.lib.format.open_memmap(file, mode="w+", dtype=np_dtype, shape=shape).flush()
        # The file is sparse: a disk that fills while pages are written kills the process (SIGBUS).
        # Its blocks are reserved now, so that a full disk is an error here instead.
        try:
            with file.open("r+b") as stream:
                os.posix_fallocate(stream.fileno(), 0, file.stat().st_size)
        except OSError as err:
            shutil.rmtree(partial, ignore_errors=True)
            if not disk.is_full(err):
                raise
            raise disk.NoSpace(
                f"not enough disk space for the feature cache in '{partial.parent}' ({disk.megabytes(size)}): "
                "free some space, or set strategy.cache=false"
            ) from None
    wait()
    return np.load(partial / "features.npy", mmap_mode="r+")


def _complete(partial: Path, folder: Path, meta: dict[str, Any]) -> None:
    (partial / "meta.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
    if (folder / "meta.json").is_file():  # another run completed the same cache meanwhile
        shutil.rmtree(partial)
        return
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)


def _partial(folder: Path, scratch: Path) -> Path:
    """Where a build writes until it is complete; named after the run folder as well, so that two
    runs building the same key never write into one folder."""
    run = hashlib.sha256(str(scratch.resolve()).encode()).hexdigest()[:8]
    return folder.with_name(f"{folder.name}.partial-{run}")


def _available_memory() -> int:
    return psutil.virtual_memory().available


# numpy has no bfloat16: those values are stored as their 16 bits.
_NUMPY_DTYPES = {
    torch.float32: np.float32,
    torch.float16: np.float16,
    torch.bfloat16: np.int16,
    torch.float64: np.float64,
}


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy()
    return tensor.numpy()


def _from_numpy(values: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(values))
    return tensor.view(torch.bfloat16) if dtype == torch.bfloat16 else tensor


def prepare(
    config: StrategyConfig,
    applied: Applied,
    args: TrainingArguments,
    collator: Callable,
    encoded: Encoded,
    padding_side: str,
    scratch: Path,
) -> tuple[FeatureCache | None, dict[str, Any]]:
    """Decide whether the run trains on cached features (`strategy.cache`, `config`) and build
    the cache for the Trainer, before the Trainer is made. Returns the cache (None: off) and
    what metrics.json records of it."""

    model = applied.model
    # cache=true asks for the probe's cache where the strategy itself has nothing frozen.
    setting = "auto" if config.cache is True and applied.frozen_blocks == 0 and config.head_epochs else config.cache
    decision = decide(
        setting, applied.frozen_blocks, applied.frozen_reason, args, len(encoded.inputs["train"]), padding_side
    )
    if decision.used:
        parts = anatomy(model)
        model.to(args.device)  # where the Trainer puts it (no sharding here: decide refuses it)
        try:
            cache = build(
                decision,
                model,
                [model.get_submodule(name) for name in parts.blocks],
                parts.below,
                encoded.inputs,
                collator,
                device=args.device,
                autocast=_autocast(args),
                scratch=scratch,
                memory_share=config.cache_memory_share,
                process_index=args.process_index,
                world_size=args.world_size,
                wait=PartialState().wait_for_everyone,
            )
        except disk.NoSpace as err:
            if config.cache is True:
                raise
            log.warning("feature cache: off (%s)", err)  # the run trains as it would without one
            cache, decision = None, Decision(0, "no disk space for it")
        if cache is not None:
            r = cache.record
            log.info(
                "feature cache: on (%s); %s examples, %s tokens, %.1f MB %s, %s in %.1f s",
                r["reason"], f"{r['examples']:,}", f"{r['tokens']:,}", r["size_mb"],
                "on disk" if r["storage"] == "disk" else "in memory",
                "reused" if r["reused"] else "computed", r["build_s"],
            )  # fmt: skip
            return cache, r
        if decision.used:
            decision = Decision(0, "the data collator changes the inputs it pads")
    log.info("feature cache: off (%s)", decision.reason)
    return None, {"used": False, "reason": decision.reason}


def _autocast(args: TrainingArguments) -> Callable[[], Any]:
    """The autocast the Trainer's accelerator will train in (it is not made yet): its mixed
    precision (trainer.bf16/fp16 or accelerate's setting), none under DeepSpeed (its engine
    casts the weights instead) and none for fp16 on a CPU, as accelerate decides."""
    precision = getattr(args, "mixed_precision", None) or ("bf16" if args.bf16 else "fp16" if args.fp16 else "no")
    if precision not in ("bf16", "fp16") or args.deepspeed or (precision == "fp16" and args.device.type == "cpu"):
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=args.device.type, dtype=dtype)
