"""Gradual unfreezing and layer-wise learning-rate decay, done so that they really happen.

Two silent failures are designed out here:

- The Trainer's optimizer holds only the parameters that required grad when it was built, so a
  block unfrozen later would never be updated. Here the optimizer is built with every
  parameter that will ever train, each layer in its own group; a frozen parameter has no
  gradient, which the optimizer skips (no update, no weight decay), so it stays bit-identical
  until its block is unfrozen. The learning-rate schedule scales every group, including those
  whose parameters join later.
- DDP syncs only the parameters that required grad when the model was wrapped: a schedule
  that changes the trainable set is refused under multi-process training (see run.py).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from hf_transfer.models import Anatomy, count_parameters  # noqa: F401 (Anatomy: type of `parts`)

log = logging.getLogger(__name__)

UNFREEZING = "unfreezing.json"  # in a checkpoint: the stage reached, and what thawed when


@dataclass
class Layer:
    """A unit of the layer-wise schedule: the head, one block, or the embeddings."""

    name: str
    parameters: list[str]  # parameter names in the model


def layers_top_down(model: Any, parts: Anatomy) -> list[Layer]:
    """The head, then each block from the top, then the embeddings.

    What sits over the blocks (a decoder's final norm, BERT's pooler) goes with the top block:
    it thaws with it and shares its learning rate.
    """
    names = [n for n, _ in model.named_parameters()]
    layers = [Layer("head", [n for n in names if any(n.startswith(h + ".") for h in parts.head)])]
    for position, block in enumerate(reversed(parts.blocks)):
        members = [n for n in names if n.startswith(block + ".")]
        layers.append(Layer(block, members + (list(parts.above) if position == 0 else [])))
    layers.append(Layer("embeddings", list(parts.below)))
    return layers


def parameter_groups(
    model: Any,
    layers: list[Layer],
    base_lr: float,
    lr_decay: float | None,
    weight_decay: float,
    decay_names: set[str],
) -> list[dict[str, Any]]:
    """Optimizer groups, two per layer (with and without weight decay), rates decayed by depth.

    The head is at depth 0 and trains at `base_lr`; each layer below it trains at the rate
    of the one above times `lr_decay`; the embeddings come last and lowest.
    """
    parameters = dict(model.named_parameters())
    groups = []
    for depth, layer in enumerate(layers):
        lr = base_lr * (lr_decay**depth if lr_decay else 1.0)
        for decays in (True, False):
            members = [parameters[n] for n in layer.parameters if (n in decay_names) == decays]
            if members:
                groups.append(
                    {
                        "params": members,
                        "lr": lr,
                        "weight_decay": weight_decay if decays else 0.0,
                        "name": f"{layer.name}{'' if decays else ' (no decay)'}",
                    }
                )
    return groups


@dataclass
class UnfreezeEvent:
    step: int
    epoch: float
    unfrozen: list[str]
    trainable_parameters: int


@dataclass
class GradualUnfreezing(TrainerCallback):
    """Unfreezes `per_stage` more layers every `every` epochs or steps, from the top down.

    `pending` are the layers still frozen at the start, in the order they will thaw.
    """

    pending: list[Layer]
    every: int
    unit: str  # "epoch" | "step"
    per_stage: int
    events: list[UnfreezeEvent] = field(default_factory=list)
    _stage: int = 0
    _resumed_stage: int = 0  # the stage of the checkpoint a resumed run starts from

    def restore_from(self, checkpoint: Path) -> None:
        """A resumed run goes on from `checkpoint`: its stage, and the record of what thawed when."""
        saved = checkpoint / UNFREEZING
        if saved.is_file():
            state = json.loads(saved.read_text(encoding="utf-8"))
            self._resumed_stage = state["stage"]
            self.events = [UnfreezeEvent(**event) for event in state["events"]]

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self._resumed_stage:
            parameters = dict(model.named_parameters())
            thawed = [name for _ in range(self._resumed_stage) for name in self._thaw_next(parameters)]
            log.info("gradual unfreezing, resumed at stage %d: %s train", self._stage, ", ".join(thawed))
            return
        self.events.append(UnfreezeEvent(0, 0.0, ["(start)"], count_parameters(model)[0]))
        log.info("gradual unfreezing: %d trainable parameters at the start", self.events[-1].trainable_parameters)

    def on_step_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.unit == "step":
            self._advance(state.global_step // self.every, state, model)

    def on_epoch_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.unit == "epoch":
            # The epoch that begins; a resumed one begins part-way (1.78 is still epoch 1).
            self._advance(math.floor((state.epoch or 0) + 1e-6) // self.every, state, model)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir() and args.should_save:
            (folder / UNFREEZING).write_text(json.dumps({"stage": self._stage, "events": self.record()}) + "\n")

    def _thaw_next(self, parameters: dict[str, Any]) -> list[str]:
        """Thaw the next stage's layers; their names."""
        self._stage += 1
        layers = self.pending[: self.per_stage]
        del self.pending[: self.per_stage]
        for layer in layers:
            for name in layer.parameters:
                parameters[name].requires_grad_(True)
        return [layer.name for layer in layers]

    def _advance(self, stage: int, state: Any, model: Any) -> None:
        thawed = []
        parameters = dict(model.named_parameters())
        while self._stage < stage and self.pending:
            thawed += self._thaw_next(parameters)
        if thawed:
            trainable = count_parameters(model)[0]
            self.events.append(UnfreezeEvent(state.global_step, round(state.epoch or 0, 4), thawed, trainable))
            log.info(
                "step %d (epoch %.2f): unfroze %s; %s parameters now train",
                state.global_step,
                state.epoch or 0,
                ", ".join(thawed),
                f"{trainable:,}",
            )

    def record(self) -> list[dict[str, Any]]:
        return [vars(event) for event in self.events]
