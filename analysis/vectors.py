"""Which of a solution's vectors are its own, and how are solutions grouped for comparison?

Distances, neighbourhoods and maps only mean something on vectors that were trained for that
solution alone: a shared vector (share `m` or `e`) is the same for a whole group, and a vector
the arrangement never feeds to the model (m under `e*` or `mem`) is just its random start
(the rule is `own_vectors` here, which probes follow too).
Solutions are compared only within a *cohort*: one arrangement and one length, since a vector
fitted for 16 tokens and one fitted for 64 live in different problems.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from scipy.spatial.distance import cdist

from protoscope.geometry.engine.arrangements import parse_arrangement
from protoscope.geometry.tables import CONCATENATED, VECTORS

log = logging.getLogger(__name__)


def own_vectors(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per vector name (`VECTORS`), which solution rows have that vector as their own.

    A vector is a solution's own when its arrangement feeds it to the model (m under `e*` or
    `mem` is only its random start) and it is not shared by a group (share `e` or `m`): a shared
    vector is the same for every solution of the group, so it says nothing about one of them.
    [e; m] is own only when both halves are.
    """
    uses = rows["arrangement"].astype(str).map(lambda s: parse_arrangement(s).uses)
    share = rows["share"].astype(str)
    # np.array copies: pandas may hand out read-only views, which torch warns about
    e = np.array(uses.map(lambda u: "e" in u) & (share != "e"), dtype=bool)
    m = np.array(uses.map(lambda u: "m" in u) & (share != "m"), dtype=bool)
    return {"e": e, "m": m, CONCATENATED: e & m}


def stack(name: str, e: torch.Tensor, m: torch.Tensor) -> np.ndarray:
    """The rows of one named vector as float64 numpy [n, d] (e+m: [n, 2d])."""
    if name == "e":
        x = e
    elif name == "m":
        x = m
    elif name == CONCATENATED:
        x = torch.cat([e, m], dim=1)
    else:
        raise ValueError(f"unknown vector {name!r}: allowed are {', '.join(VECTORS)}")
    return x.detach().double().cpu().numpy()


def cohorts(rows: pd.DataFrame, method: str | None = None) -> list[np.ndarray]:
    """Positions (into `rows`) of each (arrangement, length) cohort, optionally of one method."""
    keep = np.ones(len(rows), bool) if method is None else (rows["method"].astype(str) == method).to_numpy()
    keys = rows["arrangement"].astype(str) + "|" + rows["length"].astype(str)
    out = []
    for key in dict.fromkeys(keys[keep]):
        out.append(np.flatnonzero(keep & (keys == key).to_numpy()))
    return out


def cosine_distances(x: np.ndarray) -> np.ndarray:
    """1 - cos(a, b) for every pair of rows; a zero row is at distance 1 from everything."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return np.clip(1.0 - unit @ unit.T, 0.0, 2.0)


def l2_distances(x: np.ndarray) -> np.ndarray:
    """Euclidean distance for every pair of rows (exact differences, not the Gram trick)."""
    return cdist(x, x, "euclidean")


def load_solutions(store) -> tuple[pd.DataFrame, torch.Tensor, torch.Tensor]:
    """All solutions with finite vectors (rows re-indexed from 0), and their e and m."""
    rows, e, m = store.solution_vectors()
    finite = (torch.isfinite(e).all(1) & torch.isfinite(m).all(1)).numpy()
    if not finite.all():
        log.warning("%d solutions have non-finite vectors and are left out", int((~finite).sum()))
    keep = torch.as_tensor(finite)
    return rows[finite].reset_index(drop=True), e[keep], m[keep]
