"""How many processes a launcher started, and what accelerate needs to know about it.

``accelerate launch`` and ``torchrun`` set ``WORLD_SIZE``. On a host without an accelerator,
accelerate builds the CPU (gloo) process group only when asked with ``cpu=True``; without it
every process believes it is alone and does all the work (and writes the same files).
"""

from __future__ import annotations

import os


def launched_processes() -> int:
    """The number of processes the launcher started (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def needs_cpu_process_group() -> bool:
    """Several processes on a host with no CUDA, XPU or MPS device: pass ``cpu=True`` to accelerate."""
    import torch

    xpu = getattr(torch, "xpu", None)
    has_device = (
        torch.cuda.is_available() or (xpu is not None and xpu.is_available()) or torch.backends.mps.is_available()
    )
    return launched_processes() > 1 and not has_device
