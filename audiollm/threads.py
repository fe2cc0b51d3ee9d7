"""How many threads torch computes with on CPU, one rule for training and serving.

Running more compute threads than free cores slowed CPU training here 10-40x (oversubscription), so the
count is set on purpose: $AUDIOLLM_THREADS if given, else $OMP_NUM_THREADS left to torch, else a default
the caller derives from the cores (`free_cores` for training, a share of `cores` for the server).
"""

from __future__ import annotations

import os


def cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def free_cores() -> int:
    """CPU cores not busy with other work: os.cpu_count() less the 1-minute load average, at least 1."""
    return max(1, (os.cpu_count() or 1) - round(os.getloadavg()[0]))


def set_threads(default: int | None = None) -> int:
    """Set torch's intra-op threads from $AUDIOLLM_THREADS, else leave $OMP_NUM_THREADS, else `default`
    (None: the free cores). Returns the number of threads torch now uses."""
    import torch  # here, so that light modules (the server's config) can import this one

    if "AUDIOLLM_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["AUDIOLLM_THREADS"]))
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(default or free_cores())
    return torch.get_num_threads()
