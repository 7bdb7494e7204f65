"""Are the solutions of one text connected, and along what kind of path?

The paper's findings 3 and 4: the straight segment between two same-text solutions loses the
reconstruction in the middle, while a quadratic Bezier curve with a trained control point keeps
it and is barely longer than the segment. For pairs of same-text solutions (all, or a seeded
sample of `max_pairs` per text) this module evaluates accuracy and loss on an even grid of t
along both paths, and summarises each path by its lowest accuracy, loss barrier, length ratio
and the text decoded where it is worst. A few pairs of DIFFERENT texts are walked along the
straight segment as a contrast, scored against both texts (`target` a / b); a curve is trained
only between same-text solutions, where there is one text for it to keep.

A curve is trained until it answers: every `check_every` steps its whole grid is decoded and
it stops as soon as its worst point reconstructs the text (`held`), or when `bezier_steps` run
out (status `not within budget B`). The budget a pair ran under is recorded in its rows, and
the trained control points are returned as `curves` (RUN/analysis/curves.safetensors, one
[3, D] tensor `pair_<pair_id>` of path coordinates per curve; `load_curves` rebuilds them).

When the two solutions share m (a run fitted with `share="m"`), the path moves e only, as in
the paper's main experiments; otherwise it moves [e; m]. Also returned: `positions`, which
positions every solution reconstructs (the compare page draws it).

Progress (analysis/progress.py): stage "<kind> curves" counts the same-text pairs whose curve
is trained, with the current curve step, curves still training and curves held so far beside
it; stage "paths walked" counts every path decoded on its grid.

Tables (docs/tables.md): connectivity, connectivity_pairs, connectivity_tokens, positions.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from protoscope.geometry.engine.decoder import Decoded, Decoder
from protoscope.geometry.engine.paths import (CURVES, LinearPath, Path, decode_path,
                                       even_grid, join, train_beziers)
from protoscope.geometry.store.runstore import Tensors
from protoscope.geometry.tables import columns

from protoscope.geometry.errors import ProtoscopeError
from protoscope.options import ALL, spell, takes

from .progress import reporter
from .registry import options_of

VERSION = 3  # 3: the table's max_pairs spells all as "all"; of this analysis's numbers: bump it when a change alters them (analysis/run.py)


@dataclass(frozen=True)
class Budget:
    """How hard each curve is trained and how finely paths are sampled (recorded per pair)."""

    bezier_steps: int
    samples_per_step: int
    lr: float
    grid_points: int
    seed: int
    check_every: int
    max_pairs: str  # same-text pairs per text: "all" or a count
    cross_text_pairs: int
    midpoint_steps: int = 0  # the midpoint start's budget (geometry/engine/paths.py); 0: none
    t_sampling: str = "uniform"
    check_grid: int = 0  # points of the coarse check inside the grid (coarse_grid)


@dataclass(frozen=True)
class Pair:
    pair_id: int
    a: pd.Series  # solution rows
    b: pd.Series
    moved: str  # which vectors the path moves: e (m shared), m (e shared) or e+m

    @property
    def same_text(self) -> bool:
        return self.a["text_id"] == self.b["text_id"]


@takes(options_of("connectivity"), "connectivity")
def analyze(store, loaded, progress=None, *, max_pairs: int | str, cross_text_pairs: int,
            grid: int, bezier_steps: int, samples_per_step: int, lr: float, seed: int,
            min_accuracy: float, train_batch: int, check_every: int, hold_accuracy: float,
            curves: tuple[str, ...], midpoint_steps: int, t_sampling: str,
            check_grid: int) -> dict[str, pd.DataFrame]:
    """Connectivity tables for the run in `store`, on the run's frozen model `loaded`; the
    options' defaults and bounds are declared in analysis/registry.py (`max_pairs`: ALL or a
    count per text).

    `curves` names the trained curve families, each with the same budget: "bezier" (the
    paper's quadratic curve) and/or "chain" (Garipov et al.'s polygonal chain, one bend).

    `min_accuracy` picks the endpoints (solutions that reconstruct their text);
    `hold_accuracy` is what every grid point of a `held` path reaches; `check_every` 0
    trains every curve for the whole budget (no early stop). `progress` hears how far it
    is (analysis/progress.py); it is not an option and changes no number.
    """
    check_grid = coarse_grid(grid, check_grid)
    if not curves:
        raise ProtoscopeError(f"--curves must name one or more of {', '.join(CURVES)}")
    rows, e, m = store.solution_vectors()
    vectors = {int(s): (e[i], m[i]) for i, s in enumerate(rows["solution_id"])}
    targets = {t.text_id: torch.tensor(t.token_ids) for t in store.texts()}
    budget = Budget(bezier_steps, samples_per_step, lr, grid, seed, check_every,
                    spell(max_pairs), cross_text_pairs, midpoint_steps, t_sampling, check_grid)
    max_pairs = None if max_pairs == ALL else max_pairs
    report = reporter(progress)
    walker = _Walker(loaded, vectors, targets, budget, hold_accuracy, report)
    endpoints = rows[(rows["method"] == "one-step") & (rows["accuracy"] >= min_accuracy)]
    pairs = same_text_pairs(endpoints, max_pairs, seed)
    pairs += cross_text_sample(endpoints, cross_text_pairs, seed, first_id=len(pairs))
    trained = {kind: walker.train(pairs, train_batch, kind) if bezier_steps > 0 else {}
               for kind in dict.fromkeys(curves)}
    tables = {"connectivity": [], "connectivity_pairs": [], "connectivity_tokens": []}
    walks = []  # (pair, path name, path): every path to decode, counted before the first
    for pair in pairs:
        walks.append((pair, "linear", walker.linear(pair)))
        walks += [(pair, kind, made[pair.pair_id]) for kind, made in trained.items()
                  if pair.pair_id in made]
    report("paths walked", 0, len(walks))
    for walked, (pair, name, path) in enumerate(walks, 1):
        for key, frame in walker.walk(pair, name, path).items():
            tables[key].append(frame)
        report("paths walked", walked, len(walks))
    out = {k: _concat(v, _EMPTY[k]) for k, v in tables.items()}
    out["positions"] = positions(loaded, rows, vectors, targets)
    out["curves"] = Tensors(
        {_curve_key(pair_id, kind): c.controls
         for kind, made in trained.items() for pair_id, c in made.items()},
        {"layout": "pair_<pair_id>: quadratic Bezier control points [3, D] in path coordinates "
                   "(start, control, end); pair_<pair_id>_chain: the polygonal chain's "
                   "(start, bend, end)"})
    return out


def coarse_grid(grid: int, check_grid: int) -> int:
    """The points of the coarse check actually used: `check_grid` where those points are grid
    points (2 <= k < grid, (grid - 1) divisible by (k - 1)), else the whole grid (0 asks for
    it), so a coarse failure is always a failure on the grid."""
    if 2 <= check_grid < grid and (grid - 1) % (check_grid - 1) == 0:
        return check_grid
    return grid


def _curve_key(pair_id: int, kind: str) -> str:
    return f"pair_{pair_id}" if kind == "bezier" else f"pair_{pair_id}_{kind}"


def load_curves(store, kind: str = "bezier") -> dict[int, Path]:
    """The trained curves of one family in RUN/analysis/curves.safetensors, by pair_id
    (empty when none).

    Their coordinates are what `connectivity_pairs.moved` says: [e; m], or e alone with the
    pair's shared m fixed (`geometry.engine.paths.split` turns points back into (e, m)).
    """
    tensors = store.analysis_tensors("curves") or {}
    out = {}
    for key, controls in tensors.items():
        _, pair_id, *rest = key.split("_")
        if (rest[0] if rest else "bezier") == kind:
            out[int(pair_id)] = CURVES[kind](*controls)
    return out


# -- which pairs ------------------------------------------------------------------------------
def _moved(a: pd.Series, b: pd.Series) -> str:
    """Move only the vectors that differ: a shared m stays put, as in the paper."""
    if a["m_index"] == b["m_index"]:
        return "e"
    if a["e_index"] == b["e_index"]:
        return "m"
    return "e+m"


def same_text_pairs(endpoints: pd.DataFrame, max_pairs: int | None, seed: int) -> list[Pair]:
    """All pairs of solutions of one text (same length and arrangement), or a seeded sample."""
    rng = np.random.default_rng(seed)
    pairs: list[Pair] = []
    for _, group in endpoints.groupby(["text_id", "length", "arrangement"], sort=True):
        combos = list(itertools.combinations(range(len(group)), 2))
        if max_pairs is not None and len(combos) > max_pairs:
            chosen = rng.choice(len(combos), size=max_pairs, replace=False)
            combos = [combos[i] for i in sorted(chosen)]
        for i, j in combos:
            a, b = group.iloc[i], group.iloc[j]
            pairs.append(Pair(len(pairs), a, b, _moved(a, b)))
    return pairs


def cross_text_sample(endpoints: pd.DataFrame, count: int, seed: int, first_id: int) -> list[Pair]:
    """A seeded sample of `count` pairs of solutions of different texts (same length)."""
    rows = [r for _, r in endpoints.iterrows()]
    combos = [(a, b) for a, b in itertools.combinations(rows, 2)
              if a["text_id"] != b["text_id"] and a["length"] == b["length"]
              and a["arrangement"] == b["arrangement"]]
    if not combos or count == 0:
        return []
    rng = np.random.default_rng(seed + 1)  # not the same-text sampler's stream
    chosen = rng.choice(len(combos), min(count, len(combos)), replace=False)
    return [Pair(first_id + k, combos[i][0], combos[i][1], _moved(*combos[i]))
            for k, i in enumerate(sorted(chosen))]


# -- walking the paths -------------------------------------------------------------------------
class _Walker:
    """Builds, trains and evaluates the paths of pairs; one decoder per arrangement."""

    def __init__(self, loaded, vectors: dict, targets: dict, budget: Budget,
                 hold_accuracy: float, report=None):
        self.loaded, self.vectors, self.targets, self.budget = loaded, vectors, targets, budget
        self.hold_accuracy, self.report = hold_accuracy, reporter(report)
        self.t = even_grid(budget.grid_points)
        self.t_values = np.linspace(0.0, 1.0, budget.grid_points)  # float64 t for the tables
        self.decoders: dict[str, Decoder] = {}
        self.tokens = _TokenNames(loaded.tokenizer)

    def decoder(self, arrangement: str) -> Decoder:
        if arrangement not in self.decoders:
            self.decoders[arrangement] = Decoder(self.loaded, arrangement)
        return self.decoders[arrangement]

    def ends(self, pair: Pair) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Path coordinates of both solutions and the vector that stays fixed (if any)."""
        ea, ma = self.vectors[int(pair.a["solution_id"])]
        eb, mb = self.vectors[int(pair.b["solution_id"])]
        fixed = {"e": ma, "m": ea}.get(pair.moved)
        return join(ea, ma, pair.moved), join(eb, mb, pair.moved), fixed

    def linear(self, pair: Pair) -> LinearPath:
        a, b, _ = self.ends(pair)
        return LinearPath(a, b)

    def train(self, pairs: list[Pair], train_batch: int, kind: str) -> dict[int, Path]:
        """Curves of one family for the same-text pairs, trained in batches of similar pairs."""
        groups: dict[tuple, list[Pair]] = {}
        for p in pairs:
            if p.same_text:
                groups.setdefault((p.moved, p.a["arrangement"], int(p.a["length"])), []).append(p)
        per_call = max(1, train_batch // self.budget.samples_per_step)
        curves: dict[int, Path] = {}
        total, stage = sum(map(len, groups.values())), f"{kind} curves"
        self.report(stage, 0, total, held=0)
        for (moved, arrangement, _), members in groups.items():
            for start in range(0, len(members), per_call):
                chunk = members[start:start + per_call]
                on_step = self._on_step(stage, curves, total)
                curves.update(zip((p.pair_id for p in chunk),
                                  self._train_chunk(chunk, moved, arrangement, kind, on_step)))
                self.report(stage, len(curves), total,
                            held=sum(bool(c.held) for c in curves.values()))
        return curves

    def _on_step(self, stage: str, curves: dict, total: int):
        """train_beziers' per-step callback for the next chunk: the pairs trained before it,
        its step, its curves still training, and every curve held so far."""
        done, held = len(curves), sum(bool(c.held) for c in curves.values())

        def on_step(step: int, active: int, chunk_held: int, loss: float) -> None:
            self.report(stage, done, total, step=f"{step}/{self.budget.bezier_steps}",
                        training=active, held=held + chunk_held, loss=round(loss, 4))
        return on_step

    def _train_chunk(self, chunk: list[Pair], moved: str, arrangement: str,
                     kind: str, on_step=None) -> list[Path]:
        a, b, fixed = zip(*(self.ends(p) for p in chunk))
        targets = torch.stack([self.target(p, p.a["text_id"]) for p in chunk])
        budget = self.budget
        return train_beziers(self.decoder(arrangement), torch.stack(a), torch.stack(b), targets,
                             budget.bezier_steps, budget.samples_per_step, budget.lr, budget.seed,
                             moved=moved, grid=budget.grid_points,
                             fixed=None if moved == "e+m" else torch.stack(fixed),
                             check_every=budget.check_every, min_accuracy=self.hold_accuracy,
                             midpoint_steps=budget.midpoint_steps, t_sampling=budget.t_sampling,
                             check_grid=budget.check_grid,
                             kind=kind, on_step=on_step)

    def target(self, pair: Pair, text_id: str) -> torch.Tensor:
        """The first `length` token ids of a text: what the pair's solutions were fitted to."""
        return self.targets[text_id][: int(pair.a["length"])]

    def walk(self, pair: Pair, name: str, path: Path) -> dict[str, pd.DataFrame]:
        """Grid, summary and token tables of one path, scored against each text of the pair."""
        _, _, fixed = self.ends(pair)
        decoder = self.decoder(pair.a["arrangement"])
        texts = {"a": pair.a["text_id"]}
        if not pair.same_text:
            texts["b"] = pair.b["text_id"]
        ratio = path.length(len(self.t)) / max(path.straight_length(), 1e-12)
        frames: dict[str, list] = {k: [] for k in _EMPTY if k != "positions"}
        for target, text_id in texts.items():
            out = decode_path(decoder, path, self.t, self.target(pair, text_id), pair.moved, fixed)
            base = {"pair_id": pair.pair_id, "path": name, "target": target}
            frames["connectivity"].append(self._grid(pair, base, out))
            frames["connectivity_pairs"].append(self._summary(pair, base, out, ratio, path))
            frames["connectivity_tokens"].append(self._tokens(base, out))
        return {k: pd.concat(v, ignore_index=True) for k, v in frames.items()}

    def _grid(self, pair: Pair, base: dict, out: Decoded) -> pd.DataFrame:
        return pd.DataFrame({**base, **_ids(pair), "same_text": pair.same_text,
                             "t": self.t_values, "accuracy": out.accuracy.cpu().numpy(),
                             "loss": out.total_loss.cpu().numpy()})

    def _summary(self, pair: Pair, base: dict, out: Decoded, ratio: float,
                 path: Path) -> pd.DataFrame:
        acc, loss = out.accuracy.cpu().numpy(), out.total_loss.cpu().numpy()
        # Worst point: lowest accuracy, ties broken by the highest loss.
        worst = int(np.lexsort((-loss, acc))[0])
        row = {**base, **_ids(pair), "text_a": pair.a["text_id"], "text_b": pair.b["text_id"],
               "same_text": pair.same_text, "moved": pair.moved,
               "min_accuracy": float(acc.min()),
               "barrier": float(loss.max() - (loss[0] + loss[-1]) / 2),
               "length_ratio": float(ratio), "worst_t": float(self.t_values[worst]),
               "worst_text": self.loaded.tokenizer.decode(out.predicted[worst].tolist()),
               "train_steps": int(path.trained_steps), **self._held(base["path"], acc, path),
               **asdict(self.budget)}
        return pd.DataFrame([row])

    def _held(self, name: str, acc: np.ndarray, path: Path) -> dict:
        """Did the path keep the text at every grid point, and what did the curve cost?"""
        held = bool(acc.min() >= self.hold_accuracy)
        if name == "linear":
            status = "held" if held else "breaks"
        else:
            status = "held" if held else f"not within budget {self.budget.bezier_steps}"
        return {"held": held, "status": status, "steps_used": int(getattr(path, "steps_used", 0)),
                "midpoint_used": int(getattr(path, "midpoint_steps", 0))}

    def _tokens(self, base: dict, out: Decoded) -> pd.DataFrame:
        n_t, n = out.predicted.shape
        return pd.DataFrame({**base, "t": np.repeat(self.t_values, n),
                             "position": np.tile(np.arange(n), n_t),
                             "token": self.tokens(out.predicted.reshape(-1).tolist()),
                             "correct": out.correct.reshape(-1).cpu().numpy()})


def _ids(pair: Pair) -> dict:
    return {"solution_a": int(pair.a["solution_id"]), "solution_b": int(pair.b["solution_id"])}


class _TokenNames:
    """Decoded strings of single token ids, cached: a grid repeats the same few tokens."""

    def __init__(self, tokenizer):
        self.tokenizer, self.cache = tokenizer, {}

    def __call__(self, ids: list[int]) -> list[str]:
        for i in set(ids) - self.cache.keys():
            self.cache[i] = self.tokenizer.decode([i])
        return [self.cache[i] for i in ids]


# -- which positions each solution reconstructs -------------------------------------------------
def positions(loaded, rows: pd.DataFrame, vectors: dict, targets: dict,
              batch: int = 64) -> pd.DataFrame:
    """Per solution and position: target token, predicted token, correct (batched decoding)."""
    names, frames = _TokenNames(loaded.tokenizer), []
    for (arrangement, length), group in rows.groupby(["arrangement", "length"], sort=True):
        decoder, n = Decoder(loaded, arrangement), int(length)
        for start in range(0, len(group), batch):
            chunk = group.iloc[start:start + batch]
            ids = [int(s) for s in chunk["solution_id"]]
            e = torch.stack([vectors[s][0] for s in ids]).to(loaded.device)
            m = torch.stack([vectors[s][1] for s in ids]).to(loaded.device)
            tgt = torch.stack([targets[t][:n] for t in chunk["text_id"]]).to(loaded.device)
            out = decoder(e, m, tgt)
            frames.append(pd.DataFrame({
                "solution_id": np.repeat(ids, n), "position": np.tile(np.arange(n), len(ids)),
                "target_token": names(tgt.reshape(-1).tolist()),
                "predicted_token": names(out.predicted.reshape(-1).tolist()),
                "correct": out.correct.reshape(-1).cpu().numpy()}))
    return _concat(frames, _EMPTY["positions"])


_EMPTY = {name: columns(name) for name in
          ("connectivity", "connectivity_pairs", "connectivity_tokens", "positions")}


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """One table with the contract's column order; an empty one still has its columns."""
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    table = pd.concat(frames, ignore_index=True)
    return table[columns + [c for c in table.columns if c not in columns]]
