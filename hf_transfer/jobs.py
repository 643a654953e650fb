"""Run composed jobs, each in its own run folder: one run, a `-m` sweep, a `compare` grid.

The one way jobs run: one after another in this process, each as Hydra's own `run` runs one
(its .hydra/ records, train.log, Hydra callbacks), its folder named and taken here before
Hydra writes into it. In a list of jobs, a finished job's folder is skipped and an unfinished
one resumed: the same `compare` command goes on after an interruption. (A `-m` sweep starts
in a new folder each time; a job of it that stopped goes on with `hf-transfer resume`.)
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

# Private to Hydra: the object that calls a config's hydra.callbacks (Hydra's own run and
# launchers build it so); there is no public one. tests/test_upstream.py checks it.
from hydra._internal.callbacks import Callbacks
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobStatus
from hydra.core.utils import run_job as hydra_run_job
from hydra.types import HydraContext, RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from hf_transfer import run_folder
from hf_transfer.compose import CONFIG_NAME, Job
from hf_transfer.errors import Interrupted, UserError, first_line
from hf_transfer.run_folder import FolderInUse

Say = Callable[[str], None]


# -- naming and taking folders ----------------------------------------------------------------
def run_folder_of(job: Job) -> Path:
    """A single run's folder, hydra.run.dir. One named by the time (the default) that another
    run took in the same second gets a suffix (-2, -3, ...); run_one takes it (one the user
    named is refused there when it holds a run or another run holds it)."""
    folder = hydra_folder(job.config, "hydra.run.dir")
    if named_by_time(job.config, "run"):
        folder = run_folder.claim_new(folder)
        _set_hydra(job.config, {"run.dir": str(folder)})
    return folder


def sweep_folders(jobs: list[Job]) -> tuple[Path, list[tuple[str, Job]]]:
    """The sweep folder of `-m` (named by the time: a new one, suffixed when another sweep took
    it in the same second; named by the user: refused when it holds jobs) and each job's
    folder in it (hydra.sweep.subdir, with hydra.job.num), as Hydra's launcher names them.
    Two jobs that would share a folder are refused before anything is written."""
    first = jobs[0].config
    out = hydra_folder(first, "hydra.sweep.dir")
    subdirs = []
    for number, job in enumerate(jobs):
        _set_hydra(job.config, {"mode": RunMode.MULTIRUN, "job.num": number, "job.id": str(number)})
        HydraConfig.instance().set_config(job.config)  # a subdir may read ${hydra:job.override_dirname}
        subdirs.append(str(_select(job.config, "hydra.sweep.subdir")))
    for number, subdir in enumerate(subdirs):
        if (earlier := subdirs.index(subdir)) != number:
            raise UserError(
                f"jobs {earlier} and {number} of the sweep would share the folder '{subdir}' (hydra.sweep.subdir); "
                "name it after what the sweep changes, e.g. hydra.sweep.subdir='${hydra.job.num}-${strategy.name}'"
            )
    if named_by_time(first, "sweep"):
        out = run_folder.claim_new(out)
    elif out.is_dir() and any(out.iterdir()):
        # Hydra's records (.hydra/, train.log) would be written over an earlier sweep's.
        raise UserError(f"hydra.sweep.dir '{out}' is not empty (an earlier multirun?); choose another folder")
    for job, subdir in zip(jobs, subdirs):
        _set_hydra(job.config, {"sweep.dir": str(out), "run.dir": str(out / subdir)})
    return out, list(zip(subdirs, jobs))


def run_sweep(jobs: list[Job], say: Say) -> None:
    """A `-m` sweep: its folder and the jobs' (sweep_folders), Hydra's multirun.yaml record and
    the hydra.callbacks' sweep start and end, then the jobs one after another (run_all)."""
    out, named = sweep_folders(jobs)
    first = jobs[0].config
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(first, out / "multirun.yaml")
    say(f"multirun: {_count(len(named), 'job')} into {out}")
    for number, (_, job) in enumerate(named):
        say(f"  #{number} : {' '.join(o for o in job.overrides if not o.startswith('hydra.'))}")
    callbacks = Callbacks(first)
    callbacks.on_multirun_start(config=first, config_name=CONFIG_NAME)
    run_all(named, out, kind="job", secondary=False, say=say, prefix="multirun")
    callbacks.on_multirun_end(config=first, config_name=CONFIG_NAME)


def _set_hydra(cfg: DictConfig, values: dict[str, object]) -> None:
    """Set keys of the hydra node (which Hydra composes read-only), as its launcher does."""
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        for key, value in values.items():
            OmegaConf.update(cfg.hydra, key, value, merge=False)


def hydra_folder(cfg: DictConfig, key: str) -> Path:
    return Path(str(_select(cfg, key)))


def _select(cfg: DictConfig, key: str) -> object:
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise UserError(f"{key} cannot be resolved: {first_line(err)}") from None


def named_by_time(cfg: DictConfig, mode: str) -> bool:
    """Whether hydra.run.dir (or hydra.sweep.dir) holds the time it started (the default naming)."""
    return "${now:" in str(OmegaConf.to_container(cfg.hydra[mode], resolve=False).get("dir", ""))


# -- running ----------------------------------------------------------------------------------
def run_one(job: Job, folder: Path, *, resume: bool = False, take: bool = True) -> None:
    """Train (or, with `resume`, continue) one job into `folder`; Hydra's records go to its
    hydra.run.dir (the same folder, but for the other processes of a launch: a scratch one).

    `take`: the folder is taken first, as the run itself takes it (run_folder.prepare). A job
    that fails on a user's mistake leaves nothing of Hydra's behind."""
    folder = folder.expanduser().resolve()  # absolute: with hydra.job.chdir=true, Hydra moves into it first
    if take:  # first: a folder in use or holding a run is refused before anything heavy loads
        run_folder.prepare(folder, resume=resume, key="hydra.run.dir")
    try:
        # torch and transformers: after every check that needs none, and never for a config error
        from hf_transfer.run import resume as resume_run
        from hf_transfer.run import run

        task = (lambda cfg: resume_run(folder)) if resume else (lambda cfg: run(job.run, output_dir=folder))
        _run_in_hydra(job.config, task)
    except UserError as err:
        if not isinstance(err, FolderInUse):  # another run's folder: nothing in it is ours
            _remove_hydra_files(hydra_folder(job.config, "hydra.run.dir"))
        raise explain_inherited(err, job) from None
    finally:
        if take:
            run_folder.release(folder)


def run_all(
    jobs: list[tuple[str, Job]],
    out: Path,
    *,
    kind: str,
    secondary: bool,
    say: Say,
    prefix: str,
    again: str | None = None,
) -> None:
    """Run each (name, job) into out/NAME, one after another: a complete folder is skipped, an
    incomplete one resumed. `kind` names a job in messages ('cell', 'job'), `prefix` starts
    each progress line; `again`: how to go on after Ctrl-C, besides resuming the job. The
    other processes of a launch walk the same jobs, without taking folders (the main one does)."""
    if not secondary:
        run_folder.take(out)  # one such list at a time in this folder
    try:
        start = time.perf_counter()
        for number, (name, job) in enumerate(jobs, 1):
            folder = out / name
            found = run_folder.state(folder)  # read now: another process may have finished it meanwhile
            what = {"complete": "skipped (complete)", "incomplete": "resuming", "empty": "running"}[found]
            say(f"{prefix} [{number}/{len(jobs)}] {name}: {what} ({_clock(time.perf_counter() - start)} so far)")
            if found == "complete":
                continue
            try:
                run_one(job, folder, resume=found == "incomplete", take=not secondary)
            except Interrupted as err:
                if again is None:
                    raise
                raise Interrupted(f"{err}; or {again}", err.status) from None
            except UserError as err:
                raise UserError(f"{kind} {name}: {err}") from None
        say(f"{prefix}: {_count(len(jobs), kind)} done in {_clock(time.perf_counter() - start)}")
    finally:
        if not secondary:
            run_folder.release(out)


def _run_in_hydra(cfg: DictConfig, task: Callable[[DictConfig], object]) -> None:
    """Run `task` as Hydra's `run` runs a job: its folder, .hydra/ records, logging, the
    hydra.callbacks of the config; what the task raised is raised here."""
    if cfg.hydra.get("mode") is None:
        _set_hydra(cfg, {"mode": RunMode.RUN})
    single = cfg.hydra.mode == RunMode.RUN  # a sweep's job: its callbacks see the sweep start and end (run_sweep)
    callbacks = Callbacks(cfg)
    if single:
        callbacks.on_run_start(config=cfg, config_name=CONFIG_NAME)
    context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=callbacks)
    raised: list[Exception] = []

    def job(cfg: DictConfig) -> object:
        try:
            return task(cfg)
        except Exception as err:  # kept to raise as it is, after Hydra's callbacks saw the job fail
            raised.append(err)
            raise

    done = hydra_run_job(
        hydra_context=context, task_function=job, config=cfg, job_dir_key="hydra.run.dir", job_subdir_key=None
    )
    if single:
        callbacks.on_run_end(config=cfg, config_name=CONFIG_NAME, job_return=done)
    if done.status is JobStatus.FAILED and raised:
        raise raised[0]  # (JobReturn.return_value would print Hydra's own line first)


# -- after a mistake -------------------------------------------------------------------------
def explain_inherited(err: UserError, job: Job) -> UserError:
    """Where a task.* value named in the message came from, when the user did not set it: a
    dataset's label map failing on the user's own file is the recipe's, not theirs."""
    given = {o.split("=", 1)[0].lstrip("+~") for o in job.overrides}
    keys_given = {g for g in given if "." in g}  # task=X chooses an option: its keys are the option's
    choices = job.config.hydra.runtime.choices
    option, recipe = choices.get("task"), choices.get("recipe")
    task_type = job.run.task.type if job.run is not None else str(job.config.task.type)
    message = str(err)
    named = re.finditer(r"\btask\.[a-z_]+(?:\.[a-z_]+)*", message)
    # A key the message names as the fix (`task.data.encoding=...`) is not one that was inherited.
    for key in dict.fromkeys(m.group() for m in named if not message.startswith("=", m.end())):
        if option is None or option == task_type or any(key == g or key.startswith(g + ".") for g in keys_given):
            continue
        chosen_by = "you" if "task" in given else (f"recipe {recipe}" if recipe else "the defaults")
        return UserError(
            f"{err} ({key} comes from task={option}, chosen by {chosen_by}; for your own data start from "
            f"the blank task: task={task_type} task.data.source=...)"
        )
    return err


def _remove_hydra_files(folder: Path) -> None:
    """Remove what Hydra wrote for a run that never started: nothing half-written is left."""
    ours = {".hydra", "train.log", ".lock"}
    try:
        if folder.is_dir() and {p.name for p in folder.iterdir()} <= ours:
            shutil.rmtree(folder / ".hydra", ignore_errors=True)
            (folder / "train.log").unlink(missing_ok=True)
            (folder / ".lock").unlink(missing_ok=True)
            folder.rmdir()
            for parent in (folder.parent, folder.parent.parent):  # runs/NAME and runs, when empty
                if parent != Path.cwd() and parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()
    except OSError:  # another process of the same launch may be removing it too
        pass


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}" + ("" if number == 1 else "s")


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
