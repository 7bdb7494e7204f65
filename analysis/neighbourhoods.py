"""How far can a solution move before its text is lost, and do a text's solutions cluster?

Locality is half of the paper's argument that an encoder into proto-token space is plausible
(PAPER.md, finding 6): a solution should keep its text in a ball around it, and that ball
should be small next to the distance to solutions of other texts. This module measures
accuracy under perturbation at radii relative to the vector's norm, along random directions
(rays: trial t uses the same unit direction at every radius, so curves are smooth) and along
the worst direction a few steps of projected gradient ascent on the loss find in the ball; it
compares the radii where accuracy drops with the distance to the nearest other solution, and
asks whether nearest neighbours share a text (k-NN purity, silhouette) with 2-D maps to look at.

`vectors="e"` moves e only; `"e+m"` moves the pair [e; m] (m only where it is the solution's
own), with radii relative to the norm of what moves. Every evaluation goes through the shared
Decoder, many perturbed copies per call.

Progress (analysis/progress.py): stage "solutions" counts the solutions whose rays and ascent
are done, with the pass in flight beside it (`rays` or `ascent`: solutions of the cohort
through it), then stage "maps" (PCA/UMAP, per own vector).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import torch

from protoscope.geometry.engine.decoder import Decoder
from protoscope.geometry.tables import CONCATENATED, RECONSTRUCTED, columns
from protoscope.analysis.vectors import own_vectors

from .progress import reporter
from .vectors import cohorts, cosine_distances, l2_distances, load_solutions, stack

log = logging.getLogger(__name__)
from protoscope.options import takes

from .registry import options_of

VERSION = 1  # of this analysis's numbers: bump it when a change alters them (analysis/run.py)

MOVES = ("e", CONCATENATED)
SWEEP_COLUMNS = columns("neighbourhoods")
RADII_COLUMNS = columns("neighbourhood_radii")


@takes(options_of("neighbourhoods"), "neighbourhoods")
def analyze(store, loaded, progress=None, *, radii: tuple[float, ...], directions: int,
            adversarial_steps: int, vectors: str, seed: int, batch_size: int | None, k_max: int,
            umap: bool, umap_min_points: int) -> dict[str, pd.DataFrame]:
    """Tables neighbourhoods, neighbourhood_radii, neighbourhood_purity and maps of a run.

    `progress` hears how far it is (analysis/progress.py); it is not an option."""
    radii = sorted({float(r) for r in radii} | {0.0})  # 0 anchors every curve
    report = reporter(progress)
    rows, e, m = load_solutions(store)
    texts = {t.text_id: t for t in store.texts()}
    sweeps, radius_tables = [], []
    groups = cohorts(rows)
    total, done = sum(len(idx) for idx in groups), 0
    report("solutions", 0, total)
    for idx in groups:
        cohort = rows.iloc[idx].reset_index(drop=True)
        decoder = Decoder(loaded, str(cohort["arrangement"].iloc[0]))
        space = _Space(cohort, e[idx], m[idx], texts, vectors, loaded.device)
        sweep = perturbation_sweep(decoder, space, radii, directions, adversarial_steps, seed,
                                   batch_size, _on_solutions(report, done, len(idx), total))
        sweeps.append(sweep)
        radius_tables.append(radii_table(sweep, space))
        done += len(idx)
        report("solutions", done, total)
    sweep = pd.concat(sweeps, ignore_index=True) if sweeps else _empty(SWEEP_COLUMNS)
    radius_table = pd.concat(radius_tables, ignore_index=True) if radius_tables else _empty(RADII_COLUMNS)
    sources = {t.text_id: t.source for t in texts.values()}
    purity = purity_table(rows, e, m, k_max)
    report("maps", 0, 1)
    maps = map_table(rows, e, m, sources, umap=umap, seed=seed, umap_min_points=umap_min_points)
    report("maps", 1, 1)
    return {"neighbourhoods": sweep, "neighbourhood_radii": radius_table,
            "neighbourhood_purity": purity, "maps": maps}


def _on_solutions(report, before: int, n: int, total: int):
    """perturbation_sweep's callback for one cohort of `n` solutions after `before` others: a
    solution counts as done once its ascent is; the pass in flight is shown beside."""
    def on_solutions(phase: str, through: int) -> None:
        report("solutions", before + (through if phase == "ascent" else 0), total,
               **{phase: f"{through}/{n}"})
    return on_solutions


class _Space:
    """One cohort in the space that moves: V = [e; m] rows, a mask of the moving coordinates."""

    def __init__(self, rows, e, m, texts, vectors, device):
        self.rows, self.d = rows, e.shape[1]
        self.V = torch.cat([e, m], 1).float().to(device)
        self.mask = torch.zeros_like(self.V)
        self.mask[:, : self.d] = 1.0
        if vectors == CONCATENATED:
            own_m = torch.as_tensor(own_vectors(rows)["m"], device=device)
            self.mask[own_m, self.d:] = 1.0
        self.norms = (self.V * self.mask).norm(dim=1)
        length = int(rows["length"].iloc[0])
        self.targets = torch.tensor([texts[t].token_ids[:length] for t in rows["text_id"]],
                                    dtype=torch.long, device=device)
        self.ids = rows["solution_id"].to_numpy()

    def directions(self, count: int, seed: int) -> torch.Tensor:
        """Unit directions [n, count, 2d] in the moving coordinates, seeded per solution."""
        out = []
        for sid, mask in zip(self.ids, self.mask.cpu()):
            g = torch.Generator().manual_seed(seed * 1_000_003 + int(sid))
            u = torch.randn(count, len(mask), generator=g) * mask
            out.append(u / u.norm(dim=1, keepdim=True))
        return torch.stack(out).to(self.V.device)


def perturbation_sweep(decoder: Decoder, space: _Space, radii, directions: int,
                       adversarial_steps: int, seed: int, batch_size: int | None,
                       on_solutions=None) -> pd.DataFrame:
    """Accuracy at each radius along random rays and along the adversarial direction.

    `on_solutions(phase, through)`, when given, hears after every batch how many of the
    cohort's solutions are through the phase ("rays", then "ascent")."""
    n, positive = len(space.ids), [r for r in radii if r > 0]
    batch = batch_size or _auto_batch(space)
    base_acc, base_loss = evaluate(decoder, space.V, space.targets, space.d, batch)
    stored = space.rows["accuracy"].to_numpy()
    if not np.array_equal(base_acc, stored):  # batch composition must not change a solution
        log.warning("%d solutions decode to another accuracy than stored",
                    int((base_acc != stored).sum()))
    u = space.directions(directions, seed)  # [n, T, D]
    scale = torch.tensor(positive, device=space.V.device)[None, :, None, None] * space.norms[:, None, None, None]
    moved = space.V[:, None, None, :] + scale * u[:, None, :, :]  # [n, R, T, D]
    flat_targets = space.targets.repeat_interleave(len(positive) * directions, 0)
    rays = _through(on_solutions, "rays", len(positive) * directions)
    balls = _through(on_solutions, "ascent", len(positive))
    acc, loss = evaluate(decoder, moved.reshape(-1, moved.shape[-1]), flat_targets, space.d,
                         batch, rays)
    adv_acc, adv_loss = adversarial(decoder, space, positive, u[:, 0], adversarial_steps,
                                    max(1, batch // 2), balls)
    frames = [
        _rows(space, np.repeat(0.0, n * directions), "random", np.tile(np.arange(directions), n),
              np.repeat(base_acc, directions), np.repeat(base_loss, directions), directions),
        _rows(space, np.tile(np.repeat(positive, directions), n), "random",
              np.tile(np.arange(directions), n * len(positive)), acc, loss,
              len(positive) * directions),
        _rows(space, np.zeros(n), "adversarial", np.zeros(n, int), base_acc, base_loss, 1),
        _rows(space, np.tile(positive, n), "adversarial", np.zeros(n * len(positive), int),
              adv_acc, adv_loss, len(positive)),
    ]
    return pd.concat(frames, ignore_index=True).sort_values(
        ["solution_id", "direction", "radius", "trial"], ignore_index=True)


def _through(on_solutions, phase: str, per_solution: int):
    """Rows done -> solutions through `phase` (a solution's rows are consecutive)."""
    if on_solutions is None or per_solution == 0:
        return None
    return lambda rows: on_solutions(phase, rows // per_solution)


def _rows(space, radius, direction, trial, acc, loss, per_solution) -> pd.DataFrame:
    return pd.DataFrame({
        "solution_id": np.repeat(space.ids, per_solution),
        "text_id": np.repeat(space.rows["text_id"].astype(str).to_numpy(), per_solution),
        "radius": np.asarray(radius, float), "direction": direction,
        "trial": np.asarray(trial, int), "accuracy": acc, "loss": loss})


def _auto_batch(space: _Space) -> int:
    """Rows per decoder call: about 4k (CPU) or 64k (GPU) input positions in flight."""
    budget = 4096 if space.V.device.type == "cpu" else 65536
    return max(1, budget // (space.targets.shape[1] + 2))


def evaluate(decoder: Decoder, V: torch.Tensor, targets: torch.Tensor, d: int,
             batch: int, on_rows=None) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and summed loss (nats) of each row of V = [e; m], `batch` rows per call
    (`on_rows(rows done)` after each call, when given)."""
    accs, losses = [], []
    for start in range(0, len(V), batch):
        chunk = V[start : start + batch]
        out = decoder(chunk[:, :d], chunk[:, d:], targets[start : start + batch])
        accs.append(out.accuracy.cpu())
        losses.append(out.total_loss.cpu())
        if on_rows is not None:
            on_rows(start + len(chunk))
    if not accs:
        return np.zeros(0), np.zeros(0)
    return torch.cat(accs).double().numpy(), torch.cat(losses).double().numpy()


def adversarial(decoder: Decoder, space: _Space, radii: list[float], start: torch.Tensor,
                steps: int, batch: int, on_rows=None) -> tuple[np.ndarray, np.ndarray]:
    """Worst accuracy (and its loss) met by projected gradient ascent in each ball, [n * R].

    The ascent starts on the sphere along random ray 0 (so it is never better than that ray)
    and takes `steps` normalised gradient steps of 2.5 / steps of the radius (Madry et al.),
    each projected back into the ball; every iterate is a point of the ball, so the lowest
    accuracy met is an upper bound on the ball's worst case. `on_rows(rows done)` after each
    batch, when given.
    """
    R, dev = len(radii), space.V.device
    V = space.V.repeat_interleave(R, 0)
    mask = space.mask.repeat_interleave(R, 0)
    budget = (torch.tensor(radii, device=dev).repeat(len(space.ids)) *
              space.norms.repeat_interleave(R))[:, None]
    delta0 = start.repeat_interleave(R, 0) * budget
    targets = space.targets.repeat_interleave(R, 0)
    accs, losses = [], []
    for s in range(0, len(V), batch):
        sl = slice(s, s + batch)
        acc, loss = _ascend(decoder, V[sl], mask[sl], budget[sl], delta0[sl], targets[sl],
                            steps, space.d)
        accs.append(acc)
        losses.append(loss)
        if on_rows is not None:
            on_rows(min(s + batch, len(V)))
    if not accs:
        return np.zeros(0), np.zeros(0)
    return torch.cat(accs).double().numpy(), torch.cat(losses).double().numpy()


def _ascend(decoder, V, mask, budget, delta, targets, steps, d):
    worst_acc = torch.full((len(V),), float("inf"))
    worst_loss = torch.zeros(len(V))
    for step in range(steps + 1):
        x = (V + delta).detach().requires_grad_(step < steps)
        out = decoder(x[:, :d], x[:, d:], targets, grad=step < steps)
        acc, loss = out.accuracy.detach().cpu(), out.total_loss.detach().cpu()
        worse = (acc < worst_acc) | ((acc == worst_acc) & (loss > worst_loss))
        worst_acc, worst_loss = torch.where(worse, acc, worst_acc), torch.where(worse, loss, worst_loss)
        if step == steps:
            break
        (grad,) = torch.autograd.grad(out.total_loss.sum(), x)
        grad = grad * mask
        grad = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-30)
        delta = delta.detach() + (2.5 / steps) * budget * grad
        delta = delta * (budget / delta.norm(dim=1, keepdim=True).clamp_min(1e-30)).clamp(max=1.0)
    return worst_acc, worst_loss


def first_radius_below(curve: pd.Series, threshold: float) -> float:
    """The first radius (index of `curve`, sorted) whose value is below threshold; NaN if none."""
    below = curve.sort_index() < threshold
    return float(below.idxmax()) if below.any() else float("nan")


def radii_table(sweep: pd.DataFrame, space: _Space) -> pd.DataFrame:
    """Per solution: where accuracy drops, and how far the nearest other solutions lie."""
    mean = sweep.groupby(["direction", "solution_id", "radius"])["accuracy"].mean()
    same, other = nearest_relative(space)
    out = []
    for i, sid in enumerate(space.ids):
        rand, adv = mean.loc["random", sid], mean.loc["adversarial", sid]
        out.append({"solution_id": sid, "text_id": str(space.rows["text_id"].iloc[i]),
                    "radius_99": first_radius_below(rand, RECONSTRUCTED),
                    "radius_50": first_radius_below(rand, 0.5),
                    "adversarial_radius_99": first_radius_below(adv, RECONSTRUCTED),
                    "nearest_same_text": same[i], "nearest_other_text": other[i]})
    return pd.DataFrame(out, columns=RADII_COLUMNS)


EXACT_NEIGHBOURS = 2000  # points up to which nearest neighbours are found exactly (n^2)


def nearest_relative(space: _Space, exact_max: int = EXACT_NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """||a - b|| / ||a|| in a's moving coordinates, to the nearest same-text / other-text b.

    Exact (every pair) up to `exact_max` solutions; past it, when every solution moves the
    same coordinates, same-text neighbours exactly (a text has few solutions) and other-text
    ones from a nearest-neighbour index (pynndescent: approximate, near-exact at these k)."""
    V, mask = space.V.double().cpu(), space.mask.double().cpu()
    text = space.rows["text_id"].astype(str).to_numpy()
    if len(V) > exact_max and bool((mask == mask[0]).all()):
        return _nearest_indexed((V * mask[0]).numpy(), text)
    same, other = np.full(len(V), np.nan), np.full(len(V), np.nan)
    for i in range(len(V)):
        dist = (((V - V[i]) * mask[i]).norm(dim=1) / (V[i] * mask[i]).norm()).numpy()
        dist[i] = np.nan
        for target, pick in ((same, text == text[i]), (other, text != text[i])):
            pick = pick & ~np.isnan(dist)
            if pick.any():
                target[i] = dist[pick].min()
    return same, other


def _nearest_indexed(x: np.ndarray, text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norms = np.linalg.norm(x, axis=1)
    same, other = np.full(len(x), np.nan), np.full(len(x), np.nan)
    groups = pd.Series(np.arange(len(x))).groupby(text).agg(list)
    for members in groups:
        if len(members) > 1:
            g = np.array(members)
            dist = l2_distances(x[g])
            np.fill_diagonal(dist, np.inf)
            same[g] = dist.min(axis=1) / norms[g]
    k = min(len(x) - 1, int(groups.map(len).max()) + 5)  # past every same-text neighbour
    order, dist = neighbour_graph(x, k, "euclidean")
    for i in range(len(x)):
        pick = (order[i] != i) & (text[order[i]] != text[i])
        if pick.any():
            other[i] = dist[i][pick].min() / norms[i]
    return same, other


def neighbour_graph(x: np.ndarray, k: int, metric: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each point's k + 1 nearest points (itself among them) from pynndescent: indices, distances."""
    from pynndescent import NNDescent

    index = NNDescent(x, n_neighbors=k + 1, metric=metric, random_state=seed, n_jobs=1)
    return index.neighbor_graph


def knn_purity(x: np.ndarray, labels: np.ndarray, k_max: int = 5,
               exact_max: int = EXACT_NEIGHBOURS) -> dict[int, float]:
    """Per k: mean share of each point's k nearest (cosine) other points with its label;
    past `exact_max` points from a nearest-neighbour index (pynndescent) instead of every
    pair."""
    n = len(x)
    if n < 2:
        return {}
    if n > exact_max:
        k = min(k_max, n - 1)
        graph, _ = neighbour_graph(x, k, "cosine")
        order = np.array([[j for j in row if j != i][:k] for i, row in enumerate(graph)])
        hits = labels[order] == labels[:, None]
        return {k: float(hits[:, :k].mean()) for k in range(1, hits.shape[1] + 1)}
    dist = cosine_distances(x)
    np.fill_diagonal(dist, np.inf)
    order = np.argsort(dist, axis=1, kind="stable")[:, : min(k_max, n - 1)]
    hits = labels[order] == labels[:, None]
    return {k: float(hits[:, :k].mean()) for k in range(1, hits.shape[1] + 1)}


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Cosine silhouette by label; NaN when it is undefined (one label, or one point each)."""
    from sklearn.metrics import silhouette_score

    if not 2 <= len(set(labels)) <= len(x) - 1:
        return float("nan")
    if len(x) > EXACT_NEIGHBOURS:  # every pair is n^2: a seeded sample of the points
        return float(silhouette_score(x, labels, metric="cosine", sample_size=EXACT_NEIGHBOURS,
                                      random_state=0))
    return float(silhouette_score(x, labels, metric="cosine"))


def purity_table(rows: pd.DataFrame, e, m, k_max: int = 5) -> pd.DataFrame:
    """k-NN purity by text for k = 1..k_max and the silhouette, per own vector (e, m, e+m)."""
    out = []
    labels = rows["text_id"].astype(str).to_numpy()
    for name, keep in own_vectors(rows).items():
        x = stack(name, e, m)[keep]
        sil = silhouette(x, labels[keep])
        out += [{"vector": name, "k": k, "purity": p, "silhouette": sil}
                for k, p in knn_purity(x, labels[keep], k_max).items()]
    return pd.DataFrame(out, columns=columns("neighbourhood_purity"))


def map_table(rows: pd.DataFrame, e, m, sources: dict, *, umap: bool = True, seed: int = 0,
              umap_min_points: int = 15) -> pd.DataFrame:
    """2-D coordinates of every solution per own vector: PCA always, UMAP on enough points."""
    from sklearn.decomposition import PCA

    frames = []
    for name, keep in own_vectors(rows).items():
        x = stack(name, e, m)[keep]
        if len(x) < 2:
            continue
        ids = rows.loc[keep, ["solution_id", "text_id"]].reset_index(drop=True)
        ids = ids.assign(source=ids["text_id"].map(sources).astype(object), vector=name)
        coords = {"pca": PCA(n_components=2, random_state=seed).fit_transform(x)}
        if umap and len(x) >= umap_min_points:
            import umap as umap_learn

            reducer = umap_learn.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1),
                                      metric="cosine", random_state=seed)
            with warnings.catch_warnings():  # a seeded UMAP always says it runs one job
                warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
                coords["umap"] = reducer.fit_transform(x)
        frames += [ids.assign(method=method, x=xy[:, 0], y=xy[:, 1]) for method, xy in coords.items()]
    names = columns("maps")
    return pd.concat(frames, ignore_index=True)[names] if frames else _empty(names)


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
