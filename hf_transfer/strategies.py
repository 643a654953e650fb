"""What trains, and how the result is saved: head_only | full | partial_unfreeze | lora.

A strategy sees a model with its new head and its anatomy (models.Anatomy); it knows nothing
of datasets or of the Trainer. Each has a Config dataclass, whose defaults are in
conf/strategy/NAME.yaml, and is registered in STRATEGIES.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from hf_transfer.errors import UserError
from hf_transfer.models import Anatomy, anatomy

if TYPE_CHECKING:
    from hf_transfer.config import ModelConfig
    from hf_transfer.tasks import Task

log = logging.getLogger(__name__)


@dataclass
class StrategyConfig:
    name: str
    # The peak learning rate of this strategy; trainer.learning_rate, when set, wins.
    learning_rate: float


class Strategy:
    Config: ClassVar[type] = StrategyConfig

    def __init__(self, config: Any, model_config: ModelConfig, task: Task):
        self.config = config
        self.model_config = model_config
        self.task = task

    def apply(self, model: Any) -> Any:
        """Set what trains; may wrap the model (LoRA). Returns the model to train."""
        raise NotImplementedError

    def save(self, model: Any, folder: Path) -> None:
        """Write a complete model that `from_pretrained(folder)` loads."""
        model.save_pretrained(folder)

    def trainable_modules(self, model: Any) -> list[str]:
        """Short description of what trains, for logs and the model card."""
        return []

    def head(self, model: Any) -> list[str]:
        parts = anatomy(model)
        return parts.head if self.task.new_head else []


def freeze_all(model: Any) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def unfreeze_modules(model: Any, names: list[str]) -> None:
    for name in names:
        for parameter in model.get_submodule(name).parameters():
            parameter.requires_grad_(True)


def unfreeze_parameters(model: Any, names: list[str]) -> None:
    parameters = dict(model.named_parameters())
    for name in names:
        parameters[name].requires_grad_(True)


class HeadOnly(Strategy):
    """The new head trains; the whole pretrained base is frozen (a probe)."""

    @dataclass
    class Config(StrategyConfig):
        name: Literal["head_only"] = "head_only"
        learning_rate: float = 1e-3

    def apply(self, model: Any) -> Any:
        head = self.head(model)
        if not head:
            raise UserError(
                f"strategy head_only needs a new head, and task type '{self.task.config.type}' keeps the "
                "pretrained output layer; use full, partial_unfreeze or lora"
            )
        freeze_all(model)
        unfreeze_modules(model, head)
        return model

    def trainable_modules(self, model: Any) -> list[str]:
        return self.head(model)


class Full(Strategy):
    """Every parameter trains."""

    @dataclass
    class Config(StrategyConfig):
        name: Literal["full"] = "full"
        learning_rate: float = 5e-5

    def apply(self, model: Any) -> Any:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model

    def trainable_modules(self, model: Any) -> list[str]:
        return ["all"]


class PartialUnfreeze(Strategy):
    """The head, the top N transformer blocks and what sits over them (final norm, pooler)."""

    @dataclass
    class Config(StrategyConfig):
        name: Literal["partial_unfreeze"] = "partial_unfreeze"
        learning_rate: float = 1e-4
        num_layers: int = 2

        def __post_init__(self) -> None:
            if self.num_layers < 0:
                raise ValueError("strategy.num_layers must be 0 or more")

    def apply(self, model: Any) -> Any:
        parts = anatomy(model)
        blocks = self._top_blocks(parts)
        freeze_all(model)
        unfreeze_modules(model, self.head(model) + blocks)
        if blocks:
            unfreeze_parameters(model, parts.above)
        return model

    def _top_blocks(self, parts: Anatomy) -> list[str]:
        count = self.config.num_layers
        if count > len(parts.blocks):
            raise UserError(
                f"strategy.num_layers={count}, but the model has {len(parts.blocks)} transformer blocks"
            )
        return parts.blocks[len(parts.blocks) - count :] if count else []

    def trainable_modules(self, model: Any) -> list[str]:
        parts = anatomy(model)
        over = sorted({name.rsplit(".", 1)[0] for name in parts.above}) if self.config.num_layers else []
        return self.head(model) + self._top_blocks(parts) + over


# Default LoRA targets where peft has none (peft's table covers BERT, RoBERTa, GPT-2, Llama...).
LORA_TARGETS = {"distilbert": ["q_lin", "v_lin"]}


class Lora(Strategy):
    """Low-rank adapters on the attention projections (peft); the new head trains in full.

    The run folder gets the adapter (with the head) in adapter/ and the merged model at its
    root, so the root loads like any other model.
    """

    @dataclass
    class Config(StrategyConfig):
        name: Literal["lora"] = "lora"
        learning_rate: float = 5e-4
        r: int = 8
        alpha: int = 16
        dropout: float = 0.1
        # Module names to adapt; by default model.lora_target_modules, else peft's table.
        target_modules: list[str] | None = None
        bias: Literal["none", "all", "lora_only"] = "none"

        def __post_init__(self) -> None:
            if self.r < 1:
                raise ValueError("strategy.r (the LoRA rank) must be at least 1")

    def apply(self, model: Any) -> Any:
        from peft import LoraConfig, TaskType, get_peft_model
        from transformers.pytorch_utils import Conv1D

        targets = self._targets(model)
        leaves = {name.rsplit(".", 1)[-1]: module for name, module in model.named_modules()}
        missing = [t for t in targets if t not in leaves]
        if missing:
            linear_names = sorted({n for n, m in leaves.items() if type(m).__name__ in ("Linear", "Conv1D")})
            raise UserError(
                f"LoRA target modules {missing} are not in {type(model).__name__} (strategy.target_modules); "
                f"its linear layers are: {', '.join(linear_names)}"
            )
        head = self.head(model)
        lora_config = LoraConfig(
            task_type=TaskType[self.task.peft_task_type],
            r=self.config.r,
            lora_alpha=self.config.alpha,
            lora_dropout=self.config.dropout,
            target_modules=targets,
            bias=self.config.bias,
            # The whole head trains and is saved with the adapter (else it is lost on reload).
            modules_to_save=head or None,
            # GPT-2 stores its projections transposed (Conv1D).
            fan_in_fan_out=any(isinstance(leaves[t], Conv1D) for t in targets),
        )
        log.info("LoRA r=%d alpha=%d on %s; trained in full: %s", self.config.r, self.config.alpha, targets, head)
        return get_peft_model(model, lora_config)

    def _targets(self, model: Any) -> list[str]:
        if self.config.target_modules:
            return list(self.config.target_modules)
        if self.model_config.lora_target_modules:
            return list(self.model_config.lora_target_modules)
        model_type = model.config.model_type
        if model_type in LORA_TARGETS:
            return LORA_TARGETS[model_type]
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

        if model_type not in PEFT_TARGETS:
            raise UserError(
                f"no default LoRA target modules for model type '{model_type}': "
                "set model.lora_target_modules or strategy.target_modules"
            )
        return list(PEFT_TARGETS[model_type])

    def save(self, model: Any, folder: Path) -> None:
        model.save_pretrained(folder / "adapter")
        # Merging rewrites the wrapped model in place: this is the run's last use of it.
        merged = model.merge_and_unload()
        merged.save_pretrained(folder)

    def head(self, model: Any) -> list[str]:
        from peft import PeftModel

        if isinstance(model, PeftModel):
            model = model.get_base_model()
        return super().head(model)

    def trainable_modules(self, model: Any) -> list[str]:
        targets = self._targets(model.get_base_model() if hasattr(model, "get_base_model") else model)
        return [f"lora({', '.join(targets)})"] + self.head(model)


STRATEGIES: dict[str, type[Strategy]] = {
    "head_only": HeadOnly,
    "full": Full,
    "partial_unfreeze": PartialUnfreeze,
    "lora": Lora,
}


def make_strategy(config: Any, model_config: ModelConfig, task: Task) -> Strategy:
    return STRATEGIES[config.name](config, model_config, task)
