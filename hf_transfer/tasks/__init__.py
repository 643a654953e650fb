"""Task registry: `task.type` in the config names one of these.

Adding a task is one module here (a `Task` subclass with a `Config` dataclass) and one line
below. Task modules import torch and transformers inside their methods only, so that the
registry and the config schemas load in milliseconds.
"""

from __future__ import annotations

import importlib

from hf_transfer.tasks.base import Task

TASKS: dict[str, str] = {
    "text_classification": "hf_transfer.tasks.text_classification:TextClassification",
    "token_classification": "hf_transfer.tasks.token_classification:TokenClassification",
    "causal_lm": "hf_transfer.tasks.causal_lm:CausalLM",
    "question_answering": "hf_transfer.tasks.question_answering:QuestionAnswering",
}


def task_class(task_type: str) -> type[Task]:
    module_name, class_name = TASKS[task_type].split(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = ["TASKS", "Task", "task_class"]
