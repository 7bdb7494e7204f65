"""Where between two solutions do we evaluate? Paths through proto-token space.

A path maps t in [0, 1] to blending weights over its control points (Bernstein weights, as in
Garipov et al.'s mode-connectivity curves): `LinearPath(a, b)` is the degree-1 case and
`BezierPath(a, c, b)` the quadratic one, (1-t)^2 a + 2t(1-t) c + t^2 b. A quadratic curve whose
control is the midpoint is the straight segment, so a trained curve starts exactly as a line.
`ChainPath(a, bend, b)` is Garipov et al.'s other family, a polygonal chain with one bend at
t = 0.5; `train_beziers(..., kind="chain")` trains it the same way.

Path coordinates are whatever the caller moves: `join(e, m, moved)` gives them ([e; m] for
"e+m", e alone for "e" with m held fixed, m alone for "m") and `split` turns path points back
into the (e, m) the decoder takes. A path says only WHERE to evaluate; `decode_path` asks the
shared decoder WHAT the model emits there, for a whole grid of t in one batched call.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .decoder import Decoded, Decoder
from ..tables import RECONSTRUCTED

MOVED = ("e", "m", "e+m")


class Path:
    """A polynomial curve in Bernstein form over control points [K, D] (endpoints first/last)."""

    def __init__(self, *points: torch.Tensor):
        if len(points) < 2:
            raise ValueError(f"a path needs at least 2 points, got {len(points)}")
        shapes = {tuple(p.shape) for p in points}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError(f"path points must be 1-D vectors of one width, "
                             f"got shapes {sorted(shapes)}")
        # Detached copies: a path never aliases (or later changes) the caller's tensors.
        self.controls = torch.stack([p.detach().float() for p in points]).clone()
        self.trained_steps = 0

    @property
    def degree(self) -> int:
        return len(self.controls) - 1

    @property
    def start(self) -> torch.Tensor:
        return self.controls[0]

    @property
    def end(self) -> torch.Tensor:
        return self.controls[-1]

    def weights(self, t: torch.Tensor) -> torch.Tensor:
        """Bernstein blending weights [T, K] at each t; rows sum to 1."""
        return bernstein(torch.as_tensor(t, dtype=torch.float32), self.degree)

    def points(self, t: torch.Tensor) -> torch.Tensor:
        """Points on the path [T, D] at each t in [0, 1]; exactly the endpoints at 0 and 1."""
        t = torch.as_tensor(t, dtype=torch.float32, device=self.controls.device)
        out = self.weights(t) @ self.controls
        # Bernstein weights are exact at 0 and 1 in theory; pin them so rounding cannot leak.
        out = torch.where((t == 0)[:, None], self.start, out)
        return torch.where((t == 1)[:, None], self.end, out)

    def length(self, grid: int = 61) -> float:
        """Curve length as the sum of segment norms between `grid` evenly spaced points."""
        pts = self.points(torch.linspace(0, 1, grid))
        return float((pts[1:] - pts[:-1]).norm(dim=1).sum())

    def straight_length(self) -> float:
        return float((self.end - self.start).norm())


class LinearPath(Path):
    """The straight segment from a to b."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        super().__init__(a, b)


class BezierPath(Path):
    """The quadratic Bezier curve from a to b with one control point."""

    def __init__(self, a: torch.Tensor, control: torch.Tensor, b: torch.Tensor):
        super().__init__(a, control, b)

    @classmethod
    def straight(cls, a: torch.Tensor, b: torch.Tensor) -> BezierPath:
        """The curve whose control is the midpoint: the straight segment, as a Bezier curve."""
        return cls(a, (a.detach() + b.detach()) / 2, b)

    @property
    def control(self) -> torch.Tensor:
        return self.controls[1]


class ChainPath(Path):
    """The polygonal chain a -> bend -> b (Garipov et al.'s PolyChain with one bend at t = 0.5):
    a second curve family beside the Bezier curve, straight on each half. A chain whose bend
    is the midpoint is the straight segment, t for t."""

    def __init__(self, a: torch.Tensor, bend: torch.Tensor, b: torch.Tensor):
        super().__init__(a, bend, b)

    def weights(self, t: torch.Tensor) -> torch.Tensor:
        return chain_weights(torch.as_tensor(t, dtype=torch.float32))

    @property
    def control(self) -> torch.Tensor:
        return self.controls[1]


def chain_weights(t: torch.Tensor) -> torch.Tensor:
    """Weights [T, 3] of (a, bend, b) on the one-bend chain at each t; rows sum to 1."""
    first = (1 - 2 * t).clamp(min=0)
    last = (2 * t - 1).clamp(min=0)
    return torch.stack([first, 1 - first - last, last], dim=-1)


CURVES = {"bezier": BezierPath, "chain": ChainPath}  # trainable curve families by name


def _blend(kind: str):
    """t [K] -> weights [K, 3] of (start, control, end) for a curve family."""
    if kind not in CURVES:
        raise ValueError(f"curve must be one of {', '.join(CURVES)}, not {kind!r}")
    return chain_weights if kind == "chain" else (lambda t: bernstein(t, 2))


def bernstein(t: torch.Tensor, degree: int) -> torch.Tensor:
    """Bernstein basis of `degree` at each t: [T, degree + 1]."""
    k = torch.arange(degree + 1, dtype=t.dtype, device=t.device)
    binom = torch.tensor([math.comb(degree, int(i)) for i in k], dtype=t.dtype, device=t.device)
    t = t[:, None]
    return binom * t**k * (1 - t) ** (degree - k)


def even_grid(points: int = 61) -> torch.Tensor:
    """`points` evenly spaced t in [0, 1], both ends included (Garipov et al. use 61)."""
    if points < 2:
        raise ValueError(f"a grid needs at least 2 points (0 and 1), got {points}")
    return torch.linspace(0, 1, points)


# -- coordinates: which vectors a path moves ---------------------------------------------------
def _check_moved(moved: str) -> None:
    if moved not in MOVED:
        raise ValueError(f"moved must be one of {', '.join(MOVED)}, not {moved!r}")


def join(e: torch.Tensor, m: torch.Tensor, moved: str = "e+m") -> torch.Tensor:
    """The path coordinates of a solution: [e; m], or the one vector that moves."""
    _check_moved(moved)
    if moved == "e+m":
        return torch.cat([e, m], dim=-1)
    return (e if moved == "e" else m).clone()


def split(points: torch.Tensor, moved: str = "e+m",
          fixed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(e, m) [T, d] for path points [T, D]; `fixed` is the vector that does not move."""
    _check_moved(moved)
    if moved == "e+m":
        d = points.shape[-1] // 2
        return points[..., :d], points[..., d:]
    if fixed is None:
        raise ValueError(f"a path that moves only {moved} needs the fixed vector")
    fixed = fixed.to(points).expand_as(points)
    return (points, fixed) if moved == "e" else (fixed, points)


def decode_path(decoder: Decoder, path: Path, t: torch.Tensor, targets: torch.Tensor,
                moved: str = "e+m", fixed: torch.Tensor | None = None) -> Decoded:
    """Decode every point of `path` at `t` against one target [N] in one forward pass."""
    e, m = split(path.points(t).to(decoder.loaded.device), moved, fixed)
    targets = torch.as_tensor(targets, device=decoder.loaded.device).reshape(1, -1)
    return decoder(e, m, targets.expand(len(e), -1))


# -- training a curve ---------------------------------------------------------------------------
# a point keeps the text when its accuracy reaches RECONSTRUCTED (the paper's rule)
T_SAMPLING = ("uniform", "worst")


def train_bezier(decoder: Decoder, a: torch.Tensor, b: torch.Tensor, targets: torch.Tensor,
                 steps: int = 150, samples_per_step: int = 8, lr: float = 0.02, seed: int = 0,
                 *, moved: str = "e+m", fixed: torch.Tensor | None = None,
                 grid: int = 61, check_every: int = 0,
                 min_accuracy: float = RECONSTRUCTED, **recipe) -> BezierPath:
    """A quadratic curve from a to b whose control point minimises the reconstruction loss.

    a, b: path coordinates [D] (see `join`); targets: [N] token ids; `fixed`: the vector held
    still when `moved` is "e" or "m"; `recipe`: train_beziers' other keywords. Returns a new
    path; the caller's tensors are untouched.
    """
    fixed = None if fixed is None else fixed[None]
    return train_beziers(decoder, a[None], b[None], torch.as_tensor(targets)[None], steps,
                         samples_per_step, lr, seed, moved=moved, fixed=fixed, grid=grid,
                         check_every=check_every, min_accuracy=min_accuracy, **recipe)[0]


def train_beziers(decoder: Decoder, a: torch.Tensor, b: torch.Tensor, targets: torch.Tensor,
                  steps: int = 150, samples_per_step: int = 8, lr: float = 0.02, seed: int = 0,
                  *, moved: str = "e+m", fixed: torch.Tensor | None = None,
                  grid: int = 61, check_every: int = 0,
                  min_accuracy: float = RECONSTRUCTED, kind: str = "bezier",
                  midpoint_steps: int = 0, t_sampling: str = "uniform",
                  check_grid: int | None = None,
                  on_step: Callable[[int, int, int], None] | None = None) -> list[Path]:
    """Train P curves at once: a, b [P, D], targets [P, N], fixed [P, d] or None.

    `kind` is the curve family: "bezier" (quadratic, the paper's) or "chain" (one bend).

    Each step samples `samples_per_step` t ~ U(0, 1) per curve and decodes all the batch's
    points in ONE decoder call (the Garipov recipe, with several t per step to cut the gradient
    noise). Adam acts elementwise, so summing the curves' losses keeps their updates
    independent. Two options change where the points are drawn:
    - `midpoint_steps` k > 0, a midpoint start: a curve first trains on its point at t = 0.5
      alone (one point a step) until that point reconstructs the text or k steps are spent.
      The point at 0.5 is (a + b)/4 + c/2, so this IS fitting a solution from the midpoint
      (a + b)/2 by Adam on the moved vector at lr / 2, and the control that ends it is
      c = 2x - (a + b)/2: the curve then passes through that solution x. Those steps count.
    - `t_sampling` "worst": one of each step's t is drawn within half a check-grid spacing of
      the curve's worst point at its last check, the others uniformly.

    With `check_every` k > 0 a curve is trained until it answers: before the first step and
    every k steps it is decoded on `check_grid` points (a subset of the `grid`: every
    (grid - 1)/(check_grid - 1)-th point; default the whole grid), and a curve whose worst
    point there reconstructs is decoded on the whole `grid`; one whose worst point there
    reaches `min_accuracy` stops (each curve on its own; the rest of the batch trains on). A
    curve that never holds uses the whole budget `steps`. Every returned curve carries `held`
    (its worst grid point keeps the text), `steps_used` (optimiser steps it took, its midpoint
    steps included), `midpoint_steps` (those of them spent on the midpoint alone), `evaluations`
    (decoder evaluations its training steps made) and `trained_steps` (steps behind the
    returned control point). A curve that did not hold and whose mean grid loss ended above
    its straight start's is returned straight (`trained_steps` 0): stochastic t can
    overshoot, and a worse curve answers nothing. `on_step(step, training, held, loss)` is
    called after every step with the number of curves still training, held so far, and the
    step's mean loss over the curves it trained.
    """
    _check_moved(moved)
    blend = _blend(kind)
    check_grid = grid if check_grid is None else check_grid
    if steps < 0 or samples_per_step < 1 or check_every < 0 or midpoint_steps < 0:
        raise ValueError(f"need steps >= 0, samples_per_step >= 1, check_every >= 0 and "
                         f"midpoint_steps >= 0, got {steps}, {samples_per_step}, {check_every} "
                         f"and {midpoint_steps}")
    if t_sampling not in T_SAMPLING:
        raise ValueError(f"t_sampling must be one of {', '.join(T_SAMPLING)}, not {t_sampling!r}")
    if check_grid < 2 or (grid - 1) % (check_grid - 1):
        raise ValueError(f"check_grid must be at least 2 and a subset of the {grid}-point grid "
                         f"((grid - 1) divisible by (check_grid - 1)), got {check_grid}")
    device = decoder.loaded.device
    a, b = a.detach().float().to(device), b.detach().float().to(device)
    targets = torch.as_tensor(targets, device=device)
    fixed = None if fixed is None else fixed.detach().float().to(device)
    n_curves = len(a)
    straight = (a + b) / 2
    control = straight.clone().requires_grad_(True)
    checker = _Checker(decoder, a, b, targets, moved, fixed, grid, check_grid, blend,
                       min_accuracy)
    start_loss, start_acc, _ = _grid_eval(decoder, a, straight, b, targets, moved, fixed, grid,
                                          blend)
    held = (start_acc >= min_accuracy).cpu()
    used = torch.zeros(n_curves, dtype=torch.long)
    on_mid = torch.full((n_curves,), midpoint_steps > 0) & ~held
    mid_used = torch.zeros(n_curves, dtype=torch.long)
    points_used = torch.zeros(n_curves, dtype=torch.long)
    worst_t = torch.full((n_curves,), 0.5)
    # Adam keeps moving a row on its momentum after its gradient stops, so a curve that
    # holds is snapshotted when it stops and the snapshot is what it returns.
    stopped = straight.clone()
    active = ~held if check_every else torch.ones(n_curves, dtype=torch.bool)
    optimiser = torch.optim.Adam([control], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    spacing = 0.5 / (check_grid - 1)
    for step in range(1, steps + 1):
        if not bool(active.any()):
            break
        # Every curve draws its t each step, so a curve's t stream does not depend on which
        # others are still training.
        t = torch.rand(n_curves, samples_per_step, generator=generator)
        if t_sampling == "worst":
            t[:, 0] = (worst_t + (2 * t[:, 0] - 1) * spacing).clamp(0, 1)
        owner, t_points = _step_points(active, on_mid, t)
        loss, acc = _point_loss(decoder, a, control, b, targets, moved, fixed, blend,
                                owner.to(device), t_points.to(device))
        optimiser.zero_grad()
        loss.sum().backward()
        optimiser.step()
        step_loss = float(loss.detach()[owner.unique().to(loss.device)].mean())
        used[active] += 1
        points_used += torch.bincount(owner, minlength=n_curves)
        mid_now = active & on_mid
        mid_used[mid_now] += 1
        if bool(mid_now.any()):  # the midpoint's accuracy was read before this step's update
            first = torch.zeros(n_curves, dtype=torch.bool)
            first_acc = torch.zeros(n_curves)
            first_acc[owner] = acc.cpu()
            first[mid_now] = (first_acc[mid_now] >= min_accuracy) | (mid_used[mid_now]
                                                                      >= midpoint_steps)
            on_mid &= ~first
        if check_every and (step % check_every == 0 or step == steps):
            idx = (active & ~on_mid).nonzero().flatten()
            if len(idx):
                now_held, worst = checker(control.detach(), idx)
                worst_t[idx] = worst
                done = idx[now_held]
                held[done], active[done] = True, False
                stopped[done.to(device)] = control.detach()[done.to(device)]
        if on_step is not None:
            on_step(step, int(active.sum()), int(held.sum()), step_loss)
    control = torch.where(active.to(device)[:, None] | ~held.to(device)[:, None],
                          control.detach(), stopped)
    end_loss, end_acc, _ = _grid_eval(decoder, a, control, b, targets, moved, fixed, grid,
                                      blend)
    # Judged on the control point returned, so `held` always describes the curve as stored.
    held = end_acc.cpu() >= min_accuracy
    kept = (held.to(device) | (end_loss <= start_loss)).cpu()
    control = torch.where(kept.to(device)[:, None], control, straight)
    curves = []
    for i in range(n_curves):
        curve = CURVES[kind](a[i], control[i], b[i])
        curve.steps_used = int(used[i])
        curve.midpoint_steps = int(mid_used[i])
        curve.evaluations = int(points_used[i])
        curve.trained_steps = int(used[i]) if bool(kept[i]) else 0
        curve.held = bool(held[i]) if bool(kept[i]) else bool(start_acc[i] >= min_accuracy)
        curves.append(curve)
    return curves


def _step_points(active: torch.Tensor, on_mid: torch.Tensor,
                 t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which curve each of a step's points belongs to, and its t: one point at 0.5 for a curve
    on its midpoint, its `samples_per_step` drawn t for a curve training as a whole."""
    curve_rows = (active & ~on_mid).nonzero().flatten()
    mid_rows = (active & on_mid).nonzero().flatten()
    samples = t.shape[1]
    owner = torch.cat([curve_rows.repeat_interleave(samples), mid_rows])
    t_points = torch.cat([t[curve_rows].reshape(-1), torch.full((len(mid_rows),), 0.5)])
    return owner, t_points


def _point_loss(decoder, a, control, b, targets, moved, fixed, blend, owner: torch.Tensor,
                t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each curve's mean summed loss over its points this step [P] (differentiable in
    `control`; 0 for a curve with none) and every point's accuracy [K]."""
    w = blend(t)
    points = w[:, :1] * a[owner] + w[:, 1:2] * control[owner] + w[:, 2:] * b[owner]
    e, m = split(points, moved, None if fixed is None else fixed[owner])
    out = decoder(e, m, targets[owner], grad=True)
    counts = torch.bincount(owner, minlength=len(a)).clamp(min=1).to(out.total_loss.dtype)
    per_curve = torch.zeros(len(a), dtype=out.total_loss.dtype, device=a.device)
    per_curve = per_curve.index_add(0, owner, out.total_loss) / counts
    return per_curve, out.accuracy.detach()


class _Checker:
    """Does a curve hold? Decoded on the coarse check grid, then on the whole grid where the
    coarse one holds (the coarse points are grid points, so a coarse failure is a failure)."""

    def __init__(self, decoder, a, b, targets, moved, fixed, grid, check_grid, blend,
                 min_accuracy):
        self.args = (decoder, a, b, targets, moved, fixed)
        self.grid, self.check_grid, self.blend = grid, check_grid, blend
        self.min_accuracy = min_accuracy

    def __call__(self, control: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Held (bool [len(idx)]) and the worst coarse t of the curves `idx`."""
        decoder, a, b, targets, moved, fixed = self.args
        on = idx.to(a.device)
        part = None if fixed is None else fixed[on]
        _, acc, worst = _grid_eval(decoder, a[on], control[on], b[on], targets[on], moved, part,
                                   self.check_grid, self.blend)
        held = (acc >= self.min_accuracy).cpu()
        if self.check_grid != self.grid and bool(held.any()):
            fine = held.nonzero().flatten().to(a.device)
            sub = None if part is None else part[fine]
            _, fine_acc, _ = _grid_eval(decoder, a[on][fine], control[on][fine], b[on][fine],
                                        targets[on][fine], moved, sub, self.grid, self.blend)
            held[held.clone()] = (fine_acc >= self.min_accuracy).cpu()
        return held, worst.cpu()


def _curve_points(a, control, b, t: torch.Tensor, blend=None) -> torch.Tensor:
    """Points [P, S, D] of P curves at t [P, S] (quadratic Bezier unless `blend` says other
    weights), differentiable in `control`."""
    w = (blend or _blend("bezier"))(t.reshape(-1)).reshape(*t.shape, 3)
    return w[..., :1] * a[:, None] + w[..., 1:2] * control[:, None] + w[..., 2:] * b[:, None]


def _grid_eval(decoder, a, control, b, targets, moved, fixed, grid: int, blend=None,
               per_call: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean summed loss [P], worst accuracy [P] and the t of the worst point [P] (lowest
    accuracy, ties to the highest loss) over an even grid along P curves."""
    t = even_grid(grid).to(a.device)
    losses, worst, worst_t = [], [], []
    for i in range(0, len(a), per_call):
        j = slice(i, i + per_call)
        points = _curve_points(a[j], control[j], b[j], t.expand(len(a[j]), -1), blend)
        n_curves, n_samples, width = points.shape
        part = None if fixed is None else fixed[j].repeat_interleave(n_samples, 0)
        e, m = split(points.reshape(-1, width), moved, part)
        out = decoder(e, m, targets[j].repeat_interleave(n_samples, 0))
        loss = out.total_loss.reshape(n_curves, n_samples)
        acc = out.accuracy.reshape(n_curves, n_samples)
        losses.append(loss.mean(1))
        worst.append(acc.min(1).values)
        # lowest accuracy first, then highest loss: accuracy dominates by construction
        worst_t.append(t[(acc * 1e6 - loss / (loss.abs().max() + 1)).argmin(1)])
    return torch.cat(losses), torch.cat(worst), torch.cat(worst_t)
