"""Hydra glue: compose conf/ + recipes/ + overrides, and own every composition error.

Hydra reports its own composition errors (an unknown group option, a malformed override) with
exit status 1 and its own text, before the application runs. The CLI therefore composes every
job here first, through the same search path `@hydra.main` uses, and turns any failure into a
`UserError` (one line, exit status 2) before Hydra writes anything.

Plain `key=value` overrides are passed to Hydra as `++key=value` (set or add): an unknown key
is then reported by our schema with the closest valid names, and any TrainingArguments field
can be set as `trainer.KEY=VALUE` without Hydra's `+` prefix.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hf_transfer.errors import UserError, first_line, unknown_choice

if TYPE_CHECKING:
    from hydra._internal.hydra import Hydra
    from omegaconf import DictConfig

    from hf_transfer.config import RunConfig

CONFIG_MODULE = "hf_transfer.conf"
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"
CONFIG_NAME = "config"
RECIPES_PATH = "pkg://hf_transfer.recipes"

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One training job of a command line (a multirun sweep has several): its overrides, the
    config Hydra composed for it, and that config validated (None when not asked for)."""

    overrides: list[str]
    config: DictConfig
    run: RunConfig | None = None


@contextlib.contextmanager
def hydra_session(config_dir: str | None = None) -> Iterator[Hydra]:
    """A Hydra instance on our search path: conf/, then recipes/, then `--config-dir` first,
    with the strategy and hub defaults of config.py registered.

    The recipes folder is added here rather than through `hydra.searchpath` in config.yaml:
    Hydra applies that key only while composing, so `--help` would not list the recipes.
    """
    # Private to Hydra: its public entry points (@hydra.main, initialize + compose) either run
    # the app themselves, with Hydra's own errors and exit status 1, or cannot --help, --info or
    # multirun. This instance does all of it, with our messages. tests/test_upstream.py checks it.
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra

    from hf_transfer.config import register_defaults

    register_defaults()

    search_path = create_automatic_config_search_path(None, None, CONFIG_PATH)
    search_path.append(provider="hf_transfer", path=RECIPES_PATH, anchor=SearchPathQuery(provider="main"))
    if config_dir is not None:
        folder = os.path.abspath(config_dir)
        if not os.path.isdir(folder):
            raise UserError(f"--config-dir '{config_dir}' is not a folder")
        search_path.prepend(provider="command-line", path=f"file://{folder}", anchor=SearchPathQuery(provider="schema"))
    GlobalHydra.instance().clear()
    try:
        yield Hydra.create_main_hydra2(task_name="hf_transfer", config_search_path=search_path)
    finally:
        GlobalHydra.instance().clear()


def prepare_overrides(hydra: Hydra, overrides: list[str]) -> list[str]:
    """Check group choices against what exists; turn plain key overrides into `++key=value`."""
    parsed = _parse(overrides)
    loader = hydra.config_loader
    groups = set(loader.list_groups(""))
    prepared = []
    for override, text in zip(parsed, overrides):
        key = override.key_or_group
        if key in groups:
            _check_choices(loader, key, override)
            prepared.append(text)
        elif override.is_hydra_override() or override.is_delete() or override.is_add() or override.is_force_add():
            prepared.append(text)
        else:
            prepared.append("++" + text)
    return prepared + _name_after_data(parsed)


def _name_after_data(parsed: list[Any]) -> list[str]:
    """A run on data the user gives is named after it (runs/NAME/...), not after the recipe it
    started from, unless they give name=...: `task.data.source=~/data/tickets.csv` names it
    `tickets`."""
    keys = {override.key_or_group.lstrip("+~") for override in parsed}
    if "name" in keys:
        return []
    for override in parsed:
        key = override.key_or_group.lstrip("+")
        if key.startswith("task.data.") and not override.is_sweep_override():
            file = _data_file(key.removeprefix("task.data."), override.value())
            if file:
                return [f"++name={data_name(file)}"]
    return []


def _data_file(key: str, value: Any) -> str | None:
    """The file or dataset a task.data override names: `source`, or `data_files` (the train
    file where there are several: `data_files.train=...`, `data_files={train: ...}`, a list)."""
    if key not in ("source", "data_files", "data_files.train"):
        return None
    if isinstance(value, dict):
        value = value.get("train", next(iter(value.values()), None))
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return value if isinstance(value, str) and value else None


def data_name(source: str) -> str:
    """'~/data/tickets.csv.gz' -> 'tickets'; 'org/dataset' -> 'dataset'; a package file -> its stem."""
    import re

    last = source.split("#")[0].rstrip("/").rsplit("/", 1)[-1]
    stem = last.split(".")[0] or last
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "data"


def _parse(overrides: list[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    parsed = []
    for override in overrides:
        try:
            parsed += parser.parse_overrides([override])
        except HydraException as err:
            raise UserError(
                f"cannot read the override {override!r}: {first_line(err)}; {_quoting_hint(override)}"
            ) from None
    return parsed


def _quoting_hint(override: str) -> str:
    """Hydra's grammar gives '=', '~', '#', ':' and spaces meanings of their own: a value with them
    (a URL, a path, a sha256 pin) is quoted, inside the shell's quotes."""
    key, sep, value = override.partition("=")
    if sep and any(c in value for c in "=~#: ") and not value.startswith(("'", '"')):
        return f"quote the value: '{key}=\"{value}\"'"
    return "write overrides as key=value"


def _check_choices(loader: Any, group: str, override: Any) -> None:
    options = loader.get_group_options(group)
    values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
    for value in values:
        if value is None or str(value) == "null":
            continue
        if str(value) not in options:
            hint = "; your own recipes go in DIR/recipe/NAME.yaml with --config-dir DIR" if group == "recipe" else ""
            raise unknown_choice(group, str(value), options, hint=hint)


def compose_jobs(
    hydra: Hydra, overrides: list[str], multirun: bool = False, validate_schema: bool = True, for_run: bool = False
) -> list[Job]:
    """Compose (and validate) each job a command line describes; raise UserError on any mistake.

    `overrides` are prepared ones (see prepare_overrides). `for_run`: a single run's config
    with Hydra's logging set up, ready for `run_job`.
    """
    from hydra.types import RunMode

    from hf_transfer.config import validate

    job_overrides = _split_sweeps(overrides) if multirun else [overrides]
    jobs = []
    for job in job_overrides:
        cfg = _compose(hydra, job, RunMode.MULTIRUN if multirun else RunMode.RUN, with_logging=for_run)
        jobs.append(Job(overrides=job, config=cfg, run=validate(cfg) if validate_schema else None))
    return jobs


def run_job(hydra: Hydra, job: Job, task_function: Any) -> None:
    """Run one composed job as Hydra's own `run` does (run folder, .hydra/ records, logging,
    callbacks), without composing it again."""
    from hydra._internal.callbacks import Callbacks  # private; Hydra.run builds its callbacks so too
    from hydra.core.utils import run_job as hydra_run_job
    from hydra.types import HydraContext, RunMode
    from omegaconf import open_dict

    cfg = job.config
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.RUN
    callbacks = Callbacks(cfg)
    callbacks.on_run_start(config=cfg, config_name=CONFIG_NAME)
    ret = hydra_run_job(
        hydra_context=HydraContext(config_loader=hydra.config_loader, callbacks=callbacks),
        task_function=task_function,
        config=cfg,
        job_dir_key="hydra.run.dir",
        job_subdir_key=None,
    )
    callbacks.on_run_end(config=cfg, config_name=CONFIG_NAME, job_return=ret)
    _ = ret.return_value  # raises what the job raised


def compose(overrides: list[str] | None = None, config_dir: str | None = None) -> DictConfig:
    """The composed config of a single run, for calling `hf_transfer.run.run` from Python."""
    from omegaconf import OmegaConf

    with hydra_session(config_dir) as hydra:
        (job,) = compose_jobs(hydra, prepare_overrides(hydra, list(overrides or [])), validate_schema=False)
    cfg = job.config
    with _unlocked(cfg):
        cfg.pop("hydra", None)
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))


def _compose(hydra: Hydra, overrides: list[str], mode: Any, with_logging: bool = False) -> DictConfig:
    import re

    import yaml
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return hydra.compose_config(
            CONFIG_NAME, overrides, run_mode=mode, with_log_configuration=with_logging, validate_sweep_overrides=False
        )
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        # ~KEY of a key this config lacks (~task.extra_test on a task without extra sets): it is
        # not there, as asked; the same command works for every task.
        absent = re.search(r"Could not delete from config\. '([^']+)' does not exist", str(err))
        if absent and f"~{absent.group(1)}" in overrides:
            log.info("~%s: the config has no such key; nothing to remove", absent.group(1))
            rest = [o for o in overrides if o != f"~{absent.group(1)}"]
            return _compose(hydra, rest, mode, with_logging)
        raise UserError(f"cannot compose the config: {first_line(err)}{_hint(str(err))}") from None
    except yaml.YAMLError as err:
        raise UserError(f"cannot read a config file: {_yaml_problem(err)}") from None


def _hint(message: str) -> str:
    """The fix for the Hydra composition errors a user makes most."""
    import re

    if "Got NoneType" in message:
        return " (to run without the default recipe, write ~recipe)"
    if found := re.search(r"An item is already at '([^']+)'", message):
        return f" (the key is there already: write {found.group(1)}=VALUE, without the +)"
    return ""


def _yaml_problem(err: Exception) -> str:
    """'FILE, line N, column M: what is wrong' from a YAML parser error."""
    mark = getattr(err, "problem_mark", None)
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = "; ".join(part for part in (getattr(err, "context", None), getattr(err, "problem", None)) if part)
    return where + (what or first_line(err))


def _split_sweeps(overrides: list[str]) -> list[list[str]]:
    # Private to Hydra: the basic sweeper's own expansion of `key=a,b` into jobs, so that every
    # job of a sweep is composed and checked before the first one runs.
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    batches = BasicSweeper.split_arguments(_parse(overrides), max_batch_size=None)
    return [job for batch in batches for job in batch]


class _unlocked:
    def __init__(self, cfg: Any):
        self.cfg = cfg

    def __enter__(self) -> None:
        from omegaconf import OmegaConf

        self.struct = OmegaConf.is_struct(self.cfg)
        OmegaConf.set_struct(self.cfg, False)

    def __exit__(self, *exc: Any) -> None:
        from omegaconf import OmegaConf

        OmegaConf.set_struct(self.cfg, self.struct)
