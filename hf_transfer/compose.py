"""The one door into Hydra: compose conf/ + recipes/ + overrides, and own every composition error.

Everything goes through Hydra's public API: `initialize_config_module` opens a session, the
search-path plugin (hydra_plugins/hf_transfer_search_path.py) adds the recipes and a user's
`--config-dir`, `hydra.compose` composes, the session's config loader lists the groups.
Hydra's own composition errors (an unknown group option, a malformed override) become a
`UserError` here (one line, exit status 2) before anything is written.

Plain `key=value` overrides are passed to Hydra as `++key=value` (set or add): an unknown key
is then reported by our schema with the closest valid names, and any TrainingArguments field
can be set as `trainer.KEY=VALUE` without Hydra's `+` prefix.

A sweep (`-m key=a,b`) is expanded here into its jobs, each composed and validated before any
runs; they run one after another through hf_transfer.jobs, as `compare`'s cells do.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import os
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import hydra
import yaml
from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import Container, DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

import hf_transfer.config  # (called through the module: tests observe validate)
from hf_transfer.errors import UserError, first_line, unknown_choice

if TYPE_CHECKING:
    from hydra.core.config_loader import ConfigLoader

CONFIG_MODULE = "hf_transfer.conf"
CONFIG_NAME = "config"
RECIPES_PATH = "pkg://hf_transfer.recipes"

log = logging.getLogger(__name__)

# The search path of the session hydra_session opened: None outside one (other Hydra apps).
_session_config_dir: contextvars.ContextVar[tuple[str | None] | None] = contextvars.ContextVar(
    "hf_transfer_session", default=None
)


@dataclass
class Job:
    """One training job of a command line (a multirun sweep has several): its overrides, the
    config Hydra composed for it, and that config validated (None when not asked for)."""

    overrides: list[str]
    config: DictConfig
    run: hf_transfer.config.RunConfig | None = None


@contextlib.contextmanager
def hydra_session(config_dir: str | None = None) -> Iterator[ConfigLoader]:
    """A Hydra session on our search path (conf/, then recipes/, then `--config-dir`),
    with the strategy and hub defaults of config.py registered; yields its config loader."""

    hf_transfer.config.register_defaults()
    folder = None
    if config_dir is not None:
        folder = os.path.abspath(config_dir)
        if not os.path.isdir(folder):
            raise UserError(f"--config-dir '{config_dir}' is not a folder")
    token = _session_config_dir.set((folder,))
    GlobalHydra.instance().clear()
    try:
        with hydra.initialize_config_module(CONFIG_MODULE, job_name="hf_transfer", version_base=None):
            yield GlobalHydra.instance().config_loader()
    finally:
        _session_config_dir.reset(token)
        GlobalHydra.instance().clear()


def extend_search_path(search_path: ConfigSearchPath) -> None:
    """The recipes after conf/, then a user's --config-dir: called by Hydra through the
    search-path plugin, inside a session hydra_session opened (and only there)."""
    session = _session_config_dir.get()
    if session is None:
        return
    search_path.append(provider="hf_transfer", path=RECIPES_PATH, anchor=SearchPathQuery(provider="main"))
    (folder,) = session
    if folder is not None:  # after ours, where @hydra.main puts it: a shipped recipe keeps its name
        after_recipes = SearchPathQuery(provider="hf_transfer")
        search_path.append(provider="command-line", path=f"file://{folder}", anchor=after_recipes)


def prepare_overrides(loader: ConfigLoader, overrides: list[str]) -> list[str]:
    """Check group choices against what exists; turn plain key overrides into `++key=value`."""
    parsed = _parse(overrides)
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


def _name_after_data(parsed: list[Override]) -> list[str]:
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
    last = source.split("#")[0].rstrip("/").rsplit("/", 1)[-1]
    stem = last.split(".")[0] or last
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "data"


def _parse(overrides: list[str]) -> list[Override]:
    session = GlobalHydra.instance()  # glob() sweeps list a group's options through the session's loader
    parser = OverridesParser.create(config_loader=session.config_loader() if session.is_initialized() else None)
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


def _check_choices(loader: ConfigLoader, group: str, override: Override) -> None:
    options = loader.get_group_options(group)
    values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
    for value in values:
        if value is None or str(value) == "null":
            continue
        if str(value) not in options:
            hint = "; your own recipes go in DIR/recipe/NAME.yaml with --config-dir DIR" if group == "recipe" else ""
            raise unknown_choice(group, str(value), options, hint=hint)


def compose_jobs(overrides: list[str], multirun: bool = False, validate_schema: bool = True) -> list[Job]:
    """Compose (and validate) each job a command line describes, in an open session; raise
    UserError on any mistake. `overrides` are prepared ones (see prepare_overrides); with
    `multirun`, its sweeps (`key=a,b`) are expanded into one job per combination."""
    every = split_sweeps(overrides) if multirun else [overrides]
    first = _compose(every[0])
    params = first.hydra.sweeper.get("params") if multirun else None
    if params:  # a sweep a config states (hydra.sweeper.params), then the command line's, as Hydra sweeps
        every = split_sweeps([f"{key}={value}" for key, value in params.items()] + overrides)
        first = _compose(every[0])
    configs = [first, *(_compose(job) for job in every[1:])]  # each job composed once
    jobs = []
    for job, cfg in zip(every, configs):
        _refuse_hydra_runners(cfg)
        jobs.append(Job(overrides=job, config=cfg, run=hf_transfer.config.validate(cfg) if validate_schema else None))
    return jobs


def _refuse_hydra_runners(cfg: DictConfig) -> None:
    """Jobs run one after another in this process (hf_transfer.jobs, as compare's cells do):
    a Hydra launcher or sweeper plugin chosen would silently do nothing."""
    for group in ("hydra/launcher", "hydra/sweeper"):
        choice = cfg.hydra.runtime.choices.get(group)
        if choice not in (None, "basic"):
            raise UserError(
                f"{group}={choice}: hf-transfer runs a sweep's jobs itself, one after another, as compare runs its "
                f"cells; Hydra's launcher and sweeper plugins are not used: leave {group} at basic"
            )


def split_sweeps(overrides: list[str]) -> list[list[str]]:
    """`a=1,2 b=x` -> [[a=1, b=x], [a=2, b=x]]: every combination of the sweeps' values, in
    the order Hydra's basic sweeper gives them (a key given twice keeps its last value)."""
    choices: dict[str, list[str]] = {}
    for override in _parse(overrides):
        key = override.get_key_element()
        if override.is_delete() and override.value() is None:
            choices[key] = [key]  # ~key: removed whatever its value (~key=null removes a null only)
        elif not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():  # a,b or choice(), range(), glob()
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise UserError(
                f"'{override.input_line}': -m runs choices (a,b), range() and glob(); an interval() is for a "
                "sweeper that picks values, which hf-transfer does not run"
            )
    return [list(job) for job in itertools.product(*choices.values())]


def compose(overrides: list[str] | None = None, config_dir: str | None = None) -> DictConfig:
    """The composed config of a single run, for calling `hf_transfer.run.run` from Python."""
    with hydra_session(config_dir) as loader:
        (job,) = compose_jobs(prepare_overrides(loader, list(overrides or [])), validate_schema=False)
    cfg = job.config
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))


def _compose(overrides: list[str]) -> DictConfig:
    try:
        return hydra.compose(CONFIG_NAME, overrides, return_hydra_config=True)
    # (Hydra's loader fails on some overrides it cannot apply with an assert or an AttributeError:
    # hydra.sweeper.params.KEY=... where params is null.)
    except (HydraException, OmegaConfBaseException, ValueError, AssertionError, AttributeError) as err:
        # ~KEY of a key this config lacks (~task.extra_test on a task without extra sets): it is
        # not there, as asked; the same command works for every task.
        absent = re.search(r"Could not delete from config\. '([^']+)' does not exist", str(err))
        if absent and f"~{absent.group(1)}" in overrides:
            log.info("~%s: the config has no such key; nothing to remove", absent.group(1))
            return _compose([o for o in overrides if o != f"~{absent.group(1)}"])
        raise UserError(f"cannot compose the config: {first_line(err)}{_hint(str(err))}") from None
    except yaml.YAMLError as err:
        raise UserError(f"cannot read a config file: {_yaml_problem(err)}") from None


def _hint(message: str) -> str:
    """The fix for the Hydra composition errors a user makes most."""
    if "Got NoneType" in message:
        return " (to run without the default recipe, write ~recipe)"
    if found := re.search(r"An item is already at '([^']+)'", message):
        return f" (the key is there already: write {found.group(1)}=VALUE, without the +)"
    if "Ambiguous value for argument" in message:
        return " (to run one job per value, add -m; for a list, write key=[a,b])"
    return ""


def _yaml_problem(err: Exception) -> str:
    """'FILE, line N, column M: what is wrong' from a YAML parser error."""
    mark = getattr(err, "problem_mark", None)
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = "; ".join(part for part in (getattr(err, "context", None), getattr(err, "problem", None)) if part)
    return where + (what or first_line(err))


# -- what --help and --cfg print ------------------------------------------------------------
def help_text(loader: ConfigLoader, overrides: list[str], hydra_help: bool = False, flags: str = "") -> str:
    """The config's help template (hydra.help, or hydra.hydra_help for Hydra's own groups),
    filled in as Hydra fills it: $APP_CONFIG_GROUPS, $HYDRA_CONFIG_GROUPS, $FLAGS_HELP, $CONFIG."""
    cfg = _compose(overrides)
    HydraConfig.instance().set_config(cfg)
    template = cfg.hydra.hydra_help.template if hydra_help else cfg.hydra.help.template
    groups = _all_groups(loader, "")
    return string.Template(template).safe_substitute(
        APP_CONFIG_GROUPS=_list_groups(loader, [g for g in groups if g.split("/")[0] != "hydra"]),
        HYDRA_CONFIG_GROUPS=_list_groups(loader, [g for g in groups if g.split("/")[0] == "hydra"]),
        FLAGS_HELP=flags,
        CONFIG=OmegaConf.to_yaml({k: v for k, v in cfg.items() if k != "hydra"}),
    )


def _all_groups(loader: ConfigLoader, parent: str) -> list[str]:
    found = []
    for group in loader.list_groups(parent):
        name = f"{parent}/{group}" if parent else group
        found += [name, *_all_groups(loader, name)]
    return found


def _list_groups(loader: ConfigLoader, groups: list[str]) -> str:
    lines = [f"{group}: {', '.join(sorted(loader.get_group_options(group)))}" for group in sorted(groups)]
    return "".join(line + "\n" for line in lines if not line.endswith(": "))


def config_text(job: Job, part: str, package: str | None = None, resolve: bool = False) -> str:
    """A composed job's config as `--cfg job|hydra|all` prints it (`--package` picks a node)."""
    HydraConfig.instance().set_config(job.config)
    # Resolved whole: the hydra node's folders name the job's keys (${strategy.name}).
    plain = OmegaConf.to_container(job.config)
    cfg = OmegaConf.create(_resolved(job.config, plain) if resolve else plain)
    if part == "job":
        cfg.pop("hydra", None)
    elif part == "hydra":  # as Hydra shows it: without the help texts
        cfg = OmegaConf.create({"hydra": {k: v for k, v in cfg.hydra.items() if k not in ("help", "hydra_help")}})
    if package in (None, "_global_"):
        return OmegaConf.to_yaml(cfg)
    node = OmegaConf.select(cfg, package)
    if node is None:
        raise UserError(f"--package '{package}' is not in the config (--cfg {part})")
    if isinstance(node, Container):
        return f"# @package {package}\n" + OmegaConf.to_yaml(node)
    return f"{node}\n"


def _resolved(cfg: DictConfig, node: Any, path: str = "") -> Any:
    """`node` (a part of `cfg` as plain data) with its interpolations resolved; one that cannot
    be outside a sweep (hydra.sweep.subdir reads ${hydra.job.num}) stays as written."""
    if isinstance(node, dict):
        return {key: _resolved(cfg, value, f"{path}.{key}" if path else str(key)) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolved(cfg, value, f"{path}[{number}]") for number, value in enumerate(node)]
    if isinstance(node, str) and "${" in node:
        try:
            found = OmegaConf.select(cfg, path)
        except OmegaConfBaseException:
            return node
        return OmegaConf.to_container(found) if isinstance(found, Container) else found
    return node
