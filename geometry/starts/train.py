"""Which encoder does `encoder train` fit? One entry for every kind.

`nearest`, `ridge` and `mlp` regress a run's converged solutions (encoder.py); `end-to-end`
trains through the frozen decoder (end_to_end.py).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ProtoscopeError
from .encoder import (KINDS, PERTURBATION, Encoder, regression, text_features, training_meta,
                      training_solutions)
from .end_to_end import Options, train_end_to_end


def train_encoder(store, loaded, kind: str = "ridge", seed: int = 0, options=None, log=None,
                  extra_texts=(), extra_spec: str = "", base=None, lengths=(), checkpoint=None,
                  resume: bool = False, extra_about: dict | None = None) -> Encoder:
    """Learn text -> (e, m) from the converged solutions of a run (fitted on `loaded`).

    `end-to-end` is trained by end_to_end.py, through the frozen decoder on the run's texts
    and any `extra_texts` (no solutions needed); `options` (end_to_end.Options), `log` (one
    line per epoch) and the extra texts apply to it only."""
    if kind not in KINDS:
        raise ProtoscopeError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "end-to-end":
        return train_end_to_end(store, loaded, seed=seed, options=options or Options(), log=log,
                                extra_texts=extra_texts, extra_spec=extra_spec, base=base,
                                lengths=lengths, checkpoint=checkpoint, resume=resume,
                                extra_about=extra_about)
    if extra_texts:
        raise ProtoscopeError(f"--texts trains the end-to-end kind only; {kind} learns from solutions")
    rows, e, m = training_solutions(store, loaded)
    by_id = {t.text_id: t for t in store.texts()}
    x = text_features(loaded, [by_id[t].prefix(int(n)) for t, n in zip(rows["text_id"], rows["length"])])
    x_mean, x_scale = x.mean(0), x.std(0) + 1e-6
    tensors, extra = regression(kind, (x - x_mean) / x_scale, e, m, seed)
    tensors.update(x_mean=x_mean, x_scale=x_scale)
    meta = {"kind": kind, **training_meta(store, loaded, rows, e, m), "seed": seed,
            "perturbation": PERTURBATION, **extra}
    return Encoder(kind, {k: torch.from_numpy(np.asarray(v, dtype=np.float64)).float()
                          for k, v in tensors.items()}, meta)
