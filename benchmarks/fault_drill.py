"""A fault drill: many generated bad inputs, signals and full disks against the CLI, on tiny models.

    python benchmarks/fault_drill.py [--seed 0] [--values 40] [--files 30] [--stops 24] [--out FILE]

Each case runs `hf-transfer` as a user would (a process of its own) and is judged:

- a bad value or a bad file: exit status 2, one line on stderr that starts "hf-transfer: error:",
  no traceback, and no run folder left behind;
- a stop (Ctrl-C, SIGTERM, SIGKILL at a random step, or the disk filling after a random
  checkpoint): the documented exit status (130, 143, killed, 2), then `hf-transfer resume`
  (after space is freed) ends with the same weights as the same run never stopped, and the same
  `metrics.json` figures (training loss, test scores, steps);
- throughout, the files of a finished run in the same parent folder keep their checksums.

Stops are injected from outside our code: a TrainerCallback added to transformers' Trainer sends
the signal to its own process (as a terminal or a scheduler would) or fills the disk with another
file. Full-disk cases need a tmpfs mount (root); without one they are skipped and counted so.
Writes a JSON summary (--out) and prints the counts per family.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

# Bad values: (override, extra overrides it needs). Each is a mistake a user makes.
BAD_VALUES = [
    ("seed=-1", []), ("seed=abc", []), ("seed=99999999999", []),
    ("trainer.num_train_epochs=1e9", []), ("trainer.num_train_epochs=-2", []), ("trainer.num_train_epochs=many", []),
    ("trainer.learning_rate=-0.1", []), ("trainer.learning_rate=fast", []), ("strategy.learning_rate=0", []),
    ("trainer.per_device_train_batch_size=0", []), ("trainer.per_device_train_batch_size=-8", []),
    ("trainer.max_steps=100000000000", []), ("trainer.num_train_epoch=2", []), ("trainer.lerning_rate=1e-4", []),
    ("task.max_length=100000", []), ("task.max_length=0", []), ("task.max_length=-3", []),
    ("strategy=lora", ["strategy.r=100000"]), ("strategy=lora", ["strategy.r=0"]), ("strategy=lora", ["strategy.r=-4"]),
    ("strategy=lora", ["strategy.target_modules=[nothing_here]"]), ("strategy=lora", ["strategy.lora_dropout=2"]),
    ("strategy=partial_unfreeze", ["strategy.num_layers=-1"]), ("strategy=partial_unfreeze", ["strategy.num_layers=99"]),
    ("strategy=fullish", []), ("strategy=head_only", ["strategy.cache=maybe"]),
    ("early_stopping.patience=-1", []), ("early_stopping.patience=0", []), ("early_stopping.threshold=-1", []),
    ("task.labels=[pos,neg,pos]", []), ("task.columns.text=nosuchcolumn", []), ("task.columns.label=nosuchcolumn", []),
    ("model.source=/no/such/checkpoint", []), ("task.data.source=/no/such/data.csv", []),
    ("model.config_overrides.hidden_dropout_prob=abc", []), ("trainer.report_to=wandb", []),
    ("+seed=1", []), ("recipe=no_such_recipe", []), ("task=no_such_task", []), ("model.pooling=sideways", []),
    ("trainer.eval_strategy=sometimes", []), ("task.problem_type=ordinal", []), ("strategy.min_steps=-5", []),
    ("trainer.warmup_steps=-1", []), ("trainer.gradient_accumulation_steps=0", []),
]  # fmt: skip

# Bad files: (name, content as bytes, extra overrides). The file is the train split; test is good.
def _bad_files(rng: random.Random) -> list[tuple[str, bytes, list[str]]]:
    header = b"review,sentiment\n"
    rows = b"".join(f"good film {i},pos\nbad film {i},neg\n".encode() for i in range(20))
    return [
        ("empty.csv", b"", []),
        ("header_only.csv", header, []),
        ("binary.csv", bytes(rng.randrange(256) for _ in range(3000)), []),
        ("image.csv", b"\x89PNG\r\n\x1a\n" + bytes(rng.randrange(256) for _ in range(500)), []),
        ("latin1.csv", header + "café crème,pos\nnaïve,neg\n".encode("latin-1") * 20, []),
        ("no_label.csv", b"review\n" + b"good film\n" * 40, []),
        ("one_class.csv", header + b"good film,pos\n" * 40, []),
        ("decimals.csv", header + b"".join(f"film {i},{i * 0.37 % 5:.2f}\n".encode() for i in range(40)), []),
        ("dup_columns.csv", b"review,review,sentiment\n" + b"a,b,pos\nc,d,neg\n" * 20, []),
        ("broken.jsonl", b'{"review": "good", "sentiment": "pos"}\n{"review": "bad", "sentiment": \n' * 10, []),
        ("ragged.csv", header + rows + b'"unclosed quote,pos\n' + rows, ["--either"]),
        ("empty_labels.csv", header + b"good film,\nbad film,\n" * 20, []),
        ("utf16.csv", (header + rows).decode().encode("utf-16-le"), []),
        ("only_spaces.csv", header + b"   ,pos\n  ,neg\n" * 20, []),
        ("wrong_column_names.csv", b"text,label\n" + b"good film,pos\nbad film,neg\n" * 20, []),
        ("folder_as_file.csv", None, []),  # a folder where a file was named
        ("tabs_named_csv.tsv.csv", b"review\tsentiment\n" + rows.replace(b",", b"\t"), ["--expect-ok"]),
        ("numbers_only.csv", header + b"".join(f"{1000 + i},{'pos' if i % 2 else 'neg'}\n".encode() for i in range(40)),
         ["--expect-ok"]),
    ]  # fmt: skip


INJECT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import transformers
    from transformers import TrainerCallback

    class Fault(TrainerCallback):
        # {kind} at step {step}: a signal to this process, or the disk filled by another file.
        def on_step_end(self, args, state, control, **kwargs):
            if "{kind}" != "disk" and state.global_step == {step}:
                os.kill(os.getpid(), getattr(signal, "{kind}"))
        def on_save(self, args, state, control, **kwargs):
            if "{kind}" == "disk" and state.global_step == {step}:
                with open({filler!r}, "wb") as stream:
                    size = os.statvfs({filler_dir!r}).f_bavail * os.statvfs({filler_dir!r}).f_frsize - 8192
                    os.posix_fallocate(stream.fileno(), 0, max(size, 1))

    original = transformers.Trainer.__init__
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.add_callback(Fault())
    transformers.Trainer.__init__ = __init__

    from hf_transfer.cli import main
    sys.exit(main({argv!r}))
    """
)

STEPS = ["trainer.num_train_epochs=3", "trainer.per_device_train_batch_size=8", "trainer.save_strategy=steps",
         "trainer.save_steps=4", "trainer.eval_strategy=steps", "trainer.eval_steps=4", "trainer.save_total_limit=3",
         "trainer.load_best_model_at_end=false", "trainer.logging_steps=1"]  # fmt: skip
STRATEGIES = [["strategy=full"], ["strategy=lora"], ["strategy=head_only", "strategy.cache=true",
              "strategy.cache_memory_share=0"], ["strategy=partial_unfreeze", "strategy.num_layers=0",
              "strategy.unfreeze_every=1"]]  # fmt: skip


def cli(argv: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hf_transfer", *argv], check=False, cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def clean_refusal(done: subprocess.CompletedProcess) -> str | None:
    """None where the process ended as a user's mistake should; else what was wrong."""
    lines = [line for line in done.stderr.splitlines() if line.startswith("hf-transfer: error:")]
    if done.returncode != 2:
        return f"exit {done.returncode}"
    if "Traceback" in done.stderr:
        return "traceback"
    if len(lines) != 1:
        return f"{len(lines)} error lines"
    return None


def checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}  # fmt: skip


def same_run(whole: Path, resumed: Path) -> str | None:
    from safetensors.torch import load_file

    def weights(folder: Path) -> dict:
        name = "model.safetensors"
        return load_file(str(folder / name))

    a, b = weights(whole), weights(resumed)
    if a.keys() != b.keys() or any(not a[k].equal(b[k]) for k in a):
        return "weights differ"
    m, n = (json.loads((f / "metrics.json").read_text()) for f in (whole, resumed))
    for key in ("train_loss", "steps"):
        if m.get(key) != n.get(key):
            return f"metrics.json {key}: {m.get(key)} vs {n.get(key)}"
    strip = ("runtime", "per_second")
    first, second = ({k: v for k, v in d["test"].items() if not k.endswith(strip)} for d in (m, n))
    return None if first == second else "test scores differ"


def mount_small_disk(folder: Path) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(folder)], check=False,
                          capture_output=True).returncode == 0  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--values", type=int, default=len(BAD_VALUES))
    parser.add_argument("--files", type=int, default=18)
    parser.add_argument("--stops", type=int, default=16)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    from conftest import build_checkpoint, sentiment_rows, write_csv

    work = Path(tempfile.mkdtemp(prefix="fault-drill-"))
    ENV["HF_HOME"] = str(work / "hf_home")
    checkpoint = build_checkpoint(work / "tiny", "bert")
    data = work / "data"
    data.mkdir()
    rows = sentiment_rows(100, 1)
    write_csv(data / "train.csv", rows[:72])
    write_csv(data / "validation.csv", rows[72:86])
    write_csv(data / "test.csv", rows[86:])
    base = [f"--config-dir={ROOT / 'tests' / 'recipes'}", "recipe=tiny", f"model.source={checkpoint}"]
    runs = work / "runs"
    results: dict[str, list[dict]] = {"values": [], "files": [], "stops": []}

    # A finished run beside everything else: its files must never change.
    done = cli([*base, f"task.data.source={data}", f"hydra.run.dir={runs / 'finished'}"], work)
    assert done.returncode == 0, done.stderr[-2000:]
    kept = checksums(runs / "finished")

    for n, (override, extra) in enumerate(rng.sample(BAD_VALUES, min(args.values, len(BAD_VALUES)))):
        folder = runs / f"value-{n}"
        done = cli([*base, f"task.data.source={data}", override, *extra, f"hydra.run.dir={folder}"], work)
        problem = clean_refusal(done) or ("run folder left behind" if folder.exists() else None)
        results["values"].append({"case": " ".join([override, *extra]), "problem": problem,
                                  "message": done.stderr.strip().splitlines()[-1:] })  # fmt: skip
        print(f"value  {'clean' if problem is None else 'NOT CLEAN: ' + problem:28} {override} {' '.join(extra)}")

    for n, (name, content, flags) in enumerate(rng.sample(_bad_files(rng), min(args.files, 18))):
        source = work / f"files-{n}"
        source.mkdir()
        train = source / "train.csv" if name.endswith(".csv") else source / name.replace("broken", "train")
        if content is None:
            train.mkdir()
        else:
            train.write_bytes(content)
        if train.suffix == ".csv":
            test = (data / "test.csv").read_text()
            # The tab-separated file's test split is tab-separated too (one format a folder).
            (source / "test.csv").write_text(test.replace(",", "\t") if name.startswith("tabs") else test)
        folder = runs / f"file-{n}"
        done = cli([*base, f"task.data.source={source}", f"hydra.run.dir={folder}"], work)
        if "--expect-ok" in flags or ("--either" in flags and done.returncode == 0):
            problem = None if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()[-300:]}"
        else:
            problem = clean_refusal(done) or ("run folder left behind" if folder.exists() else None)
        results["files"].append({"case": name, "problem": problem, "message": done.stderr.strip().splitlines()[-1:]})
        print(f"file   {'clean' if problem is None else 'NOT CLEAN: ' + problem:28} {name}")

    references: dict[int, Path] = {}
    disk_ok = os.geteuid() == 0 and mount_small_disk(work / "disk")
    kinds = ["SIGINT", "SIGTERM", "SIGKILL"] + (["disk"] if disk_ok else [])
    expected = {"SIGINT": 130, "SIGTERM": 143, "SIGKILL": -signal.SIGKILL, "disk": 2}
    for n in range(args.stops):
        choice, kind = n % len(STRATEGIES), kinds[n % len(kinds)]
        overrides = [*base, f"task.data.source={data}", *STEPS, *STRATEGIES[choice]]
        if choice not in references:
            references[choice] = runs / f"whole-{choice}"
            assert cli([*overrides, f"hydra.run.dir={references[choice]}"], work).returncode == 0
        step = rng.choice([4, 8]) if kind == "disk" else rng.randint(2, 25)  # 27 steps, a checkpoint every 4
        folder = (work / "disk" if kind == "disk" else runs) / f"stop-{n}"
        filler = work / "disk" / "someone-elses-file"
        script = INJECT.format(kind=kind, step=step, filler=str(filler), filler_dir=str(work / "disk"),
                               argv=[*overrides, f"hydra.run.dir={folder}"])  # fmt: skip
        stopped = subprocess.run([sys.executable, "-c", script], check=False, cwd=work, env=ENV, capture_output=True, text=True,
                                 timeout=300)  # fmt: skip
        problem = None
        if stopped.returncode != expected[kind]:
            problem = f"exit {stopped.returncode}, not {expected[kind]}: {stopped.stderr.strip()[-300:]}"
        elif kind != "SIGKILL" and "Traceback" in stopped.stderr:
            problem = "traceback"
        filler.unlink(missing_ok=True)  # space is freed
        if problem is None:
            resumed = cli(["resume", str(folder)], work)
            if resumed.returncode != 0:
                problem = f"resume: exit {resumed.returncode}: {resumed.stderr.strip()[-300:]}"
            else:
                problem = same_run(references[choice], folder)
        results["stops"].append({"case": f"{' '.join(STRATEGIES[choice])} {kind} at step {step}", "problem": problem})
        print(f"stop   {'clean' if problem is None else 'NOT CLEAN: ' + problem:28} {kind} step {step} "
              f"{' '.join(STRATEGIES[choice])}")  # fmt: skip
        if kind == "disk":
            shutil.rmtree(folder, ignore_errors=True)

    lost = checksums(runs / "finished") != kept
    summary = {family: {"cases": len(cases), "clean": sum(c["problem"] is None for c in cases)}
               for family, cases in results.items()}  # fmt: skip
    summary["finished_run_unchanged"] = not lost
    summary["full_disk_cases"] = "run" if disk_ok else "skipped (no tmpfs mount here)"
    print(json.dumps(summary, indent=2))
    if args.out:  # the temporary folder's path is this machine's: written as WORK
        record = json.dumps({"summary": summary, "cases": results}, indent=2).replace(str(work), "WORK")
        args.out.write_text(record + "\n")
    if disk_ok:
        subprocess.run(["umount", "-l", str(work / "disk")], check=False)
    shutil.rmtree(work, ignore_errors=True)
    clean = not lost and all(s["clean"] == s["cases"] for k, s in summary.items() if isinstance(s, dict))
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
