"""Tokenizer and model: a pretrained base with a freshly initialised head for the task.

Also the model's anatomy (which modules are the head, the transformer blocks, what sits below
and above them), found from the module tree itself so that strategies work on any
BERT-family encoder or GPT-family decoder without a table per architecture.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from filelock import FileLock

from hf_transfer.assets import cache_root, count_one_time, is_package_source, model_location, parse_package_source
from hf_transfer.device import hub_kernels
from hf_transfer.errors import UserError, first_line

# Imported inside the functions that use them, not here: torch, transformers, tokenizers, safetensors
# and mean_pooling (torch). This module is on the path of --help and of a config error, which stay
# quick (tests/test_architecture.py).

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

# Architectures whose name says they generate text (GPT-2 calls its own "LMHeadModel").
CAUSAL_LM_ENDINGS = ("ForCausalLM", "LMHeadModel")


@dataclass
class ModelConfig:
    """`model.*`: the pretrained checkpoint a run starts from."""

    source: str = field(metadata={"help": "a hub id, a local folder or a package asset"})
    name: str | None = None
    # encoder (BERT-like) or decoder (GPT-like); detected from the checkpoint when not given.
    family: Literal["encoder", "decoder"] | None = None
    revision: str | None = None
    # false: the same architecture with random weights (the from-scratch baseline).
    pretrained: bool = True
    # A GGUF file inside `source` (llama.cpp checkpoints); converted once to safetensors.
    gguf_file: str | None = None
    lora_target_modules: list[str] | None = None
    trust_remote_code: bool = False
    # What a text classifier's head reads: "mean" (the average of the token states, what
    # sentence-transformers checkpoints were trained for), "architecture" (the AutoModelFor*
    # head: BERT's pooler over the first token, GPT's last token) or "auto" (mean where the
    # checkpoint's sentence-transformers config says it was trained for it).
    pooling: Literal["auto", "mean", "architecture"] = "auto"
    # Model config values to change on load, e.g. {hidden_dropout_prob: 0.0}.
    config_overrides: dict[str, Any] = field(default_factory=dict)
    # Layers swapped for kernels from the hub on a GPU (transformers' use_kernels): "auto" where
    # the hub can be reached or a kernel is cached, never offline without one (device.py).
    kernels: Literal["auto", True, False] = "auto"

    def __post_init__(self) -> None:
        if is_package_source(self.source):
            parse_package_source(self.source, "model.source")
        folder = Path(self.source).expanduser()
        if folder.is_dir() and self.gguf_file is None:
            _check_model_folder(folder, self.pretrained)


# The files `from_pretrained` reads weights from (a sharded checkpoint has an index beside them).
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")


def _check_model_folder(folder: Path, pretrained: bool) -> None:
    """A local checkpoint folder holds what loading it needs: checked before any data is read."""
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"model.source '{folder}' is a folder without config.json: give a folder that save_pretrained "
            "wrote (config.json and the weights), a run folder, or a hub id"
        )
    if pretrained and not any(any(folder.glob(pattern)) for pattern in WEIGHT_FILES):
        raise ValueError(
            f"model.source '{folder}' has no weights (no *.safetensors or pytorch_model.bin): save the model "
            "into it again, or set model.pretrained=false to start from random weights"
        )


@dataclass(frozen=True)
class Checkpoint:
    """The pretrained checkpoint of a run, read once (assembly.checkpoint builds it): where it
    is, its config as saved, its family, what a classifier's head reads, and its tokenizer
    (adapted to the task) with the length inputs are cut to."""

    settings: ModelConfig
    location: str  # what from_pretrained loads: a folder or a hub id (GGUF converted)
    config: Any  # the checkpoint's own config (config.json), without the task's labels
    family: str  # "encoder" or "decoder"
    pooling: str  # "mean" or "architecture": what model.pooling comes to for the task
    tokenizer: Any
    max_length: int

    @property
    def wraps_in_mean_pooling(self) -> bool:
        """Whether the run loads the base model alone and puts a new mean-pooling head on it (not
        where the checkpoint already is a mean-pooling classifier: it loads as it is)."""
        return self.pooling == "mean" and not is_mean_pooling(self.config)


# model_type values of decoder-only (GPT-like) architectures; others are told by their
# `architectures` entry, and `model.family` settles any doubt.
DECODER_TYPES = {
    "bloom", "codegen", "falcon", "gemma", "gemma2", "gemma3_text", "gpt2", "gpt_bigcode", "gpt_neo",
    "gpt_neox", "gptj", "granite", "llama", "mistral", "mixtral", "olmo", "olmo2", "opt", "phi", "phi3",
    "qwen2", "qwen3", "smollm3", "stablelm", "starcoder2",
}  # fmt: skip


def detect_family(config: Any, override: str | None = None) -> str:
    if override:
        return override
    config = inner_config(config)
    if config.model_type in DECODER_TYPES:
        return "decoder"
    architectures = getattr(config, "architectures", None) or []
    if architectures and all(a.endswith(CAUSAL_LM_ENDINGS) for a in architectures):
        return "decoder"
    return "encoder"


def checkpoint_location(cfg: ModelConfig) -> str:
    """A folder or hub id that `from_pretrained` loads; GGUF files are converted once first."""
    location = model_location(cfg.source)
    if cfg.gguf_file is None:
        return location
    return str(convert_gguf(Path(location), cfg.gguf_file))


def convert_gguf(folder: Path, gguf_file: str) -> Path:
    """A safetensors copy of a GGUF checkpoint, made once and kept in the cache.

    transformers dequantises GGUF weights to float on load, but a GGUF-loaded model cannot
    be saved; a model rebuilt from its config, with the state dict copied in, can.
    """

    if not (folder / gguf_file).is_file():
        raise UserError(f"model.gguf_file '{gguf_file}' is not in {folder}")
    stat = (folder / gguf_file).stat()
    key = hashlib.sha256(f"{folder / gguf_file}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    converted = cache_root() / "gguf" / f"{Path(gguf_file).stem}-{key}"
    if (converted / "config.json").exists():
        return converted
    converted.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(converted) + ".lock"):
        if (converted / "config.json").exists():
            return converted
        try:
            import gguf  # noqa: F401
        except ImportError:
            raise UserError(
                "model.gguf_file needs the gguf package: pip install 'hf-transfer-learning[gguf]' (or pip install gguf)"
            ) from None
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("converting %s to safetensors (once; cached in %s)", gguf_file, converted)
        started = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
        config = loaded.config
        # The weights are float now: the GGUF quantisation record would make the Trainer refuse them.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        work = Path(tempfile.mkdtemp(dir=converted.parent, prefix=f".{converted.name}.partial-"))
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        work.rename(converted)  # complete or absent, never half-written
        count_one_time(time.perf_counter() - started)
    return converted


def load_base_config(cfg: ModelConfig, location: str) -> Any:
    """The checkpoint's config.json (`location`: where checkpoint_location found it)."""
    from transformers import AutoConfig

    from hf_transfer import mean_pooling

    mean_pooling.register()  # a run folder of a mean-pooling classifier loads like any model
    try:
        return AutoConfig.from_pretrained(
            location, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise UserError(
            f"could not load the model config from '{cfg.source}' (model.source): {first_line(err)}"
        ) from None


def load_tokenizer(cfg: ModelConfig, family: str, location: str | None = None, config: Any = None) -> Any:
    """The checkpoint's tokenizer (`config`: the checkpoint's, where already read: AutoTokenizer
    reads it again otherwise, to find the tokenizer class)."""
    from transformers import AutoTokenizer

    location = location or checkpoint_location(cfg)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            location, config=config, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise UserError(f"could not load a tokenizer from '{cfg.source}' (model.source): {first_line(err)}") from None
    if family == "decoder":
        # A decoder classifies from its last real token: pad on the right, and it needs a pad id.
        tokenizer.padding_side = "right"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
            if tokenizer.pad_token is None:
                raise UserError(f"the tokenizer of '{cfg.source}' has no pad, end-of-text or unknown token to pad with")
            log.info("tokenizer has no pad token: padding with %r", tokenizer.pad_token)
    return tokenizer


def load_model(checkpoint: Checkpoint, auto_model: str, new_head: bool, **config_kwargs: Any) -> Any:
    """`auto_model` (an AutoModelFor* class name) on the checkpoint, with a fresh head when
    `new_head`; `config_kwargs` are model config values such as the labels."""
    import torch

    cfg, tokenizer = checkpoint.settings, checkpoint.tokenizer
    wrap, config, auto_class = _build_plan(checkpoint, auto_model, tokenizer.pad_token_id, config_kwargs)
    if cfg.pretrained:
        try:
            model = auto_class.from_pretrained(
                checkpoint.location,
                config=config,
                revision=cfg.revision,
                trust_remote_code=cfg.trust_remote_code,
                dtype=torch.float32,  # master weights in fp32; bf16/fp16 training autocasts
                use_kernels=hub_kernels(cfg.kernels),
            )
        except (OSError, ValueError, RuntimeError, _safetensors_error()) as err:
            raise UserError(
                f"could not load the weights of '{cfg.source}' (model.source): {first_line(err)}; "
                "a damaged or half-downloaded file: fetch or save the model again"
            ) from None
        if new_head and not wrap:
            reinit_head(model)
    else:
        log.info("model.pretrained=false: same architecture, random weights (the from-scratch baseline)")
        model = auto_class.from_config(config, trust_remote_code=cfg.trust_remote_code, dtype=torch.float32)
    # Before a head wraps it: the base model's own config then records the new vocabulary size.
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    if wrap:
        why = (
            "the checkpoint was trained for it (its sentence-transformers config)" if cfg.pooling == "auto" else "asked"
        )
        log.info("model.pooling=%s: the new head reads the mean of the token states; %s", cfg.pooling, why)
        model = _on_mean_pooling(model, config_kwargs)
    elif auto_model == SEQUENCE_CLASSIFICATION and new_head and cfg.pooling == "auto" and not is_mean_pooling(config):
        log.info("model.pooling=auto: the new head is the architecture's own (no sentence-transformers mean "
                 "pooling config found for '%s'; model.pooling=mean puts it on the mean)", cfg.source)  # fmt: skip
    return model


def model_config(checkpoint: Checkpoint, pad_token_id: int | None, **config_kwargs: Any) -> Any:
    """The checkpoint's config with `model.config_overrides`, the tokenizer's pad id and
    `config_kwargs` applied: made from the config read once, as from_pretrained makes it."""
    cfg, saved = checkpoint.settings, checkpoint.config
    config = type(saved).from_dict(saved.to_diff_dict(), **config_kwargs)
    config.name_or_path = saved.name_or_path
    for key, value in cfg.config_overrides.items():
        if not hasattr(config, key):
            raise UserError(f"model.config_overrides.{key}: {type(config).__name__} has no such setting")
        _check_override_kind(key, getattr(config, key), value)
        setattr(config, key, value)
    if pad_token_id is not None:
        config.pad_token_id = pad_token_id
    return config


def _check_override_kind(key: str, current: Any, value: Any) -> None:
    """A config override of another kind than the checkpoint's value (a text for a dropout
    rate) fails deep inside the model: refused here, naming both."""
    def kind(v: Any) -> str | None:
        if isinstance(v, bool):
            return "true or false"
        if isinstance(v, (int, float)):
            return "a number"
        if isinstance(v, str):
            return "a string"
        if isinstance(v, (list, tuple)):
            return "a list"
        return "a mapping" if isinstance(v, dict) else None

    wanted, given = kind(current), kind(value)
    if current is not None and value is not None and wanted is not None and given != wanted:
        raise UserError(
            f"model.config_overrides.{key} must be {wanted}, as the checkpoint's {current!r} is; got {value!r}"
        )


def _build_plan(
    checkpoint: Checkpoint, auto_model: str, pad_token_id: int | None, config_kwargs: dict[str, Any]
) -> tuple[bool, Any, Any]:
    """Whether a new mean-pooling head wraps the base model, the config to build from, and the
    Auto class that builds it."""
    import transformers

    wrap = auto_model == SEQUENCE_CLASSIFICATION and checkpoint.wraps_in_mean_pooling
    # Under mean pooling the labels belong to the classifier's config, not the base model's.
    config = model_config(checkpoint, pad_token_id, **({} if wrap else config_kwargs))
    return wrap, config, transformers.AutoModel if wrap else getattr(transformers, auto_model)


def skeleton(checkpoint: Checkpoint, auto_model: str, **config_kwargs: Any) -> Any:
    """The model a run would build, on the meta device: its modules without weights or memory."""
    import torch

    wrap, config, auto_class = _build_plan(checkpoint, auto_model, None, config_kwargs)
    with torch.device("meta"):
        model = auto_class.from_config(config, trust_remote_code=checkpoint.settings.trust_remote_code)
        return _on_mean_pooling(model, config_kwargs) if wrap else model


def _on_mean_pooling(base: Any, config_kwargs: dict[str, Any]) -> Any:
    from hf_transfer.mean_pooling import MeanPoolingForSequenceClassification

    # Classes get a cosine head; a number (regression) a linear layer.
    regression = config_kwargs.get("problem_type") == "regression"
    return MeanPoolingForSequenceClassification.from_base(
        base, **config_kwargs, **({"logit_scale": None} if regression else {})
    )


SEQUENCE_CLASSIFICATION = "AutoModelForSequenceClassification"



def resolve_pooling(cfg: ModelConfig, auto_model: str, config: Any, location: str) -> str:
    """ "mean" or "architecture": what `model.pooling` comes to for this checkpoint (its
    `config`, at `location`) and task."""
    if auto_model != SEQUENCE_CLASSIFICATION:
        return "architecture"  # config.validate refuses model.pooling=mean for other tasks
    if is_mean_pooling(config):
        if cfg.pooling == "architecture":
            log.warning("model.pooling=architecture: '%s' is a mean-pooling classifier and keeps its head; "
                        "start from its base checkpoint for the architecture's own", cfg.source)  # fmt: skip
        return "mean"  # a classifier saved with mean pooling keeps it
    if cfg.pooling != "auto":
        return cfg.pooling
    return "mean" if sentence_transformers_pooling(cfg, location) == "mean" else "architecture"


def sentence_transformers_pooling(cfg: ModelConfig, location: str) -> str | None:
    """How a sentence-transformers checkpoint pools ("mean", "cls", "lasttoken", ...), read from
    its modules.json and pooling config; None for any other checkpoint."""

    from transformers.utils import cached_file

    def read(name: str) -> Any:
        path = cached_file(
            location, name, revision=cfg.revision,
            _raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False,
        )  # fmt: skip
        return json.loads(Path(path).read_text(encoding="utf-8")) if path else None

    modules = read("modules.json") or []
    pooling = next((m for m in modules if str(m.get("type", "")).endswith(".Pooling")), None)
    if pooling is None:
        return None
    modes = [key for key, on in (read(f"{pooling['path']}/config.json") or {}).items()
             if key.startswith("pooling_mode_") and on is True]  # fmt: skip
    if "pooling_mode_mean_tokens" in modes:
        return "mean"
    return modes[0].removeprefix("pooling_mode_").removesuffix("_tokens").removesuffix("_token") if modes else None


def is_mean_pooling(config: Any) -> bool:
    from hf_transfer.mean_pooling import MeanPoolingConfig

    return isinstance(config, MeanPoolingConfig)


def pooling_of(model: Any) -> str:
    return "mean" if is_mean_pooling(model.config) else "architecture"


def inner_config(config: Any) -> Any:
    """The base model's own config (inside a mean-pooling classifier's), else `config` itself."""
    return config.base if is_mean_pooling(config) else config


def base_config(model: Any) -> Any:
    """The config of the base model inside `model` (its layer count, model type, limits)."""
    return inner_config(model.config)


def _safetensors_error() -> type[Exception]:
    from safetensors import SafetensorError

    return SafetensorError


def reinit_head(model: Any) -> None:
    """Initialise every head parameter anew, even those a same-shape checkpoint head filled.

    transformers has no public call for this: its init functions skip tensors marked
    `_is_hf_initialized` (loaded ones), so the mark is cleared, and each module goes through the
    model's own `_init_weights` (its init scheme, not torch's). tests/test_upstream.py fails
    if transformers changes either.
    """
    for name in anatomy(model).head:
        module = model.get_submodule(name)
        for parameter in module.parameters():
            parameter._is_hf_initialized = False
        for submodule in module.modules():
            model._init_weights(submodule)


@dataclass
class Anatomy:
    base: str  # the base model's attribute (bert, transformer, model, ...)
    head: list[str]  # top-level modules outside the base: what AutoModelFor* adds
    blocks: list[str]  # the transformer blocks, bottom to top
    below: list[str]  # base parameters under the first block (embeddings)
    above: list[str]  # base parameters over the last block (final norm, pooler)


# Relative-position tables that come after the blocks in the module tree but feed every block
# (MPNet's encoder.relative_attention_bias): they belong with the embeddings, never to the top.
_SHARED_BY_BLOCKS = {"relative_attention_bias", "rel_embeddings"}


def anatomy(model: Any) -> Anatomy:
    base_name = model.base_model_prefix
    if not hasattr(model, base_name):
        raise UserError(f"{type(model).__name__} has no base model '{base_name}': unsupported architecture")
    base = getattr(model, base_name)
    head = [
        name for name, child in model.named_children() if name != base_name and any(True for _ in child.parameters())
    ]
    blocks_name, blocks = _find_blocks(base, base_config(model))
    block_names = [f"{base_name}.{blocks_name}.{i}" for i in range(len(blocks))]
    below: list[str] = []
    above: list[str] = []
    seen_block = False
    for name, _ in base.named_parameters():
        if name.startswith(blocks_name + "."):
            seen_block = True
        else:
            shared = any(part in _SHARED_BY_BLOCKS for part in name.split("."))
            (above if seen_block and not shared else below).append(f"{base_name}.{name}")
    return Anatomy(base=base_name, head=head, blocks=block_names, below=below, above=above)


def _find_blocks(base: nn.Module, config: Any) -> tuple[str, Any]:
    """The ModuleList of transformer blocks: as long as the config's number of layers."""
    from torch import nn

    depth = getattr(config, "num_hidden_layers", None)
    lists = [(name, m) for name, m in base.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    for name, module in lists:
        if len(module) == depth:
            return name, module
    if lists:
        return max(lists, key=lambda item: len(item[1]))
    raise UserError(f"could not find the transformer blocks of {type(base).__name__}")


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for parameter in model.parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
    return trainable, total


_POSITION_OFFSET_TWO = {"roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text", "mpnet"}


def position_limit(model_config: Any) -> int | None:
    """The longest input the model has positions for (None: it does not say)."""
    model_config = inner_config(model_config)
    limits = [
        getattr(model_config, key, None) for key in ("max_position_embeddings", "n_positions", "max_sequence_length")
    ]
    model_limit = min((v for v in limits if isinstance(v, int) and v > 0), default=None)
    if model_limit and getattr(model_config, "model_type", "") in _POSITION_OFFSET_TWO:
        model_limit -= 2  # RoBERTa-style position ids start after the padding index
    return model_limit


def check_settings_fit(checkpoint: Checkpoint, task_cfg: Any, strategy_cfg: Any) -> None:
    """Settings the checkpoint cannot take, refused from its config before weights load: a
    task.max_length past its positions, a LoRA rank above its layers' width. A task's own
    default length is left to the task (QA's 384 is cut to a smaller model's)."""

    cfg, model_config = checkpoint.settings, checkpoint.config
    model = cfg.name or cfg.source
    default = {f.name: f.default for f in dataclasses.fields(task_cfg)}.get("max_length")
    max_length = getattr(task_cfg, "max_length", None)
    limit = position_limit(model_config)
    if max_length is not None and max_length != default and limit is not None and max_length > limit:
        raise UserError(
            f"task.max_length={max_length} is more than model {model} has positions for ({limit}): set it to "
            f"{limit} or less, or null for the model's limit"
        )
    inner = inner_config(model_config)
    width = next((v for key in ("hidden_size", "n_embd", "d_model", "dim")
                  if isinstance(v := getattr(inner, key, None), int) and v > 0), None)  # fmt: skip
    lora_rank = getattr(strategy_cfg, "r", None)
    if lora_rank is not None and width is not None and lora_rank > width:
        raise UserError(
            f"strategy.r={lora_rank} is above the width of the layers LoRA adapts in model {model} ({width}): "
            f"a rank is at most the width, and 4 to 64 is usual"
        )


def default_max_length(tokenizer: Any, model_config: Any) -> int:
    """The smaller of the tokenizer's and the model's limits (tokenizers may report 1e30)."""
    model_limit = position_limit(model_config)
    tokenizer_limit = tokenizer.model_max_length if tokenizer.model_max_length < 1_000_000 else None
    candidates = [v for v in (model_limit, tokenizer_limit) if v]
    return min(candidates) if candidates else 512


def ensure_pair_separator(tokenizer: Any) -> None:
    """Make `tokenizer(a, b)` put a separator token between the texts of a pair.

    GPT-2-style tokenizers join a pair with nothing in between. The separator goes into the
    tokenizer's own post-processor, so the saved tokenizer (and `pipeline`) does the same.
    """
    from tokenizers import processors

    separator = tokenizer.sep_token or tokenizer.eos_token
    if separator is None:
        raise UserError("a decoder tokenizer with no end-of-text token cannot separate text pairs")
    sep_id = tokenizer.convert_tokens_to_ids(separator)
    single = tokenizer("a")["input_ids"]
    pair = tokenizer("a", "b")["input_ids"]
    if sep_id in pair[len(single) - 1 :]:
        return
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    prefix = [tokenizer.convert_ids_to_tokens(i) for i in single[: single.index(bare[0])]]
    suffix = [tokenizer.convert_ids_to_tokens(i) for i in single[single.index(bare[0]) + len(bare) :]]
    specials = [
        (token, tokenizer.convert_tokens_to_ids(token)) for token in dict.fromkeys(prefix + suffix + [separator])
    ]
    template = processors.TemplateProcessing(
        single=[*prefix, "$A", *suffix],
        pair=[*prefix, "$A", separator, "$B:1", *suffix],
        special_tokens=specials,
    )
    backend = tokenizer.backend_tokenizer
    existing = backend.post_processor
    backend.post_processor = (
        processors.Sequence([existing, template]) if isinstance(existing, processors.ByteLevel) else template
    )
    check = tokenizer("a", "b")["input_ids"]
    if sep_id not in check[len(single) - 1 :]:  # pragma: no cover - a tokenizer we do not understand
        raise UserError(f"could not add a separator between text pairs to {type(tokenizer).__name__}")


def ensure_prefix_space(tokenizer: Any) -> None:
    """Byte-level BPE (GPT-2, RoBERTa) marks a word's leading space: pre-split words need one
    added, or a word tokenizes differently alone than in running text. Written into the
    tokenizer's own pre-tokenizer, so the saved tokenizer (and `pipeline`) does the same."""

    from tokenizers import Tokenizer

    backend = tokenizer.backend_tokenizer
    state = json.loads(backend.to_str())

    def switch_on(node: Any) -> bool:
        if not isinstance(node, dict):
            return False
        if node.get("type") == "ByteLevel":
            changed = not node.get("add_prefix_space", False)
            node["add_prefix_space"] = True
            return changed
        return any([switch_on(child) for child in node.get("pretokenizers", [])])

    if switch_on(state.get("pre_tokenizer")):
        backend.pre_tokenizer = Tokenizer.from_str(json.dumps(state)).pre_tokenizer
        tokenizer.add_prefix_space = True
