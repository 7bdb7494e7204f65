"""Can a text be reconstructed inside a K-dimensional slice of proto-token space?

Random-subspace fitting (Li et al. 2018, "Measuring the Intrinsic Dimension of Objective
Landscapes"): [e; m] = x0 + P z, with x0 the recipe's own start for the problem (the point an
ordinary fit of that text and seed starts from), P a fixed [2d, K] basis with orthonormal
columns and only z in R^K trained. The smallest K that still reconstructs a text is its
intrinsic dimension within this search (a bounded search: a K that fails within the budget is
not shown impossible). Bases:
- `random`: a Gaussian [2d, K] matrix drawn from the problem's seed and K, orthonormalised
  (QR); each seed of a text searches its own subspace.
- `pca`: the top principal directions of the model's token embeddings, ceil(K/2) of them for
  e and floor(K/2) for m (block diagonal), the same for every seed; seeds differ by x0.

Adam on z at the recipe's rate, every problem of a batch through the shared Decoder at once;
a problem stops when exact (the recipe's stop_accuracy) or after `recipe.patience` steps
without a better accuracy (0: never), else at `recipe.max_steps`, keeping its best point. No
restarts and no checkpoints: a batch's solutions are kept as it finishes.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import ProtoscopeError
from .decoder import Decoder
from .fitting import Fitter, Problem, Solution, stable_seed, start_vector
from .recipes import Recipe

KINDS = ("random", "pca")


@dataclass(frozen=True)
class Subspace:
    """K dimensions of a kind of basis ("random" or "pca")."""

    dim: int
    kind: str = "random"

    @property
    def label(self) -> str:
        """How the solution rows and the config spell it: K:KIND."""
        return f"{self.dim}:{self.kind}"


def parse_subspaces(spec: str) -> list[Subspace]:
    """K[,K,...][:KIND] (KIND random, the default, or pca), checked in one line: the
    subspaces a fit searches, increasing."""
    match = re.fullmatch(r"\s*(\d+(?:\s*,\s*\d+)*)\s*(?::\s*(\w+)\s*)?", str(spec))
    dims = [int(k) for k in match.group(1).split(",")] if match else []
    kind = (match.group(2) or "random") if match else ""
    if not dims or min(dims) < 1 or kind not in KINDS or dims != sorted(set(dims)):
        raise ProtoscopeError(f"--subspace must be K or K,K,...:KIND with increasing K >= 1 and "
                              f"KIND one of {', '.join(KINDS)}, got {spec!r}")
    return [Subspace(k, kind) for k in dims]


def random_basis(d2: int, dim: int, seed: int) -> torch.Tensor:
    """[d2, dim] orthonormal columns from a Gaussian drawn by (seed, dim)."""
    if dim > d2:
        raise ProtoscopeError(f"--subspace {dim} exceeds the {d2} dimensions of [e; m]")
    g = torch.Generator().manual_seed(stable_seed(f"subspace|{dim}|{seed}"))
    q, _ = torch.linalg.qr(torch.randn(d2, dim, generator=g, dtype=torch.float64))
    return q.float()


def pca_basis(embeddings: torch.Tensor, dim: int) -> torch.Tensor:
    """[2d, dim]: the top ceil(dim/2) principal directions of the token embeddings for e and
    the top floor(dim/2) for m, block diagonal (orthonormal columns)."""
    d = embeddings.shape[1]
    if dim > 2 * d:
        raise ProtoscopeError(f"--subspace {dim} exceeds the {2 * d} dimensions of [e; m]")
    centred = embeddings.double() - embeddings.double().mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)  # rows of v: principal directions
    k_e, k_m = math.ceil(dim / 2), dim // 2
    basis = torch.zeros(2 * d, dim, dtype=torch.float64)
    basis[:d, :k_e] = v[:k_e].T
    basis[d:, k_e:] = v[:k_m].T
    return basis.float()


def fit_in_subspace(decoder: Decoder, recipe: Recipe, problems: Sequence[Problem],
                    subspace: Subspace, batch_size: int | None = None,
                    on_step: Callable | None = None,
                    on_batch: Callable[[list[Solution], torch.Tensor, torch.Tensor], None] | None = None
                    ) -> list[Solution]:
    """Fit every problem in `subspace`; `on_batch(solutions, e, m)` as each batch finishes
    (solution i's vectors are row i of e and m)."""
    fitter = Fitter(decoder, recipe)
    d, device = fitter.d, fitter.device
    pca = (pca_basis(decoder.loaded.embedding_matrix().cpu(), subspace.dim)
           if subspace.kind == "pca" else None)
    size = batch_size or fitter.auto_batch_size(problems[0].length if problems else 1)
    out: list[Solution] = []
    for start in range(0, len(problems), size):
        batch = list(problems[start:start + size])
        bases = torch.stack([pca if pca is not None else random_basis(2 * d, subspace.dim, p.seed)
                             for p in batch]).to(device)
        x0 = torch.stack([torch.cat([start_vector(p, v, 0, d, fitter.scale) for v in ("e", "m")])
                          for p in batch]).to(device)
        solutions, e, m = _fit_batch(decoder, recipe, batch, bases, x0, on_step)
        if on_batch:
            on_batch(solutions, e, m)
        out += solutions
    return out


def _fit_batch(decoder, recipe, batch, bases, x0, on_step):
    d = x0.shape[1] // 2
    device, n = x0.device, len(batch)
    targets = torch.tensor([p.targets for p in batch], device=device)
    z = torch.zeros(n, bases.shape[2], device=device, requires_grad=True)
    optimiser = torch.optim.Adam([z], lr=recipe.lr, betas=(recipe.beta1, recipe.beta2),
                                 eps=recipe.eps)
    best_acc = torch.full((n,), -1.0)
    best_loss, best_c = torch.full((n,), math.inf), torch.zeros(n, dtype=torch.long)
    best_x, steps = x0.detach().cpu().clone(), torch.zeros(n, dtype=torch.long)
    since = torch.zeros(n, dtype=torch.long)
    active = torch.ones(n, dtype=torch.bool)
    status = ["budget"] * n
    started = time.perf_counter()
    while bool(active.any()):
        idx = active.nonzero().flatten()
        on = idx.to(device)
        x = x0[on] + torch.bmm(bases[on], z[on].unsqueeze(2)).squeeze(2)
        out = decoder(x[:, :d], x[:, d:], targets[on], grad=True)
        optimiser.zero_grad()
        out.total_loss.sum().backward()
        acc, loss = out.accuracy.detach().cpu(), out.total_loss.detach().cpu()
        c = out.c_tokens.detach().cpu()
        better = (acc > best_acc[idx]) | ((acc == best_acc[idx]) & (loss < best_loss[idx]))
        improved = acc > best_acc[idx]
        kept = idx[better]
        best_acc[kept], best_loss[kept], best_c[kept] = acc[better], loss[better], c[better]
        best_x[kept] = x.detach().cpu()[better]
        since[idx] = torch.where(improved, 0, since[idx] + 1)
        steps[idx] += 1
        optimiser.step()
        if on_step:
            on_step(acc)
        exact = acc >= recipe.stop_accuracy
        stalled = (since[idx] >= recipe.patience) if recipe.patience > 0 else torch.zeros_like(exact)
        spent = steps[idx] >= recipe.max_steps
        done = exact | stalled | spent
        active[idx[done]] = False
        for j in done.nonzero().flatten().tolist():
            status[int(idx[j])] = "converged" if exact[j] else "stalled" if stalled[j] else "budget"
    seconds = (time.perf_counter() - started) / n
    solutions = [Solution(problem=p, e_row=i, m_row=i, accuracy=float(best_acc[i]),
                          c_tokens=int(best_c[i]), loss=float(best_loss[i]), steps=int(steps[i]),
                          restarts=0, seconds=seconds, converged=status[i] == "converged",
                          status=status[i]) for i, p in enumerate(batch)]
    return solutions, best_x[:, :d].clone(), best_x[:, d:].clone()
