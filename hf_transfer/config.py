"""The run's configuration schema: what each key means and which values it takes.

Each step owns the dataclass of its keys (models.ModelConfig, data.DatasetConfig, each task's
and each strategy's Config, hub.HubConfig); `RunConfig` puts them together. The dataclasses are
the schema and, for strategies and the hub, the defaults too: `register_defaults` offers them
to Hydra as the options of the `strategy` and `hub` groups, so no YAML repeats them.

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
from typing import Any

from hydra.core.config_store import ConfigStore

from hf_transfer import schema
from hf_transfer.errors import UserError, did_you_mean, first_line, unknown_choice
from hf_transfer.few_labels import FewLabelsConfig
from hf_transfer.hub import HubConfig
from hf_transfer.models import SEQUENCE_CLASSIFICATION, ModelConfig
from hf_transfer.strategies import STRATEGIES
from hf_transfer.tasks import TASKS, task_class


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
    few_labels: FewLabelsConfig = field(default_factory=FewLabelsConfig)
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
    "resume_from_checkpoint": "to continue a run that did not finish, use `hf-transfer resume RUN_DIR`",
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
    _check_run_ranges(run)
    run.task = build_task_config(task_data)
    _check_task_ranges(run.task)
    _check_pooling(run)
    run.strategy = build_strategy_config(strategy_data)
    run.trainer = check_trainer_keys(run.trainer)
    return run


def build_task_config(data: dict[str, Any]) -> Any:
    task_type = data.get("type")
    if task_type is None:
        raise UserError("missing key 'task.type'; choose one of: " + ", ".join(sorted(TASKS)))
    if not isinstance(task_type, str) or task_type not in TASKS:
        raise unknown_choice("task type", task_type, TASKS, key="task.type")
    return schema.build(task_class(task_type).Config, data, "task")


def build_strategy_config(data: dict[str, Any]) -> Any:
    name = data.get("name")
    if not isinstance(name, str) or name not in STRATEGIES:
        raise unknown_choice("strategy", str(name), STRATEGIES, key="strategy.name")
    return schema.build(STRATEGIES[name].Config, data, "strategy")


def register_defaults() -> None:
    """Offer each strategy's Config defaults, and the hub's, to Hydra as group options
    (`strategy=lora`, `hub: default`): the dataclass states each default once. Plain mappings,
    not typed nodes, so that a wrong key or value is reported by `validate` (with the closest
    valid names), not by Hydra."""

    store = ConfigStore.instance()
    for name, strategy in STRATEGIES.items():
        store.store(group="strategy", name=name, node=dataclasses.asdict(strategy.Config()))
    store.store(group="hub", name="default", node=dataclasses.asdict(HubConfig()))


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
    _check_trainer_ranges(trainer)
    return trainer


# Values TrainingArguments would take and then fail on (a traceback mid-run) or act on silently.
_AT_LEAST_ONE = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                 "save_total_limit", "eval_accumulation_steps")  # fmt: skip
_MORE_THAN_ZERO = ("learning_rate", "eval_steps", "save_steps", "logging_steps")  # steps below 1: a share of all
_NOT_NEGATIVE = ("warmup_steps", "weight_decay", "max_grad_norm", "dataloader_num_workers")


# Beyond these a run does not end in any sense a user meant (1e9 epochs: 10^10 steps planned).
MAX_EPOCHS = 10_000
MAX_STEPS = 10_000_000
SEED_LIMIT = 2**32  # numpy's and torch's seeds are below it


def _check_run_ranges(run: RunConfig) -> None:
    if not 0 <= run.seed < SEED_LIMIT:
        raise UserError(f"key 'seed' must be from 0 to {SEED_LIMIT - 1}, got {run.seed}")
    if run.expected_world_size is not None and run.expected_world_size < 1:
        raise UserError(f"key 'expected_world_size' must be at least 1 (or null), got {run.expected_world_size}")
    stopping = run.early_stopping
    if stopping.patience is not None and stopping.patience < 1:
        raise UserError(
            f"key 'early_stopping.patience' must be at least 1 evaluation (or null: no early stopping), "
            f"got {stopping.patience}"
        )
    if stopping.threshold < 0:
        raise UserError(f"key 'early_stopping.threshold' must be 0 or more, got {stopping.threshold}")


def _check_trainer_ranges(trainer: dict[str, Any]) -> None:
    def refuse(key: str, allowed: str) -> None:
        raise UserError(f"key 'trainer.{key}' must be {allowed}, got {trainer[key]!r}")

    for key in _AT_LEAST_ONE:
        if isinstance(trainer.get(key), (int, float)) and trainer[key] < 1:
            refuse(key, "at least 1")
    for key in _MORE_THAN_ZERO:
        if isinstance(trainer.get(key), (int, float)) and trainer[key] <= 0:
            refuse(key, "more than 0")
    for key in _NOT_NEGATIVE:
        if isinstance(trainer.get(key), (int, float)) and trainer[key] < 0:
            refuse(key, "0 or more")
    if (
        isinstance(trainer.get("label_smoothing_factor"), (int, float))
        and not 0 <= trainer["label_smoothing_factor"] < 1
    ):
        refuse("label_smoothing_factor", "at least 0 and below 1")
    max_steps = trainer.get("max_steps")
    if isinstance(max_steps, int) and (max_steps == 0 or max_steps < -1):
        refuse("max_steps", "at least 1, or -1 to train for trainer.num_train_epochs")
    if isinstance(max_steps, int) and max_steps > MAX_STEPS:
        refuse("max_steps", f"at most {MAX_STEPS:,} (a run of more would not end)")
    epochs = trainer.get("num_train_epochs")
    if isinstance(epochs, (int, float)) and epochs <= 0 and not (isinstance(max_steps, int) and max_steps > 0):
        refuse("num_train_epochs", "more than 0 (else nothing trains), or trainer.max_steps set")
    if isinstance(epochs, (int, float)) and epochs > MAX_EPOCHS:
        refuse("num_train_epochs", f"at most {MAX_EPOCHS:,} (a run of more would not end)")


def _check_task_ranges(task: Any) -> None:
    """Limits every task's keys share; a task's own are in its Config."""
    if getattr(task, "max_length", None) is not None and task.max_length < 1:
        raise UserError(f"key 'task.max_length' must be at least 1 (or null: the model's limit), got {task.max_length}")
    labels = getattr(task, "labels", None) or []
    twice = sorted({label for label in labels if labels.count(label) > 1}, key=str)
    if twice:
        raise UserError(f"key 'task.labels' names {', '.join(map(repr, twice))} more than once: list each label once")


def _check_pooling(run: RunConfig) -> None:
    if run.model.pooling == "mean" and task_class(run.task.type).auto_model != SEQUENCE_CLASSIFICATION:
        raise UserError(
            f"model.pooling=mean is for text classification; task '{run.task.type}' uses its model's own "
            "output: remove model.pooling (or set it to auto)"
        )


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
