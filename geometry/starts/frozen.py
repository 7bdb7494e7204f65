"""Which m does a fit keep frozen? A universal m, read from a run or a safetensors file.

The paper's main experiments share m across texts and seeds. Once one m has been fitted that
way (`protoscope fit ... --share m`, one group), `fit --m-from RUN_OR_FILE` reuses it: every
problem starts from that m, m never moves and never restarts, and only e is fitted. A source
is either a run whose solutions all share one m, or a safetensors file holding a tensor "m" of
shape [d] or [1, d], such as the one `protoscope encoder universal-m` trains (universal.py:
one m over many texts, without a share group), which also records its model.
"""

from __future__ import annotations

import hashlib
import json
import pathlib

import torch

from ..errors import ProtoscopeError, StoreError
from ..store.runstore import RunStore
from .universal import FORMAT


def load_frozen_m(source: str) -> torch.Tensor:
    """The m vector [d] (float32) of a run or a .safetensors file; anything else is one line."""
    path = pathlib.Path(source)
    if path.is_dir():
        return _from_run(path)
    if path.is_file() and path.suffix == ".safetensors":
        return _from_file(path)
    raise ProtoscopeError(f"--m-from {source}: neither a run directory nor a .safetensors file")


def _from_run(path: pathlib.Path) -> torch.Tensor:
    store = RunStore.open(path)
    rows, vectors = store.solutions(), store.vectors()
    if not len(rows):
        raise ProtoscopeError(f"--m-from {path}: the run holds no solutions")
    m = vectors["m"][torch.tensor(sorted(set(rows["m_index"].astype(int))), dtype=torch.long)]
    if not bool((m == m[0]).all()):
        raise ProtoscopeError(f"--m-from {path}: its solutions do not share one m ({len(m)} different "
                              f"vectors); fit it with --share m in one group (--group-size 0)")
    return m[0].float().clone()


def _from_file(path: pathlib.Path) -> torch.Tensor:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise StoreError(f"--m-from {path} is damaged: {type(err).__name__}") from None
    m = tensors.get("m")
    if m is None or not (m.dim() == 1 or (m.dim() == 2 and m.shape[0] == 1)):
        shape = None if m is None else list(m.shape)
        raise ProtoscopeError(f"--m-from {path}: expected a tensor 'm' of shape [d] or [1, d], "
                              f"found {shape if m is not None else sorted(tensors)}")
    return m.reshape(-1).float().clone()


def check_frozen_m(m: torch.Tensor, source: str, d_model: int, model_name: str,
                   arrangement, weights_sha256: str | None = None) -> None:
    """A frozen m must fit the model's width and an arrangement that reads m; a universal m
    file (universal.py) records its model, and one trained on other weights is refused."""
    if m.shape[0] != d_model:
        raise ProtoscopeError(f"--m-from {source}: m has d_model {m.shape[0]}, but {model_name} "
                              f"has d_model {d_model}")
    trained_on = _trained_on(source)
    if weights_sha256 and trained_on and trained_on.get("weights_sha256") != weights_sha256:
        raise ProtoscopeError(f"--m-from {source}: this universal m was trained on "
                              f"{trained_on.get('name')} with other weights than {model_name}'s")
    if "m" not in arrangement.uses:
        raise ProtoscopeError(f"--m-from needs an arrangement with m, not {arrangement.spec!r}")
    if not bool(torch.isfinite(m).all()):
        raise ProtoscopeError(f"--m-from {source}: m holds non-finite values")


def _trained_on(source: str) -> dict | None:
    """The model a universal m file records (None for a run or a plain safetensors file)."""
    path = pathlib.Path(source)
    if not (path.is_file() and path.suffix == ".safetensors"):
        return None
    from safetensors import safe_open


    with safe_open(str(path), framework="pt") as f:  # already read once by load_frozen_m
        metadata = f.metadata() or {}
    if metadata.get("format") != FORMAT:
        return None
    return json.loads(metadata.get("meta", "{}")).get("model")


def m_sha256(m: torch.Tensor) -> str:
    return hashlib.sha256(m.float().contiguous().numpy().tobytes()).hexdigest()
