"""How many processes a launcher started, which one this is, and what accelerate needs to
know about it.

``accelerate launch`` and ``torchrun`` set ``WORLD_SIZE`` / ``RANK``; MPI launchers (accelerate's
multi-CPU launch through ``mpirun``) set their own variables, which accelerate reads too. On a
host without an accelerator, accelerate builds the CPU (gloo) process group only when asked
with ``cpu=True``; without it every process believes it is alone and does all the work (and
writes the same files).
"""

from __future__ import annotations

import os

#: The variables a launcher sets, in the order accelerate reads them (``get_int_from_env``).
_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_RANK_VARIABLES = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")


def _first_int(names, default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return default


def launched_processes() -> int:
    """The number of processes the launcher started (1 when run directly)."""
    return _first_int(_SIZE_VARIABLES, 1)


def process_rank() -> int:
    """This process's rank among them (0 when run directly), before any process group exists."""
    return _first_int(_RANK_VARIABLES, 0)


def is_main_launched_process() -> bool:
    """Whether this process is the one that speaks for all: errors and warnings are printed once."""
    return process_rank() == 0


def needs_cpu_process_group() -> bool:
    """Several processes on a host with no CUDA, XPU or MPS device, or launched for the CPU
    (``ACCELERATE_USE_CPU``): pass ``cpu=True`` to accelerate."""
    import torch

    if launched_processes() <= 1:
        return False
    from accelerate.utils import parse_flag_from_env

    if parse_flag_from_env("ACCELERATE_USE_CPU"):  # as accelerate reads it (true, yes, on, 1, ...)
        return True
    xpu = getattr(torch, "xpu", None)
    has_device = (
        torch.cuda.is_available() or (xpu is not None and xpu.is_available()) or torch.backends.mps.is_available()
    )
    return not has_device
