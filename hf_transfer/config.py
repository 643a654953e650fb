"""The run's configuration schema: what each key means and which values it takes.

`validate()` turns the mapping Hydra composed into a typed `RunConfig`. It fails on the first
unknown key, wrong type or impossible combination with one line naming the key, and it imports
nothing heavy, so mistakes are answered in about a second.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hf_transfer import schema
from hf_transfer.errors import UserError, did_you_mean, first_line


@dataclass
class ModelConfig:
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
    # Model config values to change on load, e.g. {hidden_dropout_prob: 0.0}.
    config_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from hf_transfer.assets import is_package_source, parse_package_source

        if is_package_source(self.source):
            parse_package_source(self.source, "model.source")


@dataclass
class HubConfig:
    push: bool = False
    repo_id: str | None = None
    private: bool = False
    revision: str | None = None
    commit_message: str | None = None
    # A self-hosted hub; HF_ENDPOINT is used when this is not set.
    endpoint: str | None = None

    def __post_init__(self) -> None:
        if self.push and not self.repo_id:
            raise ValueError("hub.push=true needs hub.repo_id=ORG/NAME")


@dataclass
class EarlyStoppingConfig:
    # Stop after this many evaluations without improvement of the best-model metric.
    patience: int | None = None
    threshold: float = 0.0


@dataclass
class RunConfig:
    name: str
    model: ModelConfig
    task: Any  # the task's own Config dataclass, chosen by task.type
    strategy: Any  # the strategy's own Config dataclass, chosen by strategy.name
    trainer: dict[str, Any]  # handed to transformers.TrainingArguments as it is
    hub: HubConfig = field(default_factory=HubConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    seed: int = 42
    # Refuse to train unless the run has this many processes (catches launches that fell back to one).
    expected_world_size: int | None = None


# Keys of TrainingArguments that this tool owns, and where the user sets them instead.
RESERVED_TRAINER_KEYS = {
    "output_dir": "the run folder is hydra.run.dir=PATH on the command line",
    "seed": "set the top-level key seed=...",
    "hub_token": "the token comes from HF_TOKEN or `hf auth login` and is never written into a config",
    "push_to_hub": "use hub.push=true hub.repo_id=ORG/NAME",
    "hub_model_id": "use hub.repo_id=ORG/NAME",
}


def validate(cfg: Mapping[str, Any]) -> RunConfig:
    """Check a composed config (DictConfig or dict) and return it typed."""
    data = _to_plain(cfg)
    data.pop("hydra", None)
    task_data = dict(data.get("task") or {})
    strategy_data = dict(data.get("strategy") or {})
    data["task"] = {}
    data["strategy"] = {}
    run = schema.build(RunConfig, data, "")
    run.task = build_task_config(task_data)
    run.strategy = build_strategy_config(strategy_data)
    run.trainer = check_trainer_keys(run.trainer)
    return run


def build_task_config(data: dict[str, Any]) -> Any:
    from hf_transfer.tasks import TASKS, task_class

    task_type = data.get("type")
    if task_type is None:
        raise UserError("missing key 'task.type'; choose one of: " + ", ".join(sorted(TASKS)))
    if task_type not in TASKS:
        raise UserError(
            f"unknown task type '{task_type}' in key 'task.type'{did_you_mean(task_type, TASKS)}; "
            f"choose one of: {', '.join(sorted(TASKS))}"
        )
    return schema.build(task_class(task_type).Config, data, "task")


def build_strategy_config(data: dict[str, Any]) -> Any:
    from hf_transfer.strategies import STRATEGIES

    name = data.get("name")
    if name not in STRATEGIES:
        raise UserError(
            f"unknown strategy '{name}' in key 'strategy.name'{did_you_mean(str(name), STRATEGIES)}; "
            f"choose one of: {', '.join(sorted(STRATEGIES))}"
        )
    return schema.build(STRATEGIES[name].Config, data, "strategy")


def check_trainer_keys(trainer: dict[str, Any]) -> dict[str, Any]:
    fields = training_arguments_fields()
    for key, value in trainer.items():
        if key in RESERVED_TRAINER_KEYS:
            raise UserError(f"key 'trainer.{key}' is set by hf_transfer: {RESERVED_TRAINER_KEYS[key]}")
        if key not in fields:
            raise UserError(
                f"unknown key 'trainer.{key}'{did_you_mean(key, fields)}: trainer.* keys are "
                "transformers.TrainingArguments fields (see its documentation)"
            )
        accepted = fields[key]
        if accepted is not None and value is not None:
            trainer[key] = _check_simple(value, accepted, f"trainer.{key}")
    return trainer


def _check_simple(value: Any, accepted: tuple[type, ...], key: str) -> Any:
    for tp in accepted:
        try:
            return schema.convert(value, tp, key)
        except UserError:
            continue
    expected = " or ".join(schema.describe(tp) for tp in accepted)
    raise UserError(f"key '{key}' must be {expected}, got {value!r}")


@functools.lru_cache(maxsize=1)
def training_arguments_fields() -> dict[str, tuple[type, ...] | None]:
    """Field names of transformers.TrainingArguments and, where simple, the types they take.

    Importing transformers.training_args costs several seconds (it pulls in torch and more), so
    the class body is read from its source file instead: config mistakes stay fast to report.
    The full check still happens when TrainingArguments is built at the start of the run.
    """
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("transformers is not installed: pip install 'transformers>=5'")
    source = Path(list(spec.submodule_search_locations)[0]) / "training_args.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "TrainingArguments":
            return {
                item.target.id: _simple_types(ast.unparse(item.annotation))
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            }
    raise RuntimeError(f"TrainingArguments not found in {source}")  # pragma: no cover


_SIMPLE = {"int": int, "float": float, "bool": bool, "str": str}


def _simple_types(annotation: str) -> tuple[type, ...] | None:
    """`int | None` -> (int,); anything with an enum, dict or list -> None (checked at run start)."""
    text = annotation.replace("Optional[", "").replace("Union[", "").replace("]", "")
    parts = [p.strip() for p in text.replace(",", "|").split("|") if p.strip() != "None"]
    if not parts or any(p not in _SIMPLE for p in parts):
        return None
    return tuple(_SIMPLE[p] for p in parts)


def _to_plain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # pragma: no cover
        return dict(cfg)
    if isinstance(cfg, DictConfig):
        from omegaconf.errors import OmegaConfBaseException

        # Hydra's own node resolves only inside a running job; it is not ours to check.
        cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])

        try:
            return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
        except OmegaConfBaseException as err:
            key = getattr(err, "full_key", None)
            message = first_line(err)
            raise UserError(f"key '{key}': {message}" if key else message) from None
    return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in cfg.items()}


def as_dict(run: RunConfig) -> dict[str, Any]:
    """The validated config as plain data (for config.yaml in the run folder)."""
    return dataclasses.asdict(run)
