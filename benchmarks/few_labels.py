"""Few labels: hf_transfer's strategies (their defaults) against SetFit, on the same examples.

    pip install setfit==1.2.0          # optional: without it only hf_transfer's rows are run
    python benchmarks/few_labels.py [--budgets 8,64] [--seeds 42,1,2] [--arms setfit,full,head_only] [--out FOLDER] [KEY=VALUE ...]

For each label budget (examples per class) and seed, hf_transfer draws the seeded, stratified
subset of bert_sentiment's train split (`task.data.train_per_class`); SetFit trains on exactly
those examples (its defaults: contrastive tuning of the same body, all-MiniLM-L6-v2 or the
`model=...` given, e.g. model=mpnet; then a logistic regression head; batch 16, 1 epoch) and both are scored on the same test split (the splits are
drawn with seed 42 for every seed). Prints the mean and spread of test accuracy and of training
time per budget. Training time is hf_transfer's `train_runtime_s`, and that without the
evaluations on the validation split during training (`train_evaluation_s`): SetFit's `train()`
evaluates nothing. Every figure goes to FOLDER/results.json; a run already there is not run
again, so an interrupted benchmark goes on where it stopped. KEY=VALUE overrides go to
hf_transfer's runs (to try a setting against the defaults; give each try its own --out).
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

COMMON = ["recipe=bert_sentiment", "~task.extra_test", "trainer.disable_tqdm=true", "task.data.split_seed=42"]


def ours(folder: Path, strategy: str, per_class: int, seed: int, overrides: list[str]) -> dict:
    command = [sys.executable, "-m", "hf_transfer", *COMMON, f"strategy={strategy}", *overrides,
               f"task.data.train_per_class={per_class}", f"seed={seed}", f"hydra.run.dir={folder}"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((folder / "metrics.json").read_text())
    return {"test_accuracy": metrics["test"]["accuracy"], "train_s": metrics["train_runtime_s"],
            "train_without_evaluation_s": round(metrics["train_runtime_s"] - metrics["train_evaluation_s"], 2),
            "steps": metrics["steps"], "batch": metrics["train_batch_size"], "wall_s": metrics["wall_time_s"]}  # fmt: skip


def run_setfit(per_class: int, seed: int, folder: Path, overrides: list[str]) -> dict:
    """SetFit on the very examples hf_transfer trains on (run in this process)."""
    import numpy as np
    from setfit import SetFitModel, Trainer, TrainingArguments

    from hf_transfer.assets import model_location
    from hf_transfer.compose import compose
    from hf_transfer.config import validate
    from hf_transfer.tasks import task_class

    # The same body as hf_transfer's runs (model=...); their other overrides are not SetFit's.
    body = [o for o in overrides if o.startswith("model=")]
    cfg = validate(compose([*COMMON, *body, f"task.data.train_per_class={per_class}", f"seed={seed}"]))
    data = task_class(cfg.task.type)(cfg.task, cfg.seed).load()
    train, test = data.splits["train"], data.splits["test"]
    model = SetFitModel.from_pretrained(model_location(cfg.model.source))
    args = TrainingArguments(output_dir=str(folder), batch_size=16, num_epochs=1, seed=seed)  # its checkpoints
    trainer = Trainer(model=model, args=args, train_dataset=train.select_columns(["text", "label"]))
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    predicted = np.asarray(model.predict(test["text"], batch_size=64))
    return {"test_accuracy": float((predicted == np.asarray(test["label"])).mean()), "train_s": round(train_s, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="8,64", help="examples per class")
    parser.add_argument("--seeds", default="42,1,2")
    parser.add_argument("--arms", default="setfit,full,head_only", help="setfit and hf_transfer strategies")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/few_labels"))
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE for hf_transfer's runs")
    options = parser.parse_args()
    arms = options.arms.split(",")
    if "setfit" in arms and importlib.util.find_spec("setfit") is None:
        print("setfit is not installed (pip install setfit==1.2.0): hf_transfer's rows only", file=sys.stderr)
        arms.remove("setfit")
    saved = options.out / "results.json"
    results: dict[str, dict[str, dict[str, dict]]] = json.loads(saved.read_text()) if saved.exists() else {}
    for per_class in (int(b) for b in options.budgets.split(",")):
        for arm in arms:
            rows = results.setdefault(f"{per_class}/class", {}).setdefault(arm, {})
            for seed in options.seeds.split(","):
                if seed in rows:
                    continue
                folder = options.out / f"n{per_class}pc" / arm / f"seed{seed}"
                rows[seed] = (
                    run_setfit(per_class, int(seed), folder, options.overrides)
                    if arm == "setfit"
                    else ours(folder, arm, per_class, int(seed), options.overrides)
                )
                print(f"{per_class}/class {arm} seed {seed}: {rows[seed]}", flush=True)
                options.out.mkdir(parents=True, exist_ok=True)
                saved.write_text(json.dumps(results, indent=2) + "\n")
    print(
        "\n| budget | run | test accuracy (mean ± sd) | train s | without evaluation | seeds |\n|---|---|---|---|---|---|"
    )
    for budget, by_arm in results.items():
        for arm, by_seed in by_arm.items():
            rows = list(by_seed.values())
            accuracy = [r["test_accuracy"] for r in rows]
            spread = statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0
            name = "SetFit 1.2.0" if arm == "setfit" else f"hf_transfer strategy={arm}"
            bare = statistics.mean(r.get("train_without_evaluation_s", r["train_s"]) for r in rows)
            print(f"| {budget} | {name} | {statistics.mean(accuracy):.4f} ± {spread:.4f} | "
                  f"{statistics.mean(r['train_s'] for r in rows):.1f} | {bare:.1f} | {len(rows)} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
