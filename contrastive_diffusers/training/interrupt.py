"""Stopping a run without losing its steps: the first Ctrl-C (SIGINT) or SIGTERM asks the
loop to stop after the optimizer step in progress, where it saves a checkpoint; a second one
interrupts at once (the steps since the last checkpoint are lost).

A repeat within :attr:`StopRequests.same_request_s` of the first counts as the same request:
launchers forward the signal they receive to workers that may have received it already (a
terminal's Ctrl-C reaches the whole foreground process group; torch's elastic agent then
sends its own; SLURM's ``scancel`` signals every process of a step).

Several processes agree on stopping (a gather of one number each step), so a signal that
reaches only some of them (or reaches them at different steps) still stops all of them at
the same step, which the collective ``save_state`` needs.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import torch

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by :func:`~.loop.train` after a requested stop was saved: ``checkpoint`` resumes
    the run at ``step`` (``--resume_from_checkpoint latest``)."""

    def __init__(self, step: int, checkpoint: Path, signal_name: str):
        super().__init__(
            f"{signal_name} received: stopped at step {step} and saved {checkpoint}; "
            "run the same command with --resume_from_checkpoint latest to go on."
        )
        self.step, self.checkpoint, self.signal_name = step, checkpoint, signal_name

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by the signal (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + int(getattr(signal, self.signal_name, signal.SIGINT))


class StopRequests:
    """Context manager that turns SIGINT/SIGTERM into a stop request for the training loop.

    Handlers can only be installed from the main thread; elsewhere (a run started from a
    worker thread) signals keep their usual effect."""

    #: Seconds after the first signal during which another one is the same request delivered
    #: twice, not a second request.
    same_request_s = 2.0

    def __init__(self, announce=print):
        self.signal_name: str | None = None
        self._announce = announce
        self._previous: dict[int, object] = {}
        self._first_at = 0.0

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is not None:
            if time.monotonic() - self._first_at < self.same_request_s:
                return  # the first request, delivered again by a launcher
            self._restore()  # a second request: stop now
            raise KeyboardInterrupt(f"{name} received twice: stopped without saving")
        self.signal_name, self._first_at = name, time.monotonic()
        self._announce(
            f"{name} received: stopping after this step and saving a checkpoint "
            "(send it again to stop at once, losing the steps since the last checkpoint)",
            file=sys.stderr,
            flush=True,
        )

    def agreed(self, accelerator) -> bool:
        """Whether any process was asked to stop (a collective when there are several: every
        process decides on the same gathered numbers, even if a signal lands meanwhile)."""
        name = self.signal_name
        if accelerator.num_processes == 1:
            return name is not None
        mine = int(signal.Signals[name]) if name is not None else 0
        asked = int(accelerator.gather(torch.tensor([mine], device=accelerator.device)).max())
        if asked and self.signal_name is None:  # asked on another process only
            self.signal_name = signal.Signals(asked).name
        return asked > 0
