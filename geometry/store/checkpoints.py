"""How does a long fit survive a kill? Checkpoints of the groups still in flight.

A share group is one joint optimisation that stops together, so it can run for a long time
with nothing stored. Every `every_steps` steps or `every_seconds` seconds (whichever comes
first) the fitting engine hands its whole in-flight state for one length (vectors, best
vectors, optimiser moments and step counts, per-problem counters, the waiting queue) to
`FitCheckpoint.save`, which writes

    RUN/checkpoints/fit-N{length}-{signature}.safetensors   the tensors; the state's JSON in
                                                             the file's metadata (one atomic file)
    RUN/checkpoints/fit-N{length}-{signature}.json          the same JSON, readable: per-group
                                                             progress of the groups in flight

The signature is a hash of what decides the results (arrangement, share mode, recipe, length),
so a checkpoint is only ever resumed by the fit it came from. The engine draws every initial
vector from generators seeded by the problem, so no random state needs saving: resuming
replays the same steps on the same batch and gives, on CPU, the same bits as a run that was
never stopped. Groups that finish again after a resume were stored before the kill; the
caller skips them. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import time

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import StoreError
from .runstore import atomic_write, write_json

FORMAT = "protoscope-fit-checkpoint/1"



def save_state(path: pathlib.Path, tensors: dict[str, torch.Tensor], state: dict) -> None:
    """One atomic safetensors file: the tensors, and `state` as JSON in its metadata."""
    text = json.dumps(state, default=str)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"state": text}))


def load_state(path: pathlib.Path, fix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """What `save_state` wrote; a damaged file is one line that ends with `fix`."""
    try:
        with safe_open(str(path), framework="pt") as f:
            state = json.loads((f.metadata() or {})["state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, KeyError, ValueError, SafetensorError) as err:
        raise StoreError(f"{path} is damaged ({type(err).__name__}); {fix}") from None
    return tensors, state

class FitCheckpoint:
    """Where and how often the in-flight groups of one fit are saved."""

    def __init__(self, folder, signature: dict, every_steps: int = 50, every_seconds: float = 60.0):
        self.folder = pathlib.Path(folder)
        self.signature = signature
        self.tag = hashlib.sha256(json.dumps(signature, sort_keys=True, default=str).encode()).hexdigest()[:12]
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self._steps, self._last = 0, time.monotonic()

    def path(self, length: int, suffix: str = ".safetensors") -> pathlib.Path:
        return self.folder / f"fit-N{length}-{self.tag}{suffix}"

    def due(self) -> bool:
        """Called once per step: is it time to save?"""
        self._steps += 1
        if self._steps >= self.every_steps or time.monotonic() - self._last >= self.every_seconds:
            self._steps, self._last = 0, time.monotonic()
            return True
        return False

    def save(self, length: int, tensors: dict[str, torch.Tensor], state: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {"format": FORMAT, "signature": self.signature, "length": length, **state}
        save_state(self.path(length), tensors, state)
        write_json(self.path(length, ".json"), state)

    def load(self, length: int) -> tuple[dict[str, torch.Tensor], dict] | None:
        path = self.path(length)
        if not path.exists():
            return None
        tensors, state = load_state(path, "delete it to refit the groups it held from the start")
        if state.get("format") != FORMAT or state.get("length") != length:
            raise StoreError(f"{path} is not a {FORMAT} file for length {length}")
        return tensors, state

    def clear(self, length: int) -> None:
        for suffix in (".safetensors", ".json"):
            self.path(length, suffix).unlink(missing_ok=True)
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()  # a finished run keeps no empty folder
