"""Few labels: hf_transfer's strategies (their defaults) against SetFit, on the same examples.

    pip install setfit==1.2.0          # optional: without it only hf_transfer's rows are run
    python benchmarks/few_labels.py [--budgets 8,64] [--seeds 42,1,2] [--strategies full,head_only] [--out FOLDER]

For each label budget (examples per class) and seed, hf_transfer draws the seeded, stratified
subset of bert_sentiment's train split (`task.data.train_per_class`); SetFit trains on exactly
those examples (its defaults: contrastive tuning of the same all-MiniLM-L6-v2, then a logistic
regression head; batch 16, 1 epoch) and both are scored on the same test split. Prints the
mean and spread of test accuracy and of training time per budget; every figure goes to
FOLDER/results.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMON = ["recipe=bert_sentiment", "~task.extra_test", "trainer.disable_tqdm=true"]


def ours(folder: Path, strategy: str, per_class: int, seed: int) -> dict:
    command = [sys.executable, "-m", "hf_transfer", *COMMON, f"strategy={strategy}",
               f"task.data.train_per_class={per_class}", f"seed={seed}", f"hydra.run.dir={folder}"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((folder / "metrics.json").read_text())
    return {"test_accuracy": metrics["test"]["accuracy"], "train_s": metrics["train_runtime_s"],
            "wall_s": metrics["wall_time_s"]}  # fmt: skip


def setfit(per_class: int, seed: int) -> dict:
    """SetFit on the very examples hf_transfer trains on (run in this process)."""
    import numpy as np
    from setfit import SetFitModel, Trainer, TrainingArguments

    from hf_transfer.assets import model_location
    from hf_transfer.compose import compose
    from hf_transfer.config import validate
    from hf_transfer.tasks import task_class

    cfg = validate(compose([*COMMON, f"task.data.train_per_class={per_class}", f"seed={seed}"]))
    data = task_class(cfg.task.type)(cfg.task, cfg.seed).load()
    train, test = data.splits["train"], data.splits["test"]
    model = SetFitModel.from_pretrained(model_location(cfg.model.source))
    trainer = Trainer(model=model, args=TrainingArguments(batch_size=16, num_epochs=1, seed=seed),
                      train_dataset=train.select_columns(["text", "label"]))  # fmt: skip
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    predicted = np.asarray(model.predict(test["text"], batch_size=64))
    return {"test_accuracy": float((predicted == np.asarray(test["label"])).mean()), "train_s": round(train_s, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="8,64", help="examples per class")
    parser.add_argument("--seeds", default="42,1,2")
    parser.add_argument("--strategies", default="full,head_only")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/few_labels"))
    options = parser.parse_args()
    try:
        import setfit  # noqa: F401

        arms = ["setfit"]
    except ImportError:
        print("setfit is not installed (pip install setfit==1.2.0): hf_transfer's rows only", file=sys.stderr)
        arms = []
    arms += options.strategies.split(",")
    results: dict[str, dict[str, list[dict]]] = {}
    for per_class in (int(b) for b in options.budgets.split(",")):
        for arm in arms:
            rows = results.setdefault(f"{per_class}/class", {}).setdefault(arm, [])
            for seed in (int(s) for s in options.seeds.split(",")):
                folder = options.out / f"n{per_class}pc" / arm / f"seed{seed}"
                figures = setfit(per_class, seed) if arm == "setfit" else ours(folder, arm, per_class, seed)
                rows.append(figures)
                print(f"{per_class}/class {arm} seed {seed}: {figures}", flush=True)
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n| budget | run | test accuracy (mean ± sd) | train s (mean) |\n|---|---|---|---|")
    for budget, by_arm in results.items():
        for arm, rows in by_arm.items():
            accuracy = [r["test_accuracy"] for r in rows]
            spread = statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0
            name = "SetFit 1.2.0" if arm == "setfit" else f"hf_transfer strategy={arm}"
            print(f"| {budget} | {name} | {statistics.mean(accuracy):.4f} ± {spread:.4f} | "
                  f"{statistics.mean(r['train_s'] for r in rows):.1f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
