"""Peak memory of a run: what transfer learning saves is only visible if it is measured.

On a GPU: the largest allocation torch saw (max_memory_allocated). On a CPU: how far the
resident memory of the process rose above what it was before the model was loaded, read from
the kernel's high-water mark (reset at the start on Linux), or sampled where that is missing.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


class PeakMemory:
    def __init__(self) -> None:
        self.on_gpu = torch.cuda.is_available()
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()
        self._sampled_peak = 0
        if self.on_gpu:
            torch.cuda.reset_peak_memory_stats()
            self.baseline = torch.cuda.memory_allocated()
            return
        self.baseline = _rss_bytes()
        if not _reset_high_water_mark():
            self._sampled_peak = self.baseline
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self._sampled_peak = max(self._sampled_peak, _rss_bytes())

    def result(self) -> dict[str, Any]:
        if self.on_gpu:
            return {
                "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
                "peak_memory_kind": "gpu max allocated",
            }
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            peak = self._sampled_peak
        else:
            peak = _status_kb("VmHWM") * 1024
        return {
            "peak_memory_mb": round(max(peak - self.baseline, 0) / 2**20, 1),
            "peak_memory_kind": "cpu resident memory rise",
        }


def _reset_high_water_mark() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return _status_kb("VmHWM") > 0
    except OSError:
        return False


def _rss_bytes() -> int:
    if _STATUS.exists():
        return _status_kb("VmRSS") * 1024

    return psutil.Process(os.getpid()).memory_info().rss


def _status_kb(field: str) -> int:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 2)


def memory_for_training(device: Any) -> tuple[int, str]:
    """(bytes, where): the memory a run can still take on `device`: the accelerator's total less
    what other processes hold, or the machine's available memory on the CPU."""

    if device is not None and device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"free on {torch.cuda.get_device_name(device)}"

    return psutil.virtual_memory().available, "available on this machine"
