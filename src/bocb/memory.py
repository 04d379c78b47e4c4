"""Peak memory of a trial: CUDA's allocator peak, or the process's resident-set growth on CPU."""
from __future__ import annotations

import threading
from collections.abc import Iterable

import torch

_PAGE = 4096


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:  # not Linux: no sampling
        return 0


def tensor_megabytes(tensors: Iterable[object]) -> float:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor)) / 2**20


class PeakMemory:
    """Context manager; ``peak_mb`` after exit.

    On CPU it samples the resident set every 20 ms and reports the growth over the
    level at entry (model, optimizer state, activations; the allocator may reuse
    memory freed by an earlier trial in the same worker, so it is an estimate).
    """

    def __init__(self, device: torch.device, interval_s: float = 0.02) -> None:
        self.device, self.interval = device, interval_s
        self.peak_mb: float | None = None
        self._stop = threading.Event()
        self._peak = self._base = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._base = self._peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes())
            self.peak_mb = (self._peak - self._base) / 2**20
