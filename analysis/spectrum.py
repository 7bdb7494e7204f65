"""How many directions around a solution are stiff? The local spectrum of the loss Hessian.

For each chosen solution (reconstructed, one-step; the first seed of each text first, up to
`solutions`), the top `eigs` eigenvalues of the Hessian of its total loss (the sum of the
per-token cross-entropies the fit minimises) with respect to e, to m, and to [e; m], by
Lanczos (`scipy.sparse.linalg.eigsh`, which="LA", over a `LinearOperator`) as PyHessian does.
Each Hessian-vector product is a central difference of gradients through the shared Decoder,
H v = (g(x + h v) - g(x - h v)) / 2h with h = `step` x |x|: the two points go through the
model as one batch of two, and a gradient is all the decoder needs (no double backward
through attention kernels, which not every kernel supports). tests/test_spectrum.py checks
the eigenvalues against the dense Hessian of a tiny float64 model.

A direction is "stiff" when its eigenvalue exceeds `threshold` x the largest one (the table
holds the absolute threshold used); the stiff count is over the top `eigs` only, so when all
of them are stiff the count is a lower bound (`stiff_censored`): Lanczos found that many
within its budget, and the spectrum may hold more. The flat directions are the rest of the d
(or 2d) dimensions, whose eigenvalues lie below the smallest one found; the neighbourhood
analysis's random-direction radii are the comparison (report section Spectrum).

m is measured only where it is the solution's own (analysis/vectors.py `own_vectors`: a
shared m says nothing about one solution), [e; m] likewise.

Tables: spectrum (one row per solution and block: top eigenvalue, stiff count, Lanczos
products and seconds) and spectrum_eigenvalues (every eigenvalue found, by rank).
Progress: stage "solutions", with the block in flight beside it.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

from protoscope.geometry.engine.decoder import Decoder
from protoscope.geometry.tables import CONCATENATED, RECONSTRUCTED, columns
from protoscope.options import ALL, takes

from .progress import reporter
from .registry import options_of
from .vectors import load_solutions, own_vectors

VERSION = 1  # of this analysis's numbers: bump it when a change alters them (analysis/run.py)

BLOCKS = ("e", "m", CONCATENATED)
SPECTRUM_COLUMNS = columns("spectrum")
EIGEN_COLUMNS = columns("spectrum_eigenvalues")


class LocalHessian:
    """Hessian-vector products of one solution's total loss at x = [e; m]."""

    def __init__(self, decoder: Decoder, e: torch.Tensor, m: torch.Tensor,
                 target: torch.Tensor, step: float):
        self.decoder, self.target = decoder, target[None]
        self.x = torch.cat([e, m]).detach()
        self.d = e.shape[0]
        self.h = step * float(self.x.norm())
        self.products = 0

    def gradient(self, points: torch.Tensor) -> torch.Tensor:
        """Gradients of the total loss at each row of `points` [B, 2d]."""
        points = points.detach().requires_grad_(True)
        out = self.decoder(points[:, :self.d], points[:, self.d:],
                           self.target.expand(len(points), -1), grad=True)
        (grad,) = torch.autograd.grad(out.total_loss.sum(), points)
        return grad

    def product(self, v: torch.Tensor) -> torch.Tensor:
        """H v [2d] for a direction v [2d], as a central difference."""
        self.products += 1
        g = self.gradient(torch.stack([self.x + self.h * v, self.x - self.h * v]))
        return (g[0] - g[1]) / (2 * self.h)

    def operator(self, block: str) -> LinearOperator:
        """The Hessian restricted to one block (e, m, or [e; m]) as a scipy operator."""
        lo, hi = {"e": (0, self.d), "m": (self.d, 2 * self.d), CONCATENATED: (0, 2 * self.d)}[block]
        dtype = self.x.dtype

        def matvec(v: np.ndarray) -> np.ndarray:
            full = torch.zeros_like(self.x)
            full[lo:hi] = torch.as_tensor(np.asarray(v).ravel(), dtype=dtype)
            return self.product(full)[lo:hi].double().numpy()
        return LinearOperator((hi - lo, hi - lo), matvec=matvec, dtype=np.float64)


def top_eigenvalues(operator: LinearOperator, k: int, seed: int, tol: float = 1e-3,
                    maxiter: int | None = None) -> tuple[np.ndarray, bool]:
    """The k largest eigenvalues, descending, and whether Lanczos converged on all of them
    (if not: the ones it did converge on)."""
    n = operator.shape[0]
    k = min(k, n - 1)
    v0 = np.random.default_rng(seed).standard_normal(n)
    try:
        values = eigsh(operator, k=k, which="LA", tol=tol, v0=v0, maxiter=maxiter,
                       return_eigenvectors=False)
        converged = True
    except ArpackNoConvergence as err:
        values, converged = err.eigenvalues, False
    return np.sort(np.asarray(values, float))[::-1], converged


def _chosen(rows: pd.DataFrame, limit) -> pd.DataFrame:
    """Reconstructed one-step solutions, the first seed of every text before any second."""
    ok = rows[(rows["method"] == "one-step") & (rows["accuracy"] >= RECONSTRUCTED)]
    ok = ok.assign(_rank=ok.groupby("text_id").cumcount()).sort_values(["_rank", "solution_id"])
    return (ok if limit == ALL else ok.head(int(limit))).drop(columns="_rank")


@takes(options_of("spectrum"), "spectrum")
def analyze(store, loaded, progress=None, *, eigs: int, solutions, threshold: float,
            step: float, tol: float, seed: int) -> dict[str, pd.DataFrame]:
    """Tables spectrum and spectrum_eigenvalues of a run."""
    report = reporter(progress)
    rows, e, m = load_solutions(store)
    own = own_vectors(rows)
    texts = {t.text_id: t for t in store.texts()}
    chosen = _chosen(rows, solutions)
    spectra, values = [], []
    report("solutions", 0, len(chosen))
    for done, (i, row) in enumerate(chosen.iterrows(), 1):
        decoder = Decoder(loaded, str(row["arrangement"]))
        target = torch.tensor(texts[row["text_id"]].token_ids[: int(row["length"])])
        hessian = LocalHessian(decoder, e[i].to(loaded.device), m[i].to(loaded.device),
                               target.to(loaded.device), step)
        for block in BLOCKS:
            if not own[block][i]:
                continue
            report("solutions", done - 1, len(chosen), block=block)
            started, before = time.perf_counter(), hessian.products
            operator = hessian.operator(block)
            found, converged = top_eigenvalues(operator, eigs, seed + i, tol)
            top = float(found[0]) if len(found) else np.nan
            cut = threshold * top if np.isfinite(top) and top > 0 else np.nan
            stiff = int((found > cut).sum()) if np.isfinite(cut) else 0
            spectra.append({
                "solution_id": int(row["solution_id"]), "text_id": row["text_id"],
                "seed": int(row["seed"]), "length": int(row["length"]), "block": block,
                "dimension": operator.shape[0], "k": len(found), "top": top,
                "smallest_found": float(found[-1]) if len(found) else np.nan,
                "threshold": cut, "stiff": stiff,
                "stiff_censored": bool(len(found) and stiff == len(found)),
                "converged": converged, "products": hessian.products - before,
                "seconds": time.perf_counter() - started})
            values += [{"solution_id": int(row["solution_id"]), "block": block, "rank": r + 1,
                        "eigenvalue": float(v)} for r, v in enumerate(found)]
        report("solutions", done, len(chosen))
    return {"spectrum": pd.DataFrame(spectra, columns=SPECTRUM_COLUMNS),
            "spectrum_eigenvalues": pd.DataFrame(values, columns=EIGEN_COLUMNS)}
