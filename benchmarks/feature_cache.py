"""The frozen part computed once: head_only and partial_unfreeze with and without the feature cache.

    python benchmarks/feature_cache.py [--repeats 3] [--train-samples N] [--out FOLDER] [--only NAME,...]

Each case is run with `strategy.cache=true` and `strategy.cache=false`, one after the other
(cached first, then uncached, then the next repeat), as separate `python -m hf_transfer` calls
on the default recipe (all-MiniLM-L6-v2 + Rotten Tomatoes). The out-of-domain sets are left out
(`~task.extra_test`): they cost the same forward pass with or without the cache. Prints, per
case, the median wall time of each arm and their ratio, test accuracy and peak memory; the
figures of every run go to FOLDER/results.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CASES = {
    "head_only-3ep": ["strategy=head_only", "trainer.num_train_epochs=3"],
    "head_only-10ep": ["strategy=head_only", "trainer.num_train_epochs=10"],
    "partial_unfreeze-3ep": ["strategy=partial_unfreeze", "strategy.num_layers=2", "trainer.num_train_epochs=3"],
}
COMMON = ["recipe=bert_sentiment", "~task.extra_test", "strategy.min_steps=0", "trainer.disable_tqdm=true"]


def run_once(folder: Path, overrides: list[str]) -> dict:
    command = [sys.executable, "-m", "hf_transfer", *COMMON, *overrides, f"hydra.run.dir={folder}"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((folder / "metrics.json").read_text())
    return {
        "wall_time_s": metrics["wall_time_s"],
        "train_runtime_s": metrics["train_runtime_s"],
        "test_accuracy": metrics["test"]["accuracy"],
        "peak_memory_mb": metrics["peak_memory_mb"],
        "cache_build_s": metrics["feature_cache"].get("build_s"),
        "cache_used": metrics["feature_cache"]["used"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-samples", type=int, help="a subset of train (validation and test: a tenth each)")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/feature_cache"))
    parser.add_argument("--only", help="comma-separated case names: " + ", ".join(CASES))
    options = parser.parse_args()
    cases = {name: CASES[name] for name in (options.only.split(",") if options.only else CASES)}
    subset = []
    if options.train_samples:
        tenth = max(options.train_samples // 8, 1)
        subset = [f"task.data.max_train_samples={options.train_samples}",
                  f"task.data.max_eval_samples={tenth}", f"task.data.max_test_samples={tenth}"]  # fmt: skip
    results: dict[str, dict[str, list[dict]]] = {}
    for name, overrides in cases.items():
        results[name] = {"cached": [], "uncached": []}
        for repeat in range(options.repeats):
            for arm, setting in (("cached", "true"), ("uncached", "false")):
                folder = options.out / name / f"{arm}-{repeat}"
                figures = run_once(folder, [*overrides, *subset, f"strategy.cache={setting}"])
                results[name][arm].append(figures)
                print(f"{name} {arm} #{repeat}: {figures}", flush=True)
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(
        "\n| case | wall s cached | wall s uncached | ratio | build s | test acc. cached / uncached | peak MB cached / uncached |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, arms in results.items():
        median = {arm: {key: statistics.median(r[key] for r in runs) for key in ("wall_time_s", "test_accuracy",
                        "peak_memory_mb")} for arm, runs in arms.items()}  # fmt: skip
        build = statistics.median(r["cache_build_s"] for r in arms["cached"])
        ratio = median["uncached"]["wall_time_s"] / median["cached"]["wall_time_s"]
        print(f"| {name} | {median['cached']['wall_time_s']:.1f} | {median['uncached']['wall_time_s']:.1f} | "
              f"{ratio:.2f}x | {build:.1f} | {median['cached']['test_accuracy']:.4f} / "
              f"{median['uncached']['test_accuracy']:.4f} | {median['cached']['peak_memory_mb']:.0f} / "
              f"{median['uncached']['peak_memory_mb']:.0f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
