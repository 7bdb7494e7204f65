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

import torch

from .decoder import Decoded, Decoder
from .tables import RECONSTRUCTED

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


def train_bezier(decoder: Decoder, a: torch.Tensor, b: torch.Tensor, targets: torch.Tensor,
                 steps: int = 150, samples_per_step: int = 8, lr: float = 0.02, seed: int = 0,
                 *, moved: str = "e+m", fixed: torch.Tensor | None = None,
                 grid: int = 61, check_every: int = 0,
                 min_accuracy: float = RECONSTRUCTED) -> BezierPath:
    """A quadratic curve from a to b whose control point minimises the reconstruction loss.

    a, b: path coordinates [D] (see `join`); targets: [N] token ids; `fixed`: the vector held
    still when `moved` is "e" or "m". Returns a new path; the caller's tensors are untouched.
    """
    fixed = None if fixed is None else fixed[None]
    return train_beziers(decoder, a[None], b[None], torch.as_tensor(targets)[None], steps,
                         samples_per_step, lr, seed, moved=moved, fixed=fixed, grid=grid,
                         check_every=check_every, min_accuracy=min_accuracy)[0]


def train_beziers(decoder: Decoder, a: torch.Tensor, b: torch.Tensor, targets: torch.Tensor,
                  steps: int = 150, samples_per_step: int = 8, lr: float = 0.02, seed: int = 0,
                  *, moved: str = "e+m", fixed: torch.Tensor | None = None,
                  grid: int = 61, check_every: int = 0,
                  min_accuracy: float = RECONSTRUCTED, kind: str = "bezier",
                  on_step=None) -> list[Path]:
    """Train P curves at once: a, b [P, D], targets [P, N], fixed [P, d] or None.

    `kind` is the curve family: "bezier" (quadratic, the paper's) or "chain" (one bend).
    `on_step(step, active, held)`, when given, is called after every optimiser step with the
    number of curves still training and of curves that hold so far (progress; no effect).

    Each step samples `samples_per_step` t ~ U(0, 1) per curve and decodes all P x S points in
    ONE decoder call (the Garipov recipe, with several t per step to cut the gradient noise).
    Adam acts elementwise, so summing the curves' losses keeps their updates independent.

    With `check_every` k > 0 a curve is trained until it answers: before the first step and
    every k steps its whole `grid` is decoded, and a curve whose worst grid point reaches
    `min_accuracy` stops there (each curve on its own; the rest of the batch trains on). A
    curve that never holds uses the whole budget `steps`. Every returned curve carries
    `held` (its worst grid point keeps the text), `steps_used` (optimiser steps it took) and
    `trained_steps` (steps behind the returned control point). A curve that did not hold and
    whose mean grid loss ended above its straight start's is returned straight
    (`trained_steps` 0): stochastic t can overshoot, and a worse curve answers nothing.
    """
    _check_moved(moved)
    blend = _blend(kind)
    if steps < 0 or samples_per_step < 1 or check_every < 0:
        raise ValueError(f"need steps >= 0, samples_per_step >= 1 and check_every >= 0, got "
                         f"{steps}, {samples_per_step} and {check_every}")
    device = decoder.loaded.device
    a, b = a.detach().float().to(device), b.detach().float().to(device)
    targets = torch.as_tensor(targets, device=device)
    fixed = None if fixed is None else fixed.detach().float().to(device)
    n_curves = len(a)
    straight = (a + b) / 2
    control = straight.clone().requires_grad_(True)
    start_loss, start_acc = _grid_eval(decoder, a, straight, b, targets, moved, fixed, grid,
                                       blend)
    held = (start_acc >= min_accuracy).cpu()
    used = torch.zeros(n_curves, dtype=torch.long)
    # Adam keeps moving a row on its momentum after its gradient stops, so a curve that
    # holds is snapshotted when it stops and the snapshot is what it returns.
    stopped = straight.clone()
    active = ~held if check_every else torch.ones(n_curves, dtype=torch.bool)
    optimiser = torch.optim.Adam([control], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        if not bool(active.any()):
            break
        # Every curve draws its t each step, so a curve's t stream does not depend on which
        # others are still training.
        t = torch.rand(n_curves, samples_per_step, generator=generator).to(device)
        idx = active.nonzero().flatten().to(device)
        part = None if fixed is None else fixed[idx]
        loss = _sample_loss(decoder, a[idx], control[idx], b[idx], targets[idx], t[idx],
                            moved, part, blend)
        optimiser.zero_grad()
        loss.sum().backward()
        optimiser.step()
        used[active] += 1
        if check_every and (step % check_every == 0 or step == steps):
            idx_cpu = active.nonzero().flatten()
            _, acc = _grid_eval(decoder, a[idx], control.detach()[idx], b[idx], targets[idx],
                                moved, part, grid, blend)
            now_held = acc.cpu() >= min_accuracy
            done = idx_cpu[now_held]
            held[done], active[done] = True, False
            stopped[done.to(device)] = control.detach()[done.to(device)]
        if on_step is not None:
            on_step(step, int(active.sum()), int(held.sum()))
    control = torch.where(active.to(device)[:, None] | ~held.to(device)[:, None],
                          control.detach(), stopped)
    end_loss, end_acc = _grid_eval(decoder, a, control, b, targets, moved, fixed, grid, blend)
    # Judged on the control point returned, so `held` always describes the curve as stored.
    held = end_acc.cpu() >= min_accuracy
    kept = (held.to(device) | (end_loss <= start_loss)).cpu()
    control = torch.where(kept.to(device)[:, None], control, straight)
    curves = []
    for i in range(n_curves):
        curve = CURVES[kind](a[i], control[i], b[i])
        curve.steps_used = int(used[i])
        curve.trained_steps = int(used[i]) if bool(kept[i]) else 0
        curve.held = bool(held[i]) if bool(kept[i]) else bool(start_acc[i] >= min_accuracy)
        curves.append(curve)
    return curves


def _curve_points(a, control, b, t: torch.Tensor, blend=None) -> torch.Tensor:
    """Points [P, S, D] of P curves at t [P, S] (quadratic Bezier unless `blend` says other
    weights), differentiable in `control`."""
    w = (blend or _blend("bezier"))(t.reshape(-1)).reshape(*t.shape, 3)
    return w[..., :1] * a[:, None] + w[..., 1:2] * control[:, None] + w[..., 2:] * b[:, None]


def _decode_many(decoder, points, targets, moved, fixed, grad: bool) -> torch.Tensor:
    """Summed loss [P, S] of points [P, S, D], each curve against its own target row."""
    n_curves, n_samples, width = points.shape
    flat_fixed = None if fixed is None else fixed.repeat_interleave(n_samples, 0)
    e, m = split(points.reshape(-1, width), moved, flat_fixed)
    out = decoder(e, m, targets.repeat_interleave(n_samples, 0), grad=grad)
    return out.total_loss.reshape(n_curves, n_samples)


def _sample_loss(decoder, a, control, b, targets, t, moved, fixed, blend=None) -> torch.Tensor:
    points = _curve_points(a, control, b, t, blend)
    return _decode_many(decoder, points, targets, moved, fixed, grad=True).mean(1)


def _grid_eval(decoder, a, control, b, targets, moved, fixed, grid: int, blend=None,
               per_call: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean summed loss [P] and worst accuracy [P] over the evaluation grid of P curves."""
    t = even_grid(grid).to(a.device)
    losses, worst = [], []
    for i in range(0, len(a), per_call):
        j = slice(i, i + per_call)
        points = _curve_points(a[j], control[j], b[j], t.expand(len(a[j]), -1), blend)
        n_curves, n_samples, width = points.shape
        part = None if fixed is None else fixed[j].repeat_interleave(n_samples, 0)
        e, m = split(points.reshape(-1, width), moved, part)
        out = decoder(e, m, targets[j].repeat_interleave(n_samples, 0))
        losses.append(out.total_loss.reshape(n_curves, n_samples).mean(1))
        worst.append(out.accuracy.reshape(n_curves, n_samples).min(1).values)
    return torch.cat(losses), torch.cat(worst)
