"""Peak memory of this process, in GiB, for training metrics and benchmarks."""

from __future__ import annotations

import resource


def peak_rss_gb() -> float:
    """The resident set size high-water mark of this process so far, GiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def peak_memory_gb() -> float:
    """The CUDA allocator's peak (max allocated) when this process has initialised CUDA, else `peak_rss_gb`."""
    import torch

    if torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**30
    return peak_rss_gb()
