"""Few labels: hf_transfer at its defaults against SetFit, on the same examples and test split.

    pip install setfit==1.2.0          # optional: without it only hf_transfer's rows are run
    python benchmarks/few_labels.py [--models minilm,mpnet] [--budgets 8,64] [--seeds 3]
        [--arms setfit,full,head_only] [--starts pretrained,random] [--out FOLDER] [KEY=VALUE ...]

hf_transfer's rows are one `hf-transfer compare` over bert_sentiment (--models x strategies x
budgets x starts x seeds, seeds 42, 43, ...: the recipe's seed and the next), in FOLDER/compare:
each cell is an ordinary run folder, and `hf-transfer report FOLDER/compare` draws the learning
curves from them. For each model, budget (examples per class) and seed, SetFit 1.2.0 trains on
exactly the examples that cell trained on (the seeded, stratified subset of the train split,
`task.data.train_per_class`), with its defaults (contrastive tuning of the same body, then a
logistic regression; batch 16, one epoch), and both are scored on the same 1,281 test reviews
(the splits are drawn with seed 42 for every seed). The out-of-domain sets are left out and the
validation split is capped at 256 reviews (a few-label run scores it after training only: it
decides nothing, and the test split is what is compared).

Training time is hf_transfer's `train_runtime_s` less the evaluations during training
(`train_evaluation_s`), and the time of SetFit's `train()`, which evaluates nothing. Every run
goes one after another; run nothing else meanwhile. Results are kept in FOLDER (compare's cells
and FOLDER/setfit.json): an interrupted benchmark goes on where it stopped. KEY=VALUE overrides
go to hf_transfer's runs (to try a setting against the defaults: give each try its own --out).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

RECIPE = "bert_sentiment"
COMMON = ["~task.extra_test", "trainer.disable_tqdm=true", "task.data.split_seed=42"]
HF_TRANSFER_ONLY = ["task.data.max_eval_samples=256"]
FIRST_SEED = 42  # the recipe's seed: compare's cells are seeds 42, 43, ...


def run_compare(options: argparse.Namespace, strategies: list[str]) -> None:
    command = [sys.executable, "-m", "hf_transfer", "compare", f"recipe={RECIPE}", *COMMON, *HF_TRANSFER_ONLY,
               *options.overrides, "--models", options.models, "--strategies", ",".join(strategies),
               "--starts", options.starts, "--budgets", ",".join(f"{b}/class" for b in budgets(options)),
               "--seeds", str(options.seeds), "--out", str(options.out / "compare")]  # fmt: skip
    print("$", " ".join(command), flush=True)
    if subprocess.run(command).returncode != 0:
        raise SystemExit("hf-transfer compare failed (its message is above)")


def ours(cell: Path) -> dict:
    metrics = json.loads((cell / "metrics.json").read_text())
    return {"test_accuracy": metrics["test"]["accuracy"], "majority": metrics["baseline"]["baseline_score"],
            "train_s": round(metrics["train_runtime_s"] - metrics["train_evaluation_s"], 2),
            "steps": metrics["steps"], "batch": metrics["train_batch_size"], "rate": metrics["learning_rate"],
            "wall_s": metrics["wall_time_s"]}  # fmt: skip


def run_setfit(model: str, per_class: int, seed: int, folder: Path) -> dict:
    """SetFit on the very examples hf_transfer's cell trained on (run in this process)."""
    import numpy as np
    from setfit import SetFitModel, Trainer, TrainingArguments

    from hf_transfer.assets import model_location
    from hf_transfer.compose import compose
    from hf_transfer.config import validate
    from hf_transfer.tasks import task_class

    overrides = [f"recipe={RECIPE}", *COMMON, f"model={model}", f"task.data.train_per_class={per_class}", f"seed={seed}"]
    cfg = validate(compose(overrides))
    data = task_class(cfg.task.type)(cfg.task, cfg.seed).load()
    train, test = data.splits["train"], data.splits["test"]
    body = SetFitModel.from_pretrained(model_location(cfg.model.source))
    args = TrainingArguments(output_dir=str(folder), batch_size=16, num_epochs=1, seed=seed)  # its checkpoints
    trainer = Trainer(model=body, args=args, train_dataset=train.select_columns(["text", "label"]))
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    predicted = np.asarray(body.predict(test["text"], batch_size=64))
    return {"test_accuracy": float((predicted == np.asarray(test["label"])).mean()), "train_s": round(train_s, 2)}


def budgets(options: argparse.Namespace) -> list[int]:
    return [int(b) for b in options.budgets.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm", help="options of the model group")
    parser.add_argument("--budgets", default="8,64", help="examples per class")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 42, 43, ...")
    parser.add_argument("--arms", default="setfit,full,head_only", help="setfit and hf_transfer strategies")
    parser.add_argument("--starts", default="pretrained", help="hf_transfer's starts: pretrained, random")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/few_labels"))
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE for hf_transfer's runs")
    options = parser.parse_args()
    arms = options.arms.split(",")
    if "setfit" in arms and importlib.util.find_spec("setfit") is None:
        print("setfit is not installed (pip install setfit==1.2.0): hf_transfer's rows only", file=sys.stderr)
        arms.remove("setfit")
    strategies = [arm for arm in arms if arm != "setfit"]
    models, seeds = options.models.split(","), [FIRST_SEED + n for n in range(options.seeds)]
    if strategies:
        run_compare(options, strategies)
    saved = options.out / "setfit.json"
    setfit: dict[str, dict] = json.loads(saved.read_text()) if saved.exists() else {}
    rows: dict[tuple[str, int, str], list[dict]] = {}
    for model in models:
        for per_class in budgets(options):
            for seed in seeds:
                for start in options.starts.split(","):
                    for strategy in strategies:
                        cell = options.out / "compare" / model / strategy / start / f"n{per_class}pc" / f"seed{seed}"
                        name = strategy if start == "pretrained" else f"{strategy} ({start})"
                        rows.setdefault((model, per_class, name), []).append(ours(cell))
                if "setfit" in arms:
                    key = f"{model}/{per_class}/{seed}"
                    if key not in setfit:
                        setfit[key] = run_setfit(model, per_class, seed, options.out / "setfit" / key)
                        print(f"SetFit {key}: {setfit[key]}", flush=True)
                        options.out.mkdir(parents=True, exist_ok=True)
                        saved.write_text(json.dumps(setfit, indent=2) + "\n")
                    rows.setdefault((model, per_class, "SetFit 1.2.0"), []).append(setfit[key])
    print("\n| model | labels a class | run | test accuracy, mean ± sd (by seed) | train s |\n|---|---|---|---|---|")
    for (model, per_class, name), results in rows.items():
        accuracy = [r["test_accuracy"] for r in results]
        spread = statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0
        by_seed = " / ".join(f"{a:.4f}" for a in accuracy)
        print(f"| {model} | {per_class} | {name} | {statistics.mean(accuracy):.4f} ± {spread:.4f} ({by_seed}) | "
              f"{statistics.mean(r['train_s'] for r in results):.1f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
