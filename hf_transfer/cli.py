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
import logging
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

from hf_transfer import versions
from hf_transfer.errors import CommandParser, Interrupted, Terminated, UserError, unknown_choice

# Each command imports its own modules inside its function: they load after versions.check()
# (an unsupported version is one line, not an ImportError) and only for the command chosen.

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
    from hf_transfer.jobs import explain_inherited, hydra_folder, named_by_time
    from hf_transfer.validation import check

    parse = CommandParser(
        prog=f"{PROG} validate",
        description="Check everything that can be checked before training (config, files, columns, labels, "
        "lengths, the strategy against the model), report it all, and describe the data. Writes nothing.",
    )
    parse.add_argument("overrides", nargs="*", help="the training command's overrides (recipe=..., task.*=...)")
    parse.add_argument("--config-dir", help="a folder of your own recipes and groups, as for training")
    args = parse.parse_args(argv)
    with hydra_session(args.config_dir) as loader:
        (job,) = compose_jobs(prepare_overrides(loader, args.overrides))
    run_dir = None if named_by_time(job.config, "run") else hydra_folder(job.config, "hydra.run.dir")
    findings = check(job.run, run_dir)
    findings.problems = [str(explain_inherited(UserError(p), job)) for p in findings.problems]
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

    def on_sigterm(signum: int, frame: Any) -> None:
        raise Terminated()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)


@contextlib.contextmanager
def _log_to(log_file: Path) -> Any:
    """Log as a run does (to the console and, appended, to the run's train.log), outside Hydra."""
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
    """Hydra's command line (overrides, --help, --cfg, -m, --config-dir), run on our search path."""
    from hf_transfer.distributed import is_secondary_process

    _refuse_hydra_only_flags(argv)
    parser = _train_parser()
    args = parser.parse_intermixed_args(argv)  # overrides before or after the flags
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
        return _train(parser, args)


# Flags of Hydra's command line that hf-transfer does not take, and what to use instead.
_HYDRA_ONLY_FLAGS = {
    ("--config-name", "-cn", "--config-path", "-cp"): "choose a recipe with recipe=NAME; your own go in "
    "DIR/recipe/NAME.yaml with --config-dir DIR",
    ("--info", "-i"): "--cfg job (or hydra, all) prints the composed config",
    ("--version",): "pip show hf-transfer-learning says the version",
    (
        "--shell-completion",
        "-sc",
        "--run",
        "-r",
        "--experimental-rerun",
    ): "see hf-transfer --help for the flags it takes",
}


def _refuse_hydra_only_flags(argv: list[str]) -> None:
    """One line naming the flag, where argparse would read `-cn x` as `-c n` (--cfg)."""
    for word in argv:
        flag = word.split("=", 1)[0]
        for flags, instead in _HYDRA_ONLY_FLAGS.items():
            if flag in flags:
                raise UserError(
                    f"{flag} is a flag of Hydra's command line that hf-transfer does not take: {instead}"
                )


def _train_parser() -> CommandParser:
    """The flags of Hydra's command line that hf-transfer runs (Hydra's names and short forms)."""
    parser = CommandParser(prog=PROG, add_help=False, allow_abbrev=False)
    parser.add_argument("overrides", nargs="*", help="GROUP=OPTION and KEY=VALUE")
    parser.add_argument("--help", "-h", action="store_true", help="the config groups and examples")
    parser.add_argument("--hydra-help", action="store_true", help="Hydra's own config groups")
    parser.add_argument("--cfg", "-c", choices=["job", "hydra", "all"], help="print the composed config; run nothing")
    parser.add_argument("--package", "-p", help="with --cfg: print this node only (strategy, trainer, ...)")
    parser.add_argument("--resolve", action="store_true", help="with --cfg: resolve the ${...} interpolations")
    parser.add_argument("--multirun", "-m", action="store_true", help="one run for each combination of a,b values")
    parser.add_argument("--config-dir", "-cd", help="a folder of your own recipes and groups (DIR/recipe/NAME.yaml)")
    return parser


def _train(parser: CommandParser, args: Any) -> int:
    """Each job is composed and validated once, up front: a mistake in any job of a sweep is
    reported before anything runs or is written. Then the jobs run, one after another, each
    with the config validated here."""
    from hf_transfer.compose import compose_jobs, config_text, help_text, hydra_session, prepare_overrides, split_sweeps
    from hf_transfer.jobs import run_folder_of, run_one, run_sweep

    with hydra_session(args.config_dir) as loader:
        overrides = prepare_overrides(loader, args.overrides)
        if args.help or args.hydra_help:
            first = split_sweeps(overrides)[0] if args.multirun else overrides
            print(help_text(loader, first, hydra_help=args.hydra_help, flags=parser.format_help()))
            return 0
        jobs = compose_jobs(overrides, multirun=args.multirun, validate_schema=args.cfg is None)
        if args.cfg:
            for job in jobs:
                if len(jobs) > 1:
                    print(f"# {' '.join(job.overrides)}")
                sys.stdout.write(config_text(job, args.cfg, args.package, args.resolve))
            return 0
        if args.multirun:
            run_sweep(jobs, say=lambda line: print(line, flush=True))
        else:
            (job,) = jobs
            run_one(job, run_folder_of(job))
    return 0
