"""`hf-transfer compare`: one grid of runs over a recipe, to see what transfer learning buys.

    hf-transfer compare recipe=bert_sentiment                         (the default grid: 32 runs)
    hf-transfer compare recipe=bert_sentiment --strategies full,lora --budgets 8/class,all --seeds 3
    hf-transfer compare recipe=bert_sentiment --models minilm,mpnet --strategies full --seeds 3
    hf-transfer report runs/bert_sentiment/compare                    (tables, plots, findings)

The grid's axes: strategies, label budgets (a seeded, stratified subset of the same train
split: task.data.train_per_class / train_size), the start (pretrained weights or random ones,
model.pretrained), seeds and, with --models, options of the model group (model=NAME).
Validation and test are the same for every cell: the splits are drawn with one split seed,
whatever the cell's seed. Each cell is a normal run folder under one comparison folder, named
after its settings: full/pretrained/n64pc/seed42, or mpnet/full/pretrained/n64pc/seed42 with
--models (without it, the layout earlier comparisons have: they go on resuming). A finished
cell is skipped, an unfinished one resumed: an interrupted comparison goes on with the same command.
Under `accelerate launch` every process walks the same cells, as every process of one run does.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hf_transfer import run_folder
from hf_transfer.compose import compose_jobs, hydra_session, prepare_overrides
from hf_transfer.config import as_dict, validate
from hf_transfer.distributed import is_secondary_process
from hf_transfer.errors import CommandParser, UserError, unknown_choice
from hf_transfer.jobs import run_all
from hf_transfer.strategies import STRATEGIES
from hf_transfer.validation import check

if TYPE_CHECKING:
    from hydra.core.config_loader import ConfigLoader

    from hf_transfer.compose import Job
    from hf_transfer.config import RunConfig
    from hf_transfer.jobs import Say

DEFAULT_BUDGETS = "8/class,64/class,1000,all"
STARTS = ("pretrained", "random")
# The keys the grid sets: a user gives their values as the grid's axes, not as overrides.
AXIS_KEYS = {
    "strategy": "--strategies",
    "model.pretrained": "--starts",
    "seed": "--seeds (seeds are SEED, SEED+1, ... from the recipe's seed)",
    "task.data.train_per_class": "--budgets",
    "task.data.train_size": "--budgets",
    "hydra.run.dir": "--out",
}


@dataclass(frozen=True)
class Budget:
    """A label budget: so many training examples of each class, so many in all, or all."""

    per_class: int | None = None
    total: int | None = None

    @property
    def text(self) -> str:
        return f"{self.per_class}/class" if self.per_class else str(self.total) if self.total else "all"

    @property
    def folder(self) -> str:
        return f"n{self.per_class}pc" if self.per_class else f"n{self.total}" if self.total else "all"

    def overrides(self) -> list[str]:
        return [f"task.data.train_per_class={_null(self.per_class)}", f"task.data.train_size={_null(self.total)}"]


def _null(value: int | None) -> str:
    return "null" if value is None else str(value)


def parse_budget(text: str) -> Budget:
    """'8/class' -> 8 of each class; '1000' -> 1,000 in all; 'all' -> the whole train split."""
    word = text.strip().lower()
    if word == "all":
        return Budget()
    match = re.fullmatch(r"(\d+)(/class)?", word)
    if not match or int(match.group(1)) < 1:
        raise UserError(
            f"bad budget '{text}' in --budgets: write N/class (N training examples of each class), "
            "N (N in all, classes in proportion) or all, with N at least 1; e.g. --budgets 8/class,64/class,1000,all"
        )
    number = int(match.group(1))
    return Budget(per_class=number) if match.group(2) else Budget(total=number)


@dataclass(frozen=True)
class Cell:
    strategy: str
    start: str
    budget: Budget
    seed: int
    model: str | None = None  # an option of the model group (--models); None: the recipe's model

    @property
    def name(self) -> str:
        plain = f"{self.strategy}/{self.start}/{self.budget.folder}/seed{self.seed}"
        return f"{self.model}/{plain}" if self.model else plain

    def overrides(self, split_seed: int) -> list[str]:
        return [
            *([f"model={self.model}"] if self.model else []),
            f"strategy={self.strategy}",
            f"model.pretrained={str(self.start == 'pretrained').lower()}",
            *self.budget.overrides(),
            f"seed={self.seed}",
            # The same validation and test splits in every cell, whatever its seed.
            f"task.data.split_seed={split_seed}",
        ]


@dataclass
class Grid:
    strategies: list[str]
    budgets: list[Budget]
    starts: list[str]
    seeds: int
    models: list[str] | None = None  # None: no model axis, the recipe's model (and the old layout)

    def cells(self, first_seed: int) -> list[Cell]:
        """Seeds outermost (one seed's whole picture comes first), then budgets from the
        smallest (the cheapest runs first), models, starts, strategies."""
        return [
            Cell(strategy, start, budget, first_seed + number, model)
            for number in range(self.seeds)
            for budget in self.budgets
            for model in self.models or [None]
            for start in self.starts
            for strategy in self.strategies
        ]

    def describe(self, first_seed: int) -> list[str]:
        seeds = [str(first_seed + n) for n in range(self.seeds)]
        models = len(self.models or [None])
        count = models * len(self.strategies) * len(self.budgets) * len(self.starts) * self.seeds
        return [
            *([f"  models      {', '.join(self.models)}"] if self.models else []),
            f"  strategies  {', '.join(self.strategies)}",
            f"  budgets     {', '.join(b.text for b in self.budgets)}",
            f"  starts      {', '.join(self.starts)}",
            f"  seeds       {', '.join(seeds)}",
            (
                f"  {count} runs = {f'{models} models x ' if self.models else ''}{len(self.strategies)} strategies x "
                f"{len(self.budgets)} budgets x {len(self.starts)} starts x {self.seeds} seeds"
            ),
        ]


def _items(text: str, what: str) -> list[str]:
    items = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not items:
        raise UserError(f"--{what} needs at least one value")
    return items


def parse_grid(strategies: str | None, budgets: str, starts: str, seeds: int, models: str | None = None) -> Grid:
    """The grid the options ask for; any unknown value is refused before anything loads (the
    models' names are checked against the model group in main, which opens the config)."""

    names = _items(strategies, "strategies") if strategies else list(STRATEGIES)
    for name in names:
        if name not in STRATEGIES:
            raise unknown_choice("strategy", name, STRATEGIES, key="--strategies")
    chosen_starts = _items(starts, "starts")
    for start in chosen_starts:
        if start not in STARTS:
            raise unknown_choice("start", start, STARTS, key="--starts")
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    parsed = list(dict.fromkeys(parse_budget(b) for b in _items(budgets, "budgets")))
    return Grid(names, parsed, chosen_starts, seeds, _items(models, "models") if models is not None else None)


def _refuse_axis_overrides(overrides: list[str], with_models: bool) -> None:
    # Without --models, model=NAME is an ordinary override: every cell runs that model.
    axes = {**AXIS_KEYS, "model": "--models"} if with_models else AXIS_KEYS
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in axes:
            raise UserError(f"'{override}': compare sets {key} in each cell; give its values with {axes[key]}")


def _check_models(loader: ConfigLoader, models: list[str]) -> None:
    """Each --models name is an option of the model group (conf/model/, or model/ in --config-dir)."""
    options = loader.get_group_options("model")
    for name in models:
        if name not in options:
            raise unknown_choice("model", name, options, key="--models")


def parse_args(argv: list[str]) -> Any:
    parse = CommandParser(
        prog="hf-transfer compare",
        description="Run a grid of runs over a recipe ([models x] strategies x label budgets x starts x seeds), "
        "each cell a run folder under one comparison folder; finished cells are skipped, so the same command resumes.",
    )
    parse.add_argument("overrides", nargs="*", help="the training command's overrides (recipe=..., trainer.*=...)")
    parse.add_argument("--strategies", help="comma-separated strategies (default: all of them)")
    parse.add_argument("--budgets", default=DEFAULT_BUDGETS, help=f"label budgets: N/class, N or all "
                       f"(default: {DEFAULT_BUDGETS})")  # fmt: skip
    parse.add_argument("--starts", default=",".join(STARTS), help="pretrained, random (model.pretrained=false)")
    parse.add_argument("--seeds", type=int, default=1, help="seeds per cell: SEED, SEED+1, ... (default: 1)")
    parse.add_argument("--models", help="options of the model group (model=NAME), e.g. minilm,mpnet: cells go to "
                       "OUT/MODEL/... (default: the recipe's model, cells in OUT/STRATEGY/...)")  # fmt: skip
    parse.add_argument("--out", help="the comparison folder (default: runs/NAME/compare)")
    parse.add_argument("--config-dir", help="a folder of your own recipes and groups, as for training")
    parse.add_argument("--dry-run", action="store_true", help="validate every cell and print the grid; run nothing")
    return parse.parse_intermixed_args(argv)  # overrides before or after the options


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    grid = parse_grid(args.strategies, args.budgets, args.starts, args.seeds, args.models)
    _refuse_axis_overrides(args.overrides, with_models=grid.models is not None)

    secondary = is_secondary_process()
    say = (lambda line: None) if secondary else (lambda line: print(line, flush=True))
    # The other processes of a launch write nothing of their own (as for one run): their
    # Hydra records go to a scratch folder.
    scratch = tempfile.TemporaryDirectory(prefix="hf-transfer-rank-", ignore_cleanup_errors=True) if secondary else None
    with hydra_session(args.config_dir) as loader, scratch or contextlib.nullcontext():
        if grid.models:
            _check_models(loader, grid.models)
        first_model = [f"model={grid.models[0]}"] if grid.models else []  # the base: a config one cell has
        (base,) = compose_jobs(prepare_overrides(loader, [*args.overrides, *first_model]))
        out = Path(args.out or f"runs/{base.run.name}/compare")
        first_seed = base.run.seed
        split_seed = base.run.task.data.split_seed if base.run.task.data.split_seed is not None else first_seed
        cells = grid.cells(first_seed)
        jobs = []
        for cell in cells:  # every cell validated before any runs
            where = Path(scratch.name) / cell.name if scratch else out / cell.name
            extra = [f'hydra.run.dir="{where}"']
            if scratch:
                extra += ["hydra.output_subdir=null", "hydra.job_logging.root.level=WARNING"]
            (job,) = compose_jobs(prepare_overrides(loader, [*args.overrides, *cell.overrides(split_seed), *extra]))
            jobs.append(job)
        if grid.models:
            _check_models_named_apart(cells, jobs)
        states = [run_folder.state(out / cell.name) for cell in cells]
        for cell, job, found in zip(cells, jobs, states):
            if found != "empty":
                _check_same_config(out, cell, job.run)
        _refuse_runs_in_the_other_layout(out, cells, jobs, loader.get_group_options("model"))
        say(f"compare: {len(cells)} runs into {out}")
        for line in grid.describe(first_seed):
            say(line)
        done = states.count("complete")
        if done:
            say(f"  {done} already complete (skipped), {states.count('incomplete')} to resume")
        if args.dry_run:
            _check_cells(cells, jobs, say)
            return 0
        named = [(cell.name, job) for cell, job in zip(cells, jobs)]
        again = "rerun the same compare command: finished cells are skipped"
        run_all(named, out, kind="cell", secondary=secondary, say=say, prefix="compare", again=again)
    say(f"compare: see the results with: hf-transfer report {out}")
    return 0


def _check_cells(cells: list[Cell], jobs: list[Job], say: Say) -> None:
    """What `hf-transfer validate` checks (data, labels, budget, model), for one cell of each
    model, strategy, start and budget (seeds change no check): a grid whose cell would fail is refused
    now, not after the cells before it trained."""

    checked = set()
    for cell, job in zip(cells, jobs):
        kind = (cell.model, cell.strategy, cell.start, cell.budget)
        if kind in checked:
            continue
        checked.add(kind)
        problems = check(job.run).problems
        if problems:
            raise UserError(f"cell {cell.name}: {'; '.join(problems)}")
    say(f"  checked as the runs would be: {len(checked)} settings (data, labels, budgets, model); no problems")


def _check_same_config(out: Path, cell: Cell, run_cfg: RunConfig) -> None:
    """A cell folder that holds a run of another config (other overrides, another recipe) is
    refused: skipping it would mix two comparisons in one report."""

    saved_file = out / cell.name / "config.yaml"
    if not saved_file.is_file():
        return
    saved = _flat(as_dict(validate(yaml.safe_load(saved_file.read_text(encoding="utf-8")))))
    wanted = _flat(yaml.safe_load(yaml.safe_dump(as_dict(run_cfg))))
    differ = sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k))
    if differ:
        shown = ", ".join(f"{k}: {saved.get(k)!r} there, {wanted.get(k)!r} now" for k in differ[:3])
        raise UserError(
            f"cell {cell.name} in '{out}' holds a run of another config ({shown}"
            f"{', ...' if len(differ) > 3 else ''}); give the same overrides as before, or another --out"
        )


def _model_name(run_cfg: RunConfig) -> str:
    """What the report tells a run's model by: model.name (metrics.json's model_name), else its source."""
    return run_cfg.model.name or run_cfg.model.source


def _check_models_named_apart(cells: list[Cell], jobs: list[Job]) -> None:
    """Two --models that compose to one model.name (a recipe that sets model.name; minilm and
    minilm_hub) would be one model in the report: refused before anything runs."""
    named: dict[str, str] = {}
    for cell, job in zip(cells, jobs):
        name = _model_name(job.run)
        first = named.setdefault(name, str(cell.model))
        if first != cell.model:
            raise UserError(
                f"--models {first} and {cell.model} both run model.name '{name}' (does the recipe set model.name?): "
                "the report tells models apart by model.name; give each option its own name, or leave one out"
            )


def _refuse_runs_in_the_other_layout(out: Path, cells: list[Cell], jobs: list[Job], options: list[str]) -> None:
    """A cell whose run the folder already holds in the other layout (OUT/STRATEGY/... of a
    compare without --models, OUT/MODEL/STRATEGY/... of one with it), of the same model, is
    refused: it would run again beside it, and the report would count one seed twice. (A
    folder may hold both layouts for different models: minilm's cells from an earlier compare,
    mpnet's from --models mpnet.)"""
    for cell, job in zip(cells, jobs):
        plain = replace(cell, model=None).name
        for other in [plain] if cell.model else [f"{option}/{plain}" for option in options]:
            saved_file = out / other / "config.yaml"
            if not saved_file.is_file():
                continue
            saved = yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {}
            model = saved.get("model") or {}
            if (model.get("name") or model.get("source")) == _model_name(job.run):
                how = "without --models" if cell.model else f"with --models {other.split('/')[0]}"
                raise UserError(
                    f"cell {cell.name}: '{out / other}' holds a run of it already (model {_model_name(job.run)}, "
                    f"from a compare {how}); run that compare again as it was, or give another --out"
                )


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat
