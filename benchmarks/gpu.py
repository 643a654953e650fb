"""The default recipe on GPUs: bf16 on one GPU, and DDP on two when two are present.

    python benchmarks/gpu.py [OUTPUT_FOLDER]

Reports, for each run, training samples/s, peak GPU memory (max allocated), wall time and test
accuracy, from the run folders' metrics.json. Refuses to run where no CUDA GPU is visible.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent.parent / "hf_transfer" / "accelerate_configs"
RECIPE = [
    "recipe=bert_sentiment",
    "trainer.bf16=true",
    "trainer.per_device_train_batch_size=64",
    "trainer.disable_tqdm=true",
]


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA GPU is visible here (torch.cuda.is_available() is False); "
              "run it on a machine with one", file=sys.stderr)  # fmt: skip
        return 2
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/benchmarks/gpu").resolve()
    gpus = torch.cuda.device_count()
    print(f"{gpus} GPU(s): {', '.join(torch.cuda.get_device_name(i) for i in range(gpus))}")
    runs = {"1 GPU, bf16": out / "1gpu"}
    call([sys.executable, "-m", "hf_transfer", *RECIPE, f"hydra.run.dir={runs['1 GPU, bf16']}"])
    if gpus >= 2:
        runs["2 GPUs, DDP, bf16"] = out / "2gpu"
        call([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "multi_gpu.yaml"),
              "--num_processes", "2", "-m", "hf_transfer", *RECIPE, "expected_world_size=2",
              f"hydra.run.dir={runs['2 GPUs, DDP, bf16']}"])  # fmt: skip
    else:
        print("only one GPU: the 2-GPU DDP run is skipped")
    print("\n| run | samples/s | peak GPU MB | wall s | test accuracy |\n|---|---|---|---|---|")
    for name, folder in runs.items():
        m = json.loads((folder / "metrics.json").read_text())
        print(f"| {name} | {m['train_samples_per_second']:.1f} | {m['peak_memory_mb']:.0f} | {m['wall_time_s']:.1f} "
              f"| {m['test']['accuracy']:.4f} |")  # fmt: skip
    return 0


def call(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


if __name__ == "__main__":
    sys.exit(main())
