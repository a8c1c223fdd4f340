"""Resuming a training run exactly: a killed run (Ctrl-C, SIGTERM, a lost machine) loses at
most ``--checkpointing_steps`` steps of the phase it was in, and the same command goes on to the
weights an uninterrupted run makes.

The run's folder gets ``checkpoints/`` while it trains (removed when the run finishes):

- ``run.json``: the arguments the run was started with; another command in the folder is refused.
- ``<phase>.safetensors`` + ``<phase>.json``: a finished phase's weights (the modules it trained,
  after its EMA), the global RNG state after it, and its log entry; a resumed run loads them
  instead of training the phase again.
- ``<phase>-step.pt``: the phase in progress every ``--checkpointing_steps`` steps: weights,
  AdamW state, EMA, the phase's generator, the global RNG state (T5's dropout draws from it),
  the step and the loss curve so far. Written with ``torch.save`` and read with
  ``torch.load(weights_only=True)``, which rebuilds tensors and plain containers only and runs
  no pickled code.

Every random draw of a phase comes from its own generator or from the global RNG, both saved,
so a resumed CPU run equals an uninterrupted one tensor for tensor (tested). Hand-written:
accelerate's ``save_state`` checkpoints a prepared ``Accelerator``, which this single-process
script does not use.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ...atomic_io import write_json_atomic

__all__ = ["PhaseStep", "RunCheckpoints"]

FOLDER = "checkpoints"
_RNG_KEY = "__global_rng_state__"


class PhaseStep:
    """The in-progress checkpoint of one phase (``optimise`` saves and restores it)."""

    def __init__(self, path: Path, every: int):
        self.path, self.every = Path(path), int(every)

    def load(self) -> dict | None:
        if not self.path.is_file():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=True)

    def due(self, steps_done: int, steps: int) -> bool:
        return self.every > 0 and steps_done % self.every == 0 and steps_done < steps

    def save(self, state: dict) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)  # a kill while saving leaves the previous checkpoint whole


class RunCheckpoints:
    """The ``checkpoints/`` folder of one run (see the module docstring)."""

    def __init__(self, output_dir: Path, arguments: dict, every: int):
        self.folder = Path(output_dir) / FOLDER
        self.arguments, self.every = arguments, int(every)

    def check(self) -> bool:
        """Whether the folder holds an unfinished run of these arguments (refused when it holds
        one of other arguments)."""
        run_file = self.folder / "run.json"
        if not run_file.is_file():
            return False
        recorded = json.loads(run_file.read_text())["arguments"]
        changed = sorted(k for k in set(recorded) | set(self.arguments) if recorded.get(k) != self.arguments.get(k))
        if changed:
            raise ValueError(
                f"{self.folder.parent} holds an unfinished training run with other arguments ({', '.join(changed)} "
                "differ); run the same command to resume it, or choose another --output_dir.")
        return True

    def start(self) -> bool:
        """:meth:`check`, then record the arguments of a new run; True when resuming."""
        if self.check():
            return True
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.folder / "run.json", {"arguments": self.arguments})
        return False

    def step(self, phase: str) -> PhaseStep:
        return PhaseStep(self.folder / f"{phase}-step.pt", self.every)

    def finished(self, phase: str) -> bool:
        return (self.folder / f"{phase}.json").is_file()

    def save_phase(self, phase: str, modules: dict, log: dict, extra: dict | None = None) -> None:
        """A finished phase: its modules' weights, the global RNG state, its log entry."""
        # clone: tied weights (T5's shared embedding) would share memory, which safetensors refuses
        tensors = {f"{name}.{key}": value.detach().cpu().clone()
                   for name, module in modules.items() for key, value in module.state_dict().items()}
        tensors[_RNG_KEY] = torch.get_rng_state()
        save_file(tensors, self.folder / f"{phase}.safetensors")
        write_json_atomic(self.folder / f"{phase}.json", {"log": log, "extra": extra or {}})  # written last: the mark
        self.step(phase).path.unlink(missing_ok=True)

    def load_phase(self, phase: str, modules: dict) -> tuple[dict, dict]:
        """Load a finished phase into ``modules`` and the global RNG; returns (log entry, extra)."""
        tensors = load_file(self.folder / f"{phase}.safetensors")
        torch.set_rng_state(tensors.pop(_RNG_KEY))
        for name, module in modules.items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        record = json.loads((self.folder / f"{phase}.json").read_text())
        print(f"[{phase}] finished before: loaded from {self.folder}", flush=True)
        return record["log"], record["extra"]

    def remove(self) -> None:
        for path in self.folder.glob("*"):
            path.unlink()
        self.folder.rmdir()
