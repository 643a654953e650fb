"""What trains, and how the result is saved: head_only | full | partial_unfreeze | lora.

A strategy sees a model with its new head and its anatomy (models.Anatomy); it knows nothing
of datasets or of the Trainer. `apply` sets what trains and returns the record of it
(`Applied`: the model to train, what trains, which blocks stay frozen), which is what the rest
of the run reads; a strategy that changes what trains as the run goes (gradual unfreezing)
carries its schedule in `callbacks()` and goes on from a checkpoint through `resume_from`. Each has a Config dataclass, the schema and the defaults of its
`strategy.*` keys (offered to Hydra as the `strategy=NAME` option: config.register_defaults),
and is registered in STRATEGIES. A new strategy is one class here and one line there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from hf_transfer.errors import UserError
from hf_transfer.models import Anatomy, anatomy, base_config

# Imported inside the functions that use them, not here: peft, transformers and unfreezing (torch).
# This module is on the path of --help and of a config error, which stay quick
# (tests/test_architecture.py).

if TYPE_CHECKING:
    from hf_transfer.models import ModelConfig
    from hf_transfer.unfreezing import GradualUnfreezing, Layer

log = logging.getLogger(__name__)


@dataclass
class StrategyConfig:
    name: str
    # The peak learning rate of this strategy; trainer.learning_rate, when set, wins.
    learning_rate: float
    # Frozen blocks computed once (feature_cache.py): their outputs for every example, reused
    # by every epoch. auto: where it pays and is exact; true: refuse a run where it cannot; false.
    cache: Literal["auto"] | bool = "auto"
    # A cache larger than this share of the available memory is kept on disk, memory-mapped.
    cache_memory_share: float = 0.25
    # Head-first fine-tuning: train the new head alone on cached features for this many epochs
    # first (a linear probe), then go on with the strategy from that head. 0: no probe.
    head_epochs: float = 0
    # The probe's peak learning rate; null: head_only's.
    head_learning_rate: float | None = None
    # Train for at least this many optimizer steps: where the data makes fewer (few labelled
    # examples make few steps an epoch), batches shrink to 4 and epochs are added
    # (training.fit_schedule). 16 examples at batch 32 make one step, and a run of it learns
    # nothing (one class); 40 steps at batch 4 learn (BENCHMARKS.md, few labels). 0: exactly
    # the epochs and batch asked for.
    min_steps: int = 40

    def __post_init__(self) -> None:
        if self.learning_rate <= 0:
            raise ValueError(f"strategy.learning_rate must be more than 0, got {self.learning_rate}")
        if not 0 <= self.cache_memory_share <= 1:
            raise ValueError(
                f"strategy.cache_memory_share must be between 0 (always on disk) and 1, got {self.cache_memory_share}"
            )
        if self.head_epochs < 0:
            raise ValueError(f"strategy.head_epochs must be 0 (no probe) or more, got {self.head_epochs}")
        if self.min_steps < 0:
            raise ValueError(f"strategy.min_steps must be 0 (no minimum) or more, got {self.min_steps}")
        if self.head_learning_rate is not None and self.head_learning_rate <= 0:
            raise ValueError(f"strategy.head_learning_rate must be more than 0, got {self.head_learning_rate}")


@dataclass(frozen=True)
class Applied:
    """What a strategy set to train, as `Strategy.apply` leaves the model."""

    model: Any  # the model to train (LoRA: wrapped by peft)
    trainable_modules: list[str]  # a short description, for the log, metrics.json and the model card
    # The lowest blocks that stay frozen for the whole run (with the embeddings below them), and
    # why: the part of the model feature_cache can compute once.
    frozen_blocks: int
    frozen_reason: str


class Strategy:
    Config: ClassVar[type] = StrategyConfig
    # Whether a head-first probe (strategy.head_epochs) may train what sits over the blocks
    # (a pooler, a final norm) with the head: not where the saved result keeps only the head.
    probe_trains_top: ClassVar[bool] = True

    def __init__(self, config: Any, model_config: ModelConfig, new_head: bool, peft_task_type: str):
        """`new_head`: the task adds a head (False where the pretrained output layer is kept, as
        for a causal LM); `peft_task_type`: the peft.TaskType member name of the task."""
        self.config = config
        self.model_config = model_config
        self.new_head = new_head
        self.peft_task_type = peft_task_type

    def apply(self, model: Any) -> Applied:
        """Set what trains (the strategy's `_apply`; LoRA wraps the model) and say what it set."""
        model = self._apply(model)
        frozen, why = self._frozen_blocks(model)
        return Applied(model, self._trainable_modules(model), frozen, why)

    def _apply(self, model: Any) -> Any:
        """Set what trains; may wrap the model. Returns the model to train."""
        raise NotImplementedError

    def resume_from(self, checkpoint: Path) -> None:
        """Go on from a checkpoint of this run (after `apply`): a schedule of what trains resumes
        where it was. Most strategies have nothing to restore: the Trainer restores the rest."""

    def check(self, model: Any) -> None:
        """Refuse, with the fix, what does not fit the model's structure (blocks, modules). Needs
        no weights: `hf-transfer validate` runs it on a skeleton of the model."""

    def save(self, model: Any, folder: Path) -> None:
        """Write a complete model that `from_pretrained(folder)` loads."""
        model.save_pretrained(folder)

    def save_sharded(self, trainer: Any, folder: Path, load_base: Callable[[], Any]) -> None:
        """`save` for a model sharded across processes (FSDP, ZeRO-3); every process calls it.

        The Trainer gathers the whole state dict (a collective) and the main process writes it.
        """
        trainer.save_model(str(folder))
        _drop_training_args(trainer, folder)

    def _trainable_modules(self, model: Any) -> list[str]:
        """Short description of what trains, for logs and the model card."""
        return []

    def parameter_groups(self, model: Any, lr: float, weight_decay: float, decay_names: set[str]) -> list[dict] | None:
        """Optimizer parameter groups, or None for the Trainer's own (trainable parameters only)."""
        return None

    def callbacks(self) -> list[Any]:
        """TrainerCallbacks the strategy needs during training."""
        return []

    @property
    def changes_trainable_set(self) -> bool:
        """True when parameters start training part-way through (not possible under DDP)."""
        return False

    def record(self) -> dict[str, Any]:
        """What the strategy did, for metrics.json."""
        return {}

    def _frozen_blocks(self, model: Any) -> tuple[int, str]:
        """How many of the lowest blocks stay frozen for the whole run (with the embeddings
        below them), and why: the part of the model that feature_cache can compute once."""
        return 0, f"strategy {self.config.name} trains every block"

    def head(self, model: Any) -> list[str]:
        """The modules that are the task head: new ones, or a pretrained output layer that can
        train on its own (not when it is the input embedding matrix, tied)."""
        parts = anatomy(model)
        if self.new_head or not output_layer_tied(model):
            return parts.head
        return []


def _drop_training_args(trainer: Any, folder: Path) -> None:
    """Trainer.save_model also pickles TrainingArguments beside the model; as in an unsharded
    run, the run folder keeps them in its checkpoints only."""
    if trainer.is_world_process_zero():
        (folder / "training_args.bin").unlink(missing_ok=True)


def output_layer_tied(model: Any) -> bool:
    output, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    return output is not None and embeddings is not None and output.weight is embeddings.weight


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
        # Only the head learns, on fixed features: a higher rate than fine-tuning. With the
        # pooler training too, 1e-2 swings (bert_sentiment's validation accuracy fell to the
        # majority class after its second epoch); 3e-3 rises steadily (BENCHMARKS.md).
        learning_rate: float = 3e-3
        # Train what sits over the blocks with the head (BERT's pooler, a decoder's final norm).
        train_top: bool = True
        # On cached features an epoch of head training costs little, and a probe needs more
        # than one (bert_sentiment, 320 steps an epoch: 0.710 test accuracy after 1 epoch,
        # 0.731 after 3 at rate 1e-2; 0.724 after these 4 at 3e-3; BENCHMARKS.md).
        min_steps: int = 1000

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.head_epochs:
                raise ValueError(
                    "strategy.head_epochs is for full, partial_unfreeze and lora: head_only trains the head alone already"
                )

    def _apply(self, model: Any) -> Any:
        head = self.head(model)
        if not head:
            raise UserError(
                f"strategy head_only trains the output layer, and {type(model).__name__} ties it to the input "
                "embeddings (tie_word_embeddings): training it would train the embeddings too. "
                "Use lora, partial_unfreeze or full"
            )
        freeze_all(model)
        unfreeze_modules(model, head)
        if self.config.train_top:
            unfreeze_parameters(model, anatomy(model).above)
        return model

    def _trainable_modules(self, model: Any) -> list[str]:
        above = sorted({name.rsplit(".", 1)[0] for name in anatomy(model).above}) if self.config.train_top else []
        return self.head(model) + above

    def _frozen_blocks(self, model: Any) -> tuple[int, str]:
        blocks = len(anatomy(model).blocks)
        return blocks, f"head_only freezes all {blocks} blocks"


def _check_nothing_to_cache(config: StrategyConfig, why: str) -> None:
    if config.cache is True and not config.head_epochs:
        raise ValueError(
            f"strategy.cache=true, but strategy {why}: nothing stays frozen to cache (only a head-first probe, "
            "strategy.head_epochs, would use it). Set strategy.cache=auto"
        )


def _check_decay(value: float | None) -> None:
    if value is not None and not 0 < value <= 1:
        raise ValueError(
            "strategy.layerwise_lr_decay must be in (0, 1]: each layer's rate is the one above it times this"
        )


class Full(Strategy):
    """Every parameter trains; optionally with lower rates for lower layers."""

    @dataclass
    class Config(StrategyConfig):
        name: Literal["full"] = "full"
        # MiniLM-sized models take a higher rate than BERT-base's usual 5e-5: bert_sentiment's
        # test accuracy 0.8407 at 1e-4 against 0.8345 at 5e-5 (seed 42), and 16 labelled
        # examples (min_steps' 40 steps) 0.579 against 0.545 (mean of 3 seeds; BENCHMARKS.md).
        learning_rate: float = 1e-4
        # Each block trains at the rate of the one above it times this factor (e.g. 0.8); the
        # embeddings lowest. null: one rate for all.
        layerwise_lr_decay: float | None = None

        def __post_init__(self) -> None:
            super().__post_init__()
            _check_decay(self.layerwise_lr_decay)
            _check_nothing_to_cache(self, "full trains every block")

    def _apply(self, model: Any) -> Any:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model

    def _trainable_modules(self, model: Any) -> list[str]:
        return ["all"]

    def parameter_groups(self, model: Any, lr: float, weight_decay: float, decay_names: set[str]) -> list[dict] | None:
        if self.config.layerwise_lr_decay is None:
            return None
        from hf_transfer.unfreezing import layers_top_down, parameter_groups

        layers = layers_top_down(model, anatomy(model))
        return parameter_groups(model, layers, lr, self.config.layerwise_lr_decay, weight_decay, decay_names)


class PartialUnfreeze(Strategy):
    """The head, the top N transformer blocks and what sits over them (final norm, pooler).

    With `unfreeze_every`, more blocks thaw as training goes on (gradual unfreezing, from the
    top down); with `layerwise_lr_decay`, lower blocks train at lower rates.
    """

    @dataclass
    class Config(StrategyConfig):
        name: Literal["partial_unfreeze"] = "partial_unfreeze"
        learning_rate: float = 1e-4
        # Blocks that train from the start, from the top (0: the head only).
        num_layers: int = 2
        # Gradual unfreezing: every `unfreeze_every` epochs (or steps), `unfreeze_blocks` more
        # blocks start training, from the top down, until `max_layers` train (null: all); then
        # the embeddings too, with `unfreeze_embeddings`. null: the trainable set never changes.
        unfreeze_every: int | None = None
        unfreeze_unit: Literal["epoch", "step"] = "epoch"
        unfreeze_blocks: int = 1
        max_layers: int | None = None
        unfreeze_embeddings: bool = False
        # Each block trains at the rate of the one above it times this (e.g. 0.8); null: one rate.
        layerwise_lr_decay: float | None = None

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.num_layers < 0:
                raise ValueError("strategy.num_layers must be 0 or more")
            if self.unfreeze_every is not None and self.unfreeze_every < 1:
                raise ValueError("strategy.unfreeze_every must be at least 1 (or null for no schedule)")
            if self.unfreeze_blocks < 1:
                raise ValueError("strategy.unfreeze_blocks must be at least 1")
            if self.max_layers is not None and self.max_layers < self.num_layers:
                raise ValueError("strategy.max_layers must be at least strategy.num_layers")
            _check_decay(self.layerwise_lr_decay)
            if self.num_layers == 0 and self.unfreeze_every is None:
                log.warning("strategy=partial_unfreeze with num_layers=0 and no strategy.unfreeze_every trains the "
                            "head alone, as strategy=head_only does")  # fmt: skip

    def __init__(self, config: Any, model_config: ModelConfig, new_head: bool, peft_task_type: str):
        super().__init__(config, model_config, new_head, peft_task_type)
        self.schedule: GradualUnfreezing | None = None
        self._layers: list[Layer] = []

    def check(self, model: Any) -> None:
        parts = anatomy(model)
        self._top_blocks(parts)
        if self.config.unfreeze_every is not None:
            self._check_depth(self.config.max_layers or 0, parts, "max_layers")

    def _apply(self, model: Any) -> Any:
        parts = anatomy(model)
        blocks = self._top_blocks(parts)
        head = self.head(model)
        if not head and not blocks:
            raise UserError(
                f"strategy.num_layers=0 trains the head alone, and {type(model).__name__} has no head of its own: "
                "its output layer is tied to the input embeddings (tie_word_embeddings). "
                "Set strategy.num_layers to 1 or more"
            )
        freeze_all(model)
        unfreeze_modules(model, head + blocks)
        if blocks:
            unfreeze_parameters(model, parts.above)
        self._layers = self._scheduled_layers(model, parts)
        if self.config.unfreeze_every is not None:
            from hf_transfer.unfreezing import GradualUnfreezing

            start = 1 + len(blocks)  # the head layer and the blocks that train from the start
            self.schedule = GradualUnfreezing(
                pending=self._layers[start:],
                every=self.config.unfreeze_every,
                unit=self.config.unfreeze_unit,
                per_stage=self.config.unfreeze_blocks,
            )
        return model

    def _scheduled_layers(self, model: Any, parts: Anatomy) -> list[Layer]:
        """Every layer that trains now or will later, top down."""
        from hf_transfer.unfreezing import layers_top_down

        layers = layers_top_down(model, parts)
        if self.config.unfreeze_every is None:
            depth = len(self._top_blocks(parts))
            return layers[: 1 + depth]
        self._check_depth(self.config.max_layers or 0, parts, "max_layers")
        depth = len(parts.blocks) if self.config.max_layers is None else self.config.max_layers
        chosen = layers[: 1 + depth]
        if self.config.unfreeze_embeddings and depth == len(parts.blocks):
            chosen.append(layers[-1])
        return chosen

    def _top_blocks(self, parts: Anatomy) -> list[str]:
        count = self.config.num_layers
        self._check_depth(count, parts, "num_layers")
        return parts.blocks[len(parts.blocks) - count :] if count else []

    @staticmethod
    def _check_depth(count: int, parts: Anatomy, key: str) -> None:
        if count > len(parts.blocks):
            raise UserError(f"strategy.{key}={count}, but the model has {len(parts.blocks)} transformer blocks")

    def _trainable_modules(self, model: Any) -> list[str]:
        parts = anatomy(model)
        over = sorted({name.rsplit(".", 1)[0] for name in parts.above}) if self.config.num_layers else []
        described = self.head(model) + self._top_blocks(parts) + over
        if self.schedule is not None:
            described.append(
                f"then {self.config.unfreeze_blocks} more block(s) every {self.config.unfreeze_every} "
                f"{self.config.unfreeze_unit}(s), down to {len(self._layers) - 1} layer(s)"
            )
        return described

    def parameter_groups(self, model: Any, lr: float, weight_decay: float, decay_names: set[str]) -> list[dict] | None:
        if self.schedule is None and self.config.layerwise_lr_decay is None:
            return None
        from hf_transfer.unfreezing import parameter_groups

        return parameter_groups(model, self._layers, lr, self.config.layerwise_lr_decay, weight_decay, decay_names)

    def callbacks(self) -> list[Any]:
        return [self.schedule] if self.schedule is not None else []

    def resume_from(self, checkpoint: Path) -> None:
        if self.schedule is not None:
            self.schedule.restore_from(checkpoint)

    @property
    def changes_trainable_set(self) -> bool:
        return self.config.unfreeze_every is not None

    def record(self) -> dict[str, Any]:
        return {"unfreezing": self.schedule.record()} if self.schedule is not None else {}

    def _frozen_blocks(self, model: Any) -> tuple[int, str]:
        # With gradual unfreezing, the lowest boundary the schedule reaches: blocks between it
        # and the current one run each step until they thaw, and the cache stays exact.
        blocks = len(anatomy(model).blocks)
        trained = [layer for layer in self._layers if layer.name not in ("head", "embeddings")]
        frozen = blocks - len(trained)
        if any(layer.name == "embeddings" for layer in self._layers):
            return 0, "the embeddings train (strategy.unfreeze_embeddings)"
        if frozen == 0:
            return 0, f"all {blocks} blocks train" + (" by the end of the schedule" if self.schedule else "")
        scheduled = " (the lowest that ever trains, with gradual unfreezing)" if self.schedule else ""
        return frozen, f"partial_unfreeze keeps the lowest {frozen} of {blocks} blocks frozen{scheduled}"


# Default LoRA targets where peft has none (peft's table covers BERT, RoBERTa, GPT-2, Llama...).
LORA_TARGETS = {"distilbert": ["q_lin", "v_lin"], "mpnet": ["q", "v"]}


class Lora(Strategy):
    """Low-rank adapters on the attention projections (peft); the new head trains in full.

    The run folder gets the adapter (with the head) in adapter/ and the merged model at its
    root, so the root loads like any other model.
    """

    probe_trains_top = False  # adapter/ holds the head only: a probe must not change the base under it

    @dataclass
    class Config(StrategyConfig):
        name: Literal["lora"] = "lora"
        learning_rate: float = 5e-4
        r: int = 8  # the rank of the adapters
        alpha: int = 16  # their scale is alpha / r
        dropout: float = 0.1
        # Module names to adapt; by default model.lora_target_modules, else peft's table.
        target_modules: list[str] | None = None
        bias: Literal["none", "all", "lora_only"] = "none"

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.r < 1:
                raise ValueError("strategy.r (the LoRA rank) must be at least 1")
            if not 0 <= self.dropout < 1:
                raise ValueError(f"strategy.dropout must be at least 0 and below 1, got {self.dropout}")
            if self.alpha <= 0:
                raise ValueError(f"strategy.alpha must be more than 0, got {self.alpha}")
            _check_nothing_to_cache(self, "lora adapts every block")

    def check(self, model: Any) -> None:
        leaves = {name.rsplit(".", 1)[-1]: module for name, module in model.named_modules()}
        missing = [t for t in self._targets(model) if t not in leaves]
        if missing:
            linear_names = sorted({n for n, m in leaves.items() if type(m).__name__ in ("Linear", "Conv1D")})
            raise UserError(
                f"LoRA target modules {missing} are not in {type(model).__name__} (strategy.target_modules); "
                f"its linear layers are: {', '.join(linear_names)}"
            )

    def _apply(self, model: Any) -> Any:
        from peft import LoraConfig, TaskType, get_peft_model
        from transformers.pytorch_utils import Conv1D

        self.check(model)
        targets = self._targets(model)
        leaves = {name.rsplit(".", 1)[-1]: module for name, module in model.named_modules()}
        head = self.head(model)
        lora_config = LoraConfig(
            task_type=TaskType[self.peft_task_type],
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
        model_type = base_config(model).model_type
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

    def save_sharded(self, trainer: Any, folder: Path, load_base: Callable[[], Any]) -> None:
        # The gathered adapter (with the head) is saved by all; the sharded model cannot merge
        # in place, so the main process merges it into a fresh copy of the base.
        from peft import PeftModel

        trainer.save_model(str(folder / "adapter"))
        _drop_training_args(trainer, folder / "adapter")
        if trainer.is_world_process_zero():
            merged = PeftModel.from_pretrained(load_base(), folder / "adapter").merge_and_unload()
            merged.save_pretrained(folder)

    def head(self, model: Any) -> list[str]:
        """A new head trains in full beside the adapters; a pretrained output layer stays as it is."""
        from peft import PeftModel

        if not self.new_head:
            return []
        if isinstance(model, PeftModel):
            model = model.get_base_model()
        return super().head(model)

    def _trainable_modules(self, model: Any) -> list[str]:
        targets = self._targets(model.get_base_model() if hasattr(model, "get_base_model") else model)
        return [f"lora({', '.join(targets)})"] + self.head(model)


STRATEGIES: dict[str, type[Strategy]] = {
    "head_only": HeadOnly,
    "full": Full,
    "partial_unfreeze": PartialUnfreeze,
    "lora": Lora,
}


def make_strategy(config: Any, model_config: ModelConfig, new_head: bool, peft_task_type: str) -> Strategy:
    return STRATEGIES[config.name](config, model_config, new_head, peft_task_type)
