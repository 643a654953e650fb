"""Task registry: `task.type` in the config names a module of this package.

A new task is one module here, named after its `task.type` and defining one `Task` subclass
(with its `Config` dataclass), and one YAML in conf/task/: nothing else names tasks. Task
modules import torch and transformers inside their methods only, so that the registry and the
config schemas load in milliseconds.
"""

from __future__ import annotations

import importlib
import pkgutil

from hf_transfer.tasks.base import Task

# Every module of this package but the shared base is a task, by its module name.
TASKS: tuple[str, ...] = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base"))


def task_class(task_type: str) -> type[Task]:
    """The Task subclass that module `task_type` defines."""
    module = importlib.import_module(f"{__name__}.{task_type}")
    (found,) = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, Task) and value.__module__ == module.__name__
    ]
    return found


__all__ = ["TASKS", "Task", "task_class"]
