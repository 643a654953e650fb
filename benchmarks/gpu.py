"""hf_transfer on the device a user trains on, against the plain Trainer script and a hand-written loop.

    python benchmarks/gpu.py [--out FOLDER] [--quick]

On a CUDA GPU (offline, with the default recipe's assets cached), in about 5 minutes: the
default recipe (all-MiniLM-L6-v2 on Rotten Tomatoes, one epoch, bf16) as hf_transfer runs it
and as benchmarks/plain_trainer.py's plain Trainer script runs it, at batch 32 and 256; a
hand-written bf16 loop (pre-padded batches, fused AdamW, no Trainer) as the limit; each strategy;
then a per-step profile of both (torch.profiler: host time against device time, the top
operations) and the host-device synchronisations inside a step
(`torch.cuda.set_sync_debug_mode`). Figures: train samples/s, the steady step time (steps after
warm-up, between two synchronisations), share of the chip's bf16 matrix rate (measured here),
peak GPU memory, test accuracy.

Without a GPU it runs the same comparison on the CPU with a tiny model (2 layers, hidden 64),
where per-step host work is most of a step, as on a GPU: the number a developer without a GPU
can improve and check.

Writes FOLDER/gpu.json (every figure), FOLDER/gpu.md (the tables) and FOLDER/profile.txt.
Each measurement runs in its own process (a worker: `--worker plain|ours|loop`), time-boxed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # plain_trainer.py beside this file

RECIPE = ["recipe=bert_sentiment", "~task.extra_test", "trainer.disable_tqdm=true", "trainer.num_train_epochs=1"]
WARM_STEPS = 10  # steps before the steady step time is measured (allocator, autotuning, workers)


# -- measuring inside a training run ---------------------------------------------------------
def probe_callback(steps: int, profile: bool = False, syncs: bool = False) -> Any:
    """A TrainerCallback that measures the steady step time over `steps` steps after WARM_STEPS,
    synchronising the device at the two ends only, and optionally profiles (torch.profiler) and
    counts host-device synchronisations over the steps after that."""
    import torch
    from transformers import TrainerCallback

    cuda = torch.cuda.is_available()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    class Probe(TrainerCallback):
        def __init__(self) -> None:
            self.started: float | None = None
            self.step_ms: float | None = None
            self.profile_text = ""
            self.host_ms = self.device_ms = None
            self.syncs: dict[str, int] = {}
            self.sync_steps = 0
            self._profiler: Any = None
            self._catcher: Any = None
            self._span = (WARM_STEPS + steps, WARM_STEPS + steps + 10)  # profiled steps
            self._sync_span = (self._span[1] + 2, self._span[1] + 12)  # steps with sync warnings

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            step = state.global_step
            if profile and step == self._span[0]:
                from torch.profiler import ProfilerActivity

                activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
                self._profiler = torch.profiler.profile(activities=activities)
                sync()
                self._profiler.start()
                self._profile_started = time.perf_counter()
            if syncs and cuda and step == self._sync_span[0]:
                self._catcher = SyncCatcher()
                self._catcher.start()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            step = state.global_step
            if step == WARM_STEPS:
                sync()
                self.started = time.perf_counter()
            elif step == WARM_STEPS + steps and self.started is not None:
                sync()
                self.step_ms = 1000 * (time.perf_counter() - self.started) / steps
            if self._profiler is not None and step == self._span[1]:
                sync()
                wall = time.perf_counter() - self._profile_started
                self._profiler.stop()
                self.host_ms, self.device_ms, self.profile_text = summarise_profile(
                    self._profiler, wall, self._span[1] - self._span[0]
                )
                self._profiler = None
            if self._catcher is not None and step == self._sync_span[1]:
                self.syncs = self._catcher.stop()
                self.sync_steps = self._sync_span[1] - self._sync_span[0]
                self._catcher = None

        def figures(self) -> dict[str, Any]:
            out: dict[str, Any] = {"step_ms": None if self.step_ms is None else round(self.step_ms, 2)}
            if profile:
                out |= {"profile_host_ms_per_step": self.host_ms, "profile_device_ms_per_step": self.device_ms,
                        "profile": self.profile_text}  # fmt: skip
            if syncs and self.sync_steps:
                per_step = round(sum(self.syncs.values()) / self.sync_steps, 2)
                out |= {"syncs_per_step": per_step, "sync_sites": self.syncs}
            return out

    return Probe()


class SyncCatcher:
    """Host-device synchronisations, by the Python line that caused them (torch's sync debug
    mode warns at each; the warning is raised in the frame of the call that synchronised)."""

    def start(self) -> None:
        import traceback
        import warnings

        import torch

        self.sites: dict[str, int] = {}
        self._previous = warnings.showwarning

        def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
            if "synchroniz" not in str(message):
                return self._previous(message, category, filename, lineno, file, line)
            frames = [f for f in traceback.extract_stack()[:-1] if "/warnings.py" not in f.filename]
            site = " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in frames[-4:][::-1])
            self.sites[site] = self.sites.get(site, 0) + 1

        self._filters = warnings.filters[:]
        warnings.simplefilter("always")
        warnings.showwarning = show
        torch.cuda.set_sync_debug_mode("warn")

    def stop(self) -> dict[str, int]:
        import warnings

        import torch

        torch.cuda.set_sync_debug_mode("default")
        warnings.showwarning = self._previous
        warnings.filters[:] = self._filters
        return dict(sorted(self.sites.items(), key=lambda kv: -kv[1]))


def summarise_profile(profiler: Any, wall_s: float, steps: int) -> tuple[float, float, str]:
    """Host ms a step (wall time over the profiled steps), device ms a step (kernel time), and
    the top operations by host time and by device time."""
    events = profiler.key_averages()
    device_us = sum(getattr(e, "self_device_time_total", 0) for e in events if _is_kernel(e))
    lines = [f"{steps} steps: {1000 * wall_s / steps:.2f} ms a step on the host clock, "
             f"{device_us / 1000 / steps:.2f} ms a step of device kernels"]  # fmt: skip
    for key, title in (("self_cpu_time_total", "host"), ("self_device_time_total", "device")):
        lines.append(f"\ntop operations by {title} time:")
        try:
            lines.append(events.table(sort_by=key, row_limit=15, max_name_column_width=60))
        except Exception as err:  # a sort key this torch build does not know
            lines.append(f"({err})")
    return round(1000 * wall_s / steps, 2), round(device_us / 1000 / steps, 2), "\n".join(lines)


def _is_kernel(event: Any) -> bool:
    device_type = str(getattr(event, "device_type", ""))
    return "CUDA" in device_type or "cuda" in device_type.lower()


def peak_memory_mb() -> float:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else 0.0


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


# -- workers: one process each -------------------------------------------------------------
def worker_ours(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """hf_transfer runs in this process, as tests call them (`run`), one after another."""
    from hf_transfer.compose import compose
    from hf_transfer.run import run

    results = []
    for case in spec["cases"]:
        if case.get("cudnn_attention") is False:
            import torch

            torch.backends.cuda.enable_cudnn_sdp(False)
        reset_peak()
        probe = probe_callback(case.get("steps", 100), case.get("profile", False), case.get("syncs", False))
        folder = run_folder(Path(spec["out"]), case["name"])
        started = time.perf_counter()
        try:
            result = run(compose([*spec["base"], *case["overrides"], f"hydra.run.dir={folder}"]), folder, [probe])
        except BaseException as err:  # a variant that fails is a finding, not the end of the benchmark
            results.append({"name": case["name"], "error": f"{type(err).__name__}: {err}"[:500]})
            continue
        m = result.metrics
        results.append({
            "name": case["name"], "kind": "hf_transfer", "batch": m["train_batch_size"], "steps": m["steps"],
            "train_samples_per_second": m["train_samples_per_second"], "train_runtime_s": m["train_runtime_s"],
            "wall_s": round(time.perf_counter() - started, 1), "peak_memory_mb": peak_memory_mb(),
            "test_accuracy": (m.get("test") or {}).get("accuracy"), "total_flos": m.get("total_flos"),
            "trainable_parameters": m["trainable_parameters"], "device": m.get("device"), **probe.figures(),
        })  # fmt: skip
        print(json.dumps({k: v for k, v in results[-1].items() if k != "profile"}), flush=True)
    return results


def run_folder(out: Path, name: str) -> Path:
    """A case's run folder: its name in characters a Hydra override takes as they are."""
    return out / "runs" / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def worker_plain(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """benchmarks/plain_trainer.py's script, as a user would run it on a GPU (bf16)."""
    from plain_trainer import plain

    results = []
    for case in spec["cases"]:
        reset_peak()
        probe = probe_callback(case.get("steps", 100), case.get("profile", False), case.get("syncs", False))
        started = time.perf_counter()
        try:
            figures = plain(Path(spec["out"]) / "plain", model_source=spec.get("model"), callbacks=[probe],
                            **case["kwargs"])  # fmt: skip
        except BaseException as err:
            results.append({"name": case["name"], "error": f"{type(err).__name__}: {err}"[:500]})
            continue
        results.append({"name": case["name"], "kind": "plain Trainer script", **figures,
                        "wall_s": round(time.perf_counter() - started, 1), "peak_memory_mb": peak_memory_mb(),
                        **probe.figures()})  # fmt: skip
        print(json.dumps({k: v for k, v in results[-1].items() if k != "profile"}), flush=True)
    return results


def worker_loop(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The limit: a hand-written loop over batches padded beforehand, bf16 autocast, fused AdamW,
    no Trainer, no synchronisation until the end."""
    import numpy as np
    from transformers import AutoTokenizer

    from plain_trainer import recipe_data

    data, location, learning_rate = recipe_data(spec.get("model"))
    tokenizer = AutoTokenizer.from_pretrained(location)
    encoded = tokenizer(list(data.splits["train"]["text"]), truncation=True, max_length=128)
    labels = np.asarray(data.splits["train"]["label"])
    results = []
    for case in spec["cases"]:
        try:
            results.append(loop_case(case, data, location, learning_rate, tokenizer, encoded, labels))
        except BaseException as err:
            results.append({"name": case["name"], "error": f"{type(err).__name__}: {err}"[:500]})
        print(json.dumps(results[-1]), flush=True)
    return results


def loop_case(case: dict[str, Any], data: Any, location: str, learning_rate: float, tokenizer: Any, encoded: Any,
              labels: Any) -> dict[str, Any]:  # fmt: skip
    """One epoch of the hand-written loop at case["batch"]."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup

    batch, device = case["batch"], "cuda"
    torch.manual_seed(42)
    model = AutoModelForSequenceClassification.from_pretrained(
        location, num_labels=len(data.labels), dtype=torch.float32, use_kernels=False
    ).to(device)
    order = np.random.default_rng(42).permutation(len(labels))
    batches = []
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        padded = tokenizer.pad({"input_ids": [encoded["input_ids"][i] for i in rows],
                                "attention_mask": [encoded["attention_mask"][i] for i in rows]},
                               return_tensors="pt")  # fmt: skip
        padded["labels"] = torch.as_tensor(labels[rows])
        batches.append({k: v.pin_memory() for k, v in padded.items()})
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01, fused=True)
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.1 * len(batches)), len(batches))
    reset_peak()
    model.train()
    started = None
    for step, inputs in enumerate(batches):
        if step == WARM_STEPS:
            torch.cuda.synchronize()
            started = time.perf_counter()
        inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    steps = len(batches) - WARM_STEPS
    seconds = time.perf_counter() - started
    samples = sum(len(b["labels"]) for b in batches[WARM_STEPS:])
    return {"name": case["name"], "kind": "hand-written loop", "batch": batch,
            "train_samples_per_second": round(samples / seconds, 1),
            "step_ms": round(1000 * seconds / steps, 2), "peak_memory_mb": peak_memory_mb(),
            "final_loss": round(float(loss.detach()), 4)}  # fmt: skip


def chip_bf16_tflops() -> float | None:
    """The bf16 matrix rate measured here (8192² matmuls), the ceiling the shares refer to."""
    import torch

    if not torch.cuda.is_available():
        return None
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    started, repeats = time.perf_counter(), 30
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return round(2 * 8192**3 * repeats / (time.perf_counter() - started) / 1e12, 1)


# -- the plan --------------------------------------------------------------------------------
# Other choices, each measured alone against the defaults (--diagnose).
VARIANTS = {
    "2 loader workers": {"overrides": ["trainer.dataloader_num_workers=2"]},
    "cuDNN attention off": {"overrides": [], "cudnn_attention": False},
}


def gpu_plan(quick: bool, diagnose: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """Each group runs in a fresh process, as a user's run starts: per-shape and first-use costs
    (cuDNN plans, lazily loaded kernels, host memory) count as they would for the user."""
    def ours(name: str, overrides: list[str], steps: int, **extra: Any) -> dict[str, Any]:
        return {"name": name, "overrides": overrides, "steps": steps, **extra}

    plan = [
        ("loop", {"cases": [{"name": "loop, batch 32", "batch": 32}, {"name": "loop, batch 256", "batch": 256}]}),
        ("plain", {"cases": [{"name": "plain, batch 32", "kwargs": {"batch": 32, "bf16": True}, "steps": 200}]}),
        ("ours", {"cases": [ours("hf_transfer, batch 32", ["trainer.per_device_train_batch_size=32"], 200)]}),
        ("plain", {"cases": [{"name": "plain, batch 256", "kwargs": {"batch": 256, "bf16": True}, "steps": 20}]}),
        ("ours", {"cases": [ours("hf_transfer, batch 256", ["trainer.per_device_train_batch_size=256"], 20)]}),
    ]
    if diagnose:
        for name, variant in VARIANTS.items():
            extra = {k: v for k, v in variant.items() if k != "overrides"}
            plan.append(("ours", {"cases": [ours(f"variant: {name}", ["trainer.per_device_train_batch_size=32",
                                                                      *variant["overrides"]], 200, **extra)]}))
    profiled = ["trainer.per_device_train_batch_size=32", "trainer.max_steps=60"]
    plan.append(("ours", {"cases": [ours("hf_transfer profile", profiled, 20, profile=True, syncs=True)]}))
    plan.append(("plain", {"cases": [{"name": "plain profile", "kwargs": {"batch": 32, "bf16": True, "max_steps": 60},
                                      "steps": 20, "profile": True, "syncs": True}]}))  # fmt: skip
    if not quick:  # one process for the three: the later two start warm
        plan.append(("ours", {"cases": [
            ours(f"strategy={s}, batch 32", [f"strategy={s}", "trainer.per_device_train_batch_size=32",
                                             "trainer.max_steps=150"], 100)
            for s in ("head_only", "partial_unfreeze", "lora")]}))  # fmt: skip
    for _, spec in plan:
        spec.update(timeout=240, base=RECIPE)
    return plan


def cpu_plan(model: str) -> list[tuple[str, dict[str, Any]]]:
    """A tiny model on the CPU: 150 steps each, the steady step time after warm-up."""
    source = [f"model.source={model}", "trainer.max_steps=150", "trainer.eval_strategy=no",
              "trainer.save_strategy=no", "trainer.load_best_model_at_end=false"]  # fmt: skip
    ours = [{"name": "hf_transfer, batch 32", "overrides": [*source, "trainer.per_device_train_batch_size=32"],
             "steps": 100},
            {"name": "hf_transfer profile", "steps": 20, "profile": True,
             "overrides": [*source, "trainer.per_device_train_batch_size=32", "trainer.max_steps=60"]}]  # fmt: skip
    plain = [{"name": "plain, batch 32", "kwargs": {"batch": 32, "max_steps": 150, "evaluate": False}, "steps": 100},
             {"name": "plain profile", "kwargs": {"batch": 32, "max_steps": 60, "evaluate": False}, "steps": 20,
              "profile": True}]  # fmt: skip
    return [("plain", {"cases": plain, "timeout": 300, "model": model}),
            ("ours", {"cases": ours, "timeout": 300, "base": RECIPE})]  # fmt: skip


def tiny_model(folder: Path) -> str:
    """A 2-layer BERT (hidden 64) with the default recipe's tokenizer, saved as a checkpoint."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from plain_trainer import recipe_data

    if (folder / "config.json").is_file():
        return str(folder)
    _, location, _ = recipe_data(None)
    tokenizer = AutoTokenizer.from_pretrained(location)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=512)  # fmt: skip
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def run_worker(name: str, spec: dict[str, Any], out: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    spec_file = out / f"spec_{name}.json"
    spec_file.write_text(json.dumps({**spec, "out": str(out)}))
    result_file = out / f"result_{name}.json"
    kind = name.split("-", 1)[1]
    command = [sys.executable, __file__, "--worker", kind, "--spec", str(spec_file), "--result", str(result_file)]
    print("+", name, ", ".join(c["name"] for c in spec["cases"]), flush=True)
    started = time.perf_counter()
    try:
        subprocess.run(command, check=False, timeout=spec["timeout"], env=env)
    except subprocess.TimeoutExpired:
        print(f"{name}: stopped after {spec['timeout']} s", flush=True)
    print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    return json.loads(result_file.read_text()) if result_file.is_file() else [{"name": kind, "error": "no result"}]


def table(results: list[dict[str, Any]], peak_tflops: float | None) -> str:
    rows = ["| run | batch | train samples/s | steady step ms | share of bf16 rate | peak GPU MB | test acc. |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        if "error" in r:
            rows.append(f"| {r['name']} | | error: {r['error'][:120]} | | | | |")
            continue
        share = ""
        if peak_tflops and r.get("total_flos") and r.get("train_runtime_s"):
            share = f"{100 * r['total_flos'] / r['train_runtime_s'] / (peak_tflops * 1e12):.2f}%"
        acc = r.get("test_accuracy")
        rows.append(f"| {r['name']} | {r.get('batch', '')} | {r.get('train_samples_per_second', '')} | "
                    f"{r.get('step_ms', '')} | {share} | {r.get('peak_memory_mb', '')} | "
                    f"{'' if acc is None else f'{acc:.4f}'} |")  # fmt: skip
    return "\n".join(rows)


def ratios(results: list[dict[str, Any]]) -> list[str]:
    by = {r["name"]: r for r in results if "error" not in r}
    lines = []
    for batch in (32, 256):
        ours, plain, loop = (by.get(f"{k}, batch {batch}") for k in ("hf_transfer", "plain", "loop"))
        if ours and plain:
            ratio = ours["train_samples_per_second"] / plain["train_samples_per_second"]
            lines.append(f"batch {batch}: hf_transfer {ratio:.2f}x "
                         f"the plain script's train samples/s; steady step {plain['step_ms']} ms (plain) "
                         f"against {ours['step_ms']} ms (hf_transfer)")  # fmt: skip
        if ours and loop and ours.get("step_ms"):
            lines.append(f"batch {batch}: hf_transfer's steady steps run at {loop['step_ms'] / ours['step_ms']:.2f}x "
                         f"the hand-written loop's speed ({loop['step_ms']} ms a step)")  # fmt: skip
    return lines


def write_report(out: Path, device: str, peak: float | None, results: list[dict[str, Any]]) -> list[str]:
    import torch

    report = {"date": time.strftime("%Y-%m-%d"), "device": device, "torch": torch.__version__,
              "bf16_tflops_measured": peak, "results": results}  # fmt: skip
    (out / "gpu.json").write_text(json.dumps(report, indent=1))
    text = [f"# {device}, {report['date']}, torch {torch.__version__}",
            f"bf16 matrix rate measured: {peak} TFLOP/s" if peak else "", table(results, peak), "",
            *ratios(results)]  # fmt: skip
    for r in results:
        if r.get("sync_sites") is not None or r.get("profile_host_ms_per_step") is not None:
            text.append(f"\n{r['name']}: host {r.get('profile_host_ms_per_step')} ms a step, device kernels "
                        f"{r.get('profile_device_ms_per_step')} ms a step; {r.get('syncs_per_step', 'n/a')} "
                        "synchronisations a step")  # fmt: skip
            text += [f"  {n} x {site}" for site, n in (r.get("sync_sites") or {}).items()]
    (out / "gpu.md").write_text("\n".join(text) + "\n")
    profiles = [f"== {r['name']}\n{r['profile']}" for r in results if r.get("profile")]
    (out / "profile.txt").write_text("\n\n".join(profiles))
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/gpu"))
    parser.add_argument("--quick", action="store_true", help="leave out the strategies")
    parser.add_argument("--diagnose", action="store_true", help="each GPU default put back alone, measured")
    parser.add_argument("--worker", choices=["plain", "ours", "loop"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        spec = json.loads(options.spec.read_text())
        work = {"plain": worker_plain, "ours": worker_ours, "loop": worker_loop}[options.worker]
        options.result.write_text(json.dumps(work(spec)))
        return 0

    import torch

    out = options.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    # A plain script offline on a GPU must turn hub kernels off by hand (transformers >= 5.25);
    # hf_transfer decides for itself (model.kernels=auto), so its workers keep the user's setting.
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else f"CPU ({os.cpu_count()} cores)"
    print(f"device: {device}; torch {torch.__version__}", flush=True)
    peak = chip_bf16_tflops()
    plan = gpu_plan(options.quick, options.diagnose) if cuda else cpu_plan(tiny_model(out / "tiny_model"))
    results: list[dict[str, Any]] = []
    for number, (kind, spec) in enumerate(plan):
        worker_env = {**env, "USE_HUB_KERNELS": "NO"} if kind == "plain" else env
        results += run_worker(f"{number}-{kind}", spec, out, worker_env)
        text = write_report(out, device, peak, results)  # after each group: a time-out keeps what was measured
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
