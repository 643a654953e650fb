"""Command line: `hf-transfer [COMMAND] ...` and `python -m hf_transfer [COMMAND] ...`.

The first word picks a command; without one, the arguments are Hydra overrides for training:

    hf-transfer recipe=bert_sentiment strategy=lora trainer.num_train_epochs=2
    hf-transfer -m strategy=head_only,lora          (one run per strategy)
    hf-transfer recipe=bert_sentiment --cfg job     (print the composed config)
    hf-transfer predict RUN_DIR "a text" ...        (JSON lines of predictions)
    hf-transfer push RUN_DIR --repo-id ORG/NAME      (publish a finished run)
    hf-transfer compare recipe=NAME [--strategies ...] [--budgets ...] [--starts ...] [--seeds N]
                                                    (a grid of runs: strategies x label budgets x starts)
    hf-transfer report runs/NAME                    (compare the runs under a folder: table, report.md/html)
    hf-transfer resume RUN_DIR                      (continue a run that was killed or interrupted)
    hf-transfer validate [overrides]                (check config, data and model before training)
    hf-transfer cache list                          (cached checkpoints and datasets; cache delete model=NAME)
    hf-transfer accelerate-config fsdp              (the path of a shipped accelerate config)

A user's mistake ends with one line on stderr and exit status 2 (see errors.UserError); Ctrl-C
with one line saying how to resume, and exit status 130.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hf_transfer import versions
from hf_transfer.errors import CommandParser, Interrupted, Terminated, UserError, first_line, unknown_choice

PROG = "hf-transfer"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = _commands()
    command = "train"
    if argv and argv[0] in commands:
        command = argv.pop(0)
    elif argv and _looks_like_command(argv[0]):
        hint = "; without a command, arguments are training overrides (key=value)"
        exit_with_error(unknown_choice("command", argv[0], commands, hint=hint))
    _terminate_as_interrupt()
    try:
        if command != "accelerate-config":  # a path only: it needs no library
            versions.check()
        return commands[command](argv) or 0
    except UserError as err:
        exit_with_error(err)
    except Interrupted as err:
        exit_interrupted(err)
    except KeyboardInterrupt as err:
        exit_interrupted(Interrupted("interrupted", getattr(err, "status", 130)))
    return 2  # pragma: no cover


def _commands() -> dict[str, Callable[[list[str]], int | None]]:
    return {
        "train": train,
        "resume": resume,
        "validate": validate,
        "predict": predict,
        "push": push,
        "compare": compare,
        "report": report,
        "cache": cache,
        "accelerate-config": accelerate_config,
    }


def validate(argv: list[str]) -> int:
    """Check a run's configuration, data and model before training; print what was found."""
    from hf_transfer.compose import compose_jobs, hydra_session, prepare_overrides
    from hf_transfer.validation import check

    parse = CommandParser(
        prog=f"{PROG} validate",
        description="Check everything that can be checked before training (config, files, columns, labels, "
        "lengths, the strategy against the model), report it all, and describe the data. Writes nothing.",
    )
    parse.add_argument("overrides", nargs="*", help="the training command's overrides (recipe=..., task.*=...)")
    parse.add_argument("--config-dir", help="a folder of your own recipes and groups, as for training")
    args = parse.parse_args(argv)
    with hydra_session(args.config_dir) as hydra:
        (job,) = compose_jobs(hydra, prepare_overrides(hydra, args.overrides))
    run_dir = None if _named_by_time(job.config) else _hydra_folder(job.config, "hydra.run.dir")
    findings = check(job.run, run_dir)
    choices = dict(job.config.hydra.runtime.choices)
    findings.problems = [
        str(explain_inherited(UserError(p), job.overrides, choices, job.run.task.type)) for p in findings.problems
    ]
    for note in findings.notes:
        print(f"  {note}")
    if findings.problems:
        print(f"{PROG} validate: {len(findings.problems)} problem(s):", file=sys.stderr)
        for problem in findings.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    print(f"{PROG} validate: no problems found")
    return 0


def resume(argv: list[str]) -> int:
    """Continue a run that did not finish, from its last complete checkpoint."""
    parse = CommandParser(
        prog=f"{PROG} resume",
        description="Continue a run that was killed or interrupted, from its last complete checkpoint, "
        "with the run's own config.yaml; it ends as the run would have.",
    )
    parse.add_argument("folder", help="the run folder (RUN_DIR)")
    args = parse.parse_args(argv)
    from hf_transfer.run import resume as resume_run

    folder = Path(args.folder)
    with _log_to(folder / "train.log"):
        resume_run(folder)
    return 0


def predict(argv: list[str]) -> int:
    from hf_transfer.predict import main as predict_main

    return predict_main(argv)


def push(argv: list[str]) -> int:
    from hf_transfer.hub import main as push_main

    return push_main(argv)


def compare(argv: list[str]) -> int:
    from hf_transfer.compare import main as compare_main

    return compare_main(argv)


def report(argv: list[str]) -> int:
    from hf_transfer.report import main as report_main

    return report_main(argv)


def cache(argv: list[str]) -> int:
    from hf_transfer.asset_cache import main as cache_main

    return cache_main(argv)


def accelerate_config(argv: list[str]) -> int:
    """The path of a shipped accelerate config file, or the list of them."""
    from importlib.resources import files

    folder = files("hf_transfer.accelerate_configs")
    names = sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))
    parse = CommandParser(
        prog=f"{PROG} accelerate-config", description="Print the path of a shipped accelerate config."
    )
    parse.add_argument("name", nargs="?", choices=names, help="one of: " + ", ".join(names))
    args = parse.parse_args(argv)
    if args.name is None:
        for name in names:
            print(f"{name:20s} {folder / (name + '.yaml')}")
    else:
        print(folder / f"{args.name}.yaml")
    return 0


def _looks_like_command(word: str) -> bool:
    return not word.startswith("-") and "=" not in word and word.replace("-", "_").isidentifier()


def exit_with_error(err: UserError) -> None:
    print(f"{PROG}: error: {err}", file=sys.stderr)
    sys.exit(2)


def exit_interrupted(err: Interrupted) -> None:
    print(f"{PROG}: {err}", file=sys.stderr)
    sys.exit(err.status)  # as a shell reports a process ended by SIGINT (130) or SIGTERM (143)


def _terminate_as_interrupt() -> None:
    """SIGTERM raises Terminated (a KeyboardInterrupt) in the main thread: the run stops as on
    Ctrl-C, with its message and the resume command, not silently."""
    import signal
    import threading

    def on_sigterm(signum: int, frame: Any) -> None:
        raise Terminated()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)


@contextlib.contextmanager
def _log_to(log_file: Path) -> Any:
    """Log as a run does (to the console and, appended, to the run's train.log), outside Hydra."""
    import logging

    root = logging.getLogger()
    handlers = (
        [logging.StreamHandler(), logging.FileHandler(log_file, encoding="utf-8")] if log_file.parent.is_dir() else []
    )
    formatter = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    previous = root.level
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(previous)


# -- train --------------------------------------------------------------------------------
def train(argv: list[str]) -> int:
    """Hydra's command line (overrides, --cfg, --help, -m, --config-dir), run on our search path."""
    # Private to Hydra: the parser @hydra.main uses, so that every Hydra flag works as documented.
    from hydra._internal.utils import get_args_parser

    from hf_transfer.compose import CONFIG_NAME
    from hf_transfer.distributed import is_secondary_process

    parser = get_args_parser()
    parser.prog = f"{PROG} [train]"
    parser.error = lambda message: exit_with_error(UserError(f"{message} (see {PROG} --help)"))  # one line
    args = parser.parse_args(argv)
    config_name = args.config_name or CONFIG_NAME
    secondary = is_secondary_process()
    if secondary and args.multirun:
        raise UserError("-m (multirun) cannot run under a multi-process launch: launch one run per command")
    # Every process of a launch composes the config; only the main one keeps Hydra's outputs
    # (its run folder is the run's). The others log warnings only, into a scratch folder.
    scratch_folder = (
        tempfile.TemporaryDirectory(prefix="hf-transfer-rank-", ignore_cleanup_errors=True)
        if secondary
        else contextlib.nullcontext()
    )
    with scratch_folder as scratch:
        if scratch is not None:
            args.overrides = [*args.overrides, f"hydra.run.dir={scratch}", "hydra.output_subdir=null",
                              "hydra.job_logging.root.level=WARNING"]  # fmt: skip
        return _train(parser, args, config_name)


def _train(parser: Any, args: Any, config_name: str) -> int:
    """Each job is composed and validated once, up front: a mistake in any job of a sweep is
    reported before anything runs or is written. A single run then runs that config; a sweep's
    jobs are launched by Hydra's sweeper and launcher (plugins a user may swap), which compose
    each job themselves, and each runs the config validated here."""
    from hf_transfer import run_folder
    from hf_transfer.compose import compose_jobs, hydra_session, prepare_overrides, run_job

    with hydra_session(args.config_dir) as hydra:
        if args.help:
            hydra.app_help(config_name=config_name, args_parser=parser, args=args)
            return 0
        if args.hydra_help:
            hydra.hydra_help(config_name=config_name, args_parser=parser, args=args)
            return 0
        overrides = prepare_overrides(hydra, args.overrides)
        if args.info:
            hydra.show_info(args.info, config_name=config_name, overrides=overrides)
            return 0
        for_run = not (args.cfg or args.multirun)
        jobs = compose_jobs(hydra, overrides, multirun=args.multirun, validate_schema=args.cfg is None, for_run=for_run)
        if args.cfg:
            hydra.show_cfg(
                config_name=config_name,
                overrides=overrides,
                cfg_type=args.cfg,
                package=args.package,
                resolve=args.resolve,
            )
            return 0
        if args.multirun:
            sweep_dir = _take_sweep_dir(jobs[0].config)
            validated = {tuple(job.overrides): job.run for job in jobs}
            hydra.multirun(
                config_name=config_name, task_function=_sweep_job(validated), overrides=overrides + sweep_dir
            )
        else:
            (job,) = jobs
            folder = _take_run_dir(job.config)
            try:
                run_job(hydra, job, lambda cfg: _train_job(job.run))
            finally:
                run_folder.release(folder)
    return 0


def _take_run_dir(cfg: Any) -> Path:
    """Take the run folder before Hydra writes into it. A folder named by the time (the default)
    that another run took in the same second gets a suffix (-2, -3, ...); a folder the user
    named is refused when it holds a run or another run holds it."""
    from omegaconf import open_dict

    from hf_transfer import run_folder

    folder = _hydra_folder(cfg, "hydra.run.dir")
    if _named_by_time(cfg):
        folder = run_folder.claim_new(folder)
        with open_dict(cfg):
            cfg.hydra.run.dir = str(folder)
    return run_folder.prepare(folder, key="hydra.run.dir")  # taken and checked as the run takes it


def _named_by_time(cfg: Any) -> bool:
    """Whether the run folder's name holds the time it started (the default naming)."""
    from omegaconf import OmegaConf

    return "${now:" in str(OmegaConf.to_container(cfg.hydra.run, resolve=False).get("dir", ""))


def _take_sweep_dir(cfg: Any) -> list[str]:
    """As a run's folder: a sweep folder named by the time gets a suffix when another sweep
    started in the same second took it (the override that names it); one the user named is
    refused when it holds jobs."""
    from omegaconf import OmegaConf

    from hf_transfer import run_folder

    if "${now:" not in str(OmegaConf.to_container(cfg.hydra.sweep, resolve=False).get("dir", "")):
        _refuse_used_sweep_dir(cfg)
        return []
    folder = run_folder.claim_new(_hydra_folder(cfg, "hydra.sweep.dir"))
    return [f'hydra.sweep.dir="{folder}"']


def _refuse_used_sweep_dir(cfg: Any) -> None:
    """Hydra writes each job's .hydra/ and log before the job starts: a sweep folder that
    already holds jobs would have their records overwritten."""
    sweep_dir = _hydra_folder(cfg, "hydra.sweep.dir")
    if sweep_dir.is_dir() and any(sweep_dir.iterdir()):
        raise UserError(f"hydra.sweep.dir '{sweep_dir}' is not empty (an earlier multirun?); choose another folder")


def _hydra_folder(cfg: Any, key: str) -> Path:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return Path(str(OmegaConf.select(cfg, key, throw_on_missing=True)))
    except OmegaConfBaseException as err:
        raise UserError(f"{key} cannot be resolved: {first_line(err)}") from None


def _sweep_job(validated: dict[tuple[str, ...], Any]) -> Callable[[Any], None]:
    """The task function of a sweep: each job runs the config validated for its overrides."""

    def task_function(cfg: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        overrides = tuple(HydraConfig.get().overrides.task)
        # A sweeper plugin that chooses its own jobs (not the basic one) runs configs not seen
        # up front: those are validated now.
        _train_job(validated.get(overrides) or cfg)

    return task_function


def _train_job(cfg: Any) -> None:
    """Run one training job in the run folder Hydra made for it."""
    from hydra.core.hydra_config import HydraConfig

    from hf_transfer.run import run
    from hf_transfer.run_folder import FolderInUse

    folder = Path(HydraConfig.get().runtime.output_dir)
    try:
        run(cfg, output_dir=folder)
    except UserError as err:
        if not isinstance(err, FolderInUse):  # another run's folder: nothing in it is ours
            _remove_hydra_files(folder)
        hydra = HydraConfig.get()
        choices = dict(hydra.runtime.choices)
        task_type = cfg.task.type if hasattr(cfg, "task") else str(cfg["task"]["type"])
        exit_with_error(explain_inherited(err, list(hydra.overrides.task), choices, task_type))
    except Interrupted as err:
        exit_interrupted(err)


def explain_inherited(err: UserError, overrides: list[str], choices: dict[str, Any], task_type: str) -> UserError:
    """Where a task.* value named in the message came from, when the user did not set it: a
    dataset's label map failing on the user's own file is the recipe's, not theirs."""
    import re

    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    keys_given = {g for g in given if "." in g}  # task=X chooses an option: its keys are the option's
    option, recipe = choices.get("task"), choices.get("recipe")
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
    import shutil

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
