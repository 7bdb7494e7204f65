"""How do we find many proto-token solutions at once? The batched fitting engine.

A *problem* is one (text prefix, seed) to solve; problems that share a vector form a *group*
(share `m`: one m for the group, e per problem; share `e`: the reverse; share `none`: every
problem is its own group). All active problems of one length run in one forward/backward pass
of the frozen model. A group leaves the batch once every member reconstructs its text at the
recipe's stop accuracy (all together, since a shared vector still moving could undo a member
that stopped early) or once its budget is spent; waiting groups take its place, so the batch
stays full. The optimiser is Adam(W) written per row, so each vector keeps its own step count:
a restarted vector starts a fresh Adam state without disturbing its neighbours in the batch.

The best vectors seen are kept per group (highest mean accuracy, then lowest loss). A problem
whose best accuracy has not improved for `recipe.patience` steps restarts from a new
deterministic seed; a non-finite loss, value or gradient restarts it at once, and a problem out
of restarts ends as `failed`. Every initial vector is drawn from a generator seeded by the
problem's (text_id, seed, restart), so results do not depend on batch composition.

Share groups (`recipe.share_policy`). A share group is one joint optimisation, so one member
that never becomes exact would keep all of them running to the budget. Under `release` (the
default recipe's policy):
- a member that reconstructs its text is never restarted, and its own vector keeps training:
  its gradient keeps it exact while the shared vector still moves for the others (a frozen
  exact e would be left behind by the moving m);
- a member stuck for `patience` steps restarts its OWN vector only; the shared vector and its
  optimiser state keep going, so the restarted member starts against a shared vector the
  others already shaped;
- the group's kept vectors are its best snapshot by (number of exact members, mean accuracy,
  loss), all members at the same step, so the kept shared vector reconstructs every member
  counted exact;
- the group stops when every member is exact at once (`converged`), when its best has gained
  neither an exact member nor mean accuracy for `recipe.group_patience` steps (a loss that
  keeps creeping down is no progress) while at least one member is exact (the
  members exact in it are kept as `converged`, the others are marked `stalled`), or at the
  budget (exact members `converged`, the others `budget`).
Under `wait` (the paper recipe's) the group runs until all members are exact or its budget is
spent, members stuck for `patience` steps restart even when exact, the best snapshot is the
highest mean accuracy, and every member gets the group's status.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..errors import ProtoscopeError
from .decoder import Decoder
from .recipes import Recipe

SHARES = ("none", "m", "e")


class Checkpoint(Protocol):
    """Where a fit keeps its groups in flight (the run store's is store/checkpoints.FitCheckpoint):
    the engine only asks when to save, saves, loads and clears, per length."""

    def due(self) -> bool: ...
    def save(self, length: int, tensors: dict[str, torch.Tensor], state: dict) -> None: ...
    def load(self, length: int) -> tuple[dict[str, torch.Tensor], dict] | None: ...
    def clear(self, length: int) -> None: ...


@dataclass(frozen=True)
class Problem:
    """One solution to find: a target prefix and a seed (plus an optional warm start)."""

    text_id: str
    seed: int
    targets: tuple[int, ...]
    group: Hashable = None  # problems with equal `group` share the shared vector
    init_e: torch.Tensor | None = field(default=None, compare=False, repr=False)
    init_m: torch.Tensor | None = field(default=None, compare=False, repr=False)
    init_from: int = -1  # solution id the warm start came from

    @property
    def length(self) -> int:
        return len(self.targets)


@dataclass
class Solution:
    """The kept vectors of one problem and how it got there (rows index its group's tensors)."""

    problem: Problem
    e_row: int
    m_row: int
    accuracy: float
    c_tokens: int
    loss: float
    steps: int
    restarts: int
    seconds: float
    converged: bool
    status: str  # converged | budget | stalled | failed
    failure: str | None = None
    # With `trajectory_every` K: the path the search took, one row per K steps and a last row
    # for the kept vectors: [step, restart, accuracy, total loss, e (d), m (d)] (PATH_FIELDS).
    path: torch.Tensor | None = None


PATH_FIELDS = ("step", "restart", "accuracy", "loss")  # a path row's leading columns, then e, m


@dataclass(frozen=True)
class GroupProgress:
    """Where a group still in flight stands: its members, steps, worst member now, exact now."""

    key: Hashable
    members: int
    steps: int
    worst: float
    exact: int
    mean: float = math.nan  # mean accuracy of its members now
    loss: float = math.nan  # mean total loss of its members now


@dataclass
class FittedGroup:
    """A finished group: its solutions and the vectors they index (shared ones stored once)."""

    key: Hashable
    solutions: list[Solution]
    e: torch.Tensor  # [rows, d]
    m: torch.Tensor


def stable_seed(material: str) -> int:
    """A generator seed from a stable hash of `material` (the same on every machine)."""
    return int.from_bytes(hashlib.sha256(material.encode()).digest()[:8], "little") >> 1


def seeded_vector(material: str, d: int, scale: float) -> torch.Tensor:
    """A N(0, scale^2) vector drawn from a generator seeded by a stable hash of `material`."""
    return torch.randn(d, generator=torch.Generator().manual_seed(stable_seed(material))) * scale


def start_vector(p: Problem, name: str, restart: int, d: int, scale: float) -> torch.Tensor:
    """The recipe's random start of a problem's own e or m at a restart (0: its first)."""
    return seeded_vector(f"{p.text_id}|{p.seed}|{restart}|{name}", d, scale)


class _RowAdam:
    """Adam / AdamW over the rows of a [R, d] tensor, each row with its own step count."""

    def __init__(self, rows: int, d: int, recipe: Recipe, device):
        self.recipe = recipe
        self.m1 = torch.zeros(rows, d, device=device)
        self.m2 = torch.zeros(rows, d, device=device)
        self.t = torch.zeros(rows, device=device)

    def step(self, param: torch.Tensor, grad: torch.Tensor, active: torch.Tensor) -> None:
        """Update the rows where `active` is true; the other rows and their state stay put."""
        r = self.recipe
        grad = torch.where(active[:, None], grad, 0.0)
        if r.optimizer == "adam" and r.weight_decay:
            grad = grad + r.weight_decay * param
        self.t += active.float()
        self.m1.lerp_(grad, torch.where(active, 1 - r.beta1, 0.0)[:, None])
        self.m2.lerp_(grad * grad, torch.where(active, 1 - r.beta2, 0.0)[:, None])
        t = self.t.clamp(min=1)[:, None]
        lr = r.lr * _schedule(r, t) * active.float()[:, None]
        if r.optimizer == "adamw" and r.weight_decay:
            param.mul_(1 - lr * r.weight_decay)
        denom = (self.m2 / (1 - r.beta2**t)).sqrt() + r.eps
        param.sub_(lr * (self.m1 / (1 - r.beta1**t)) / denom)

    def reset(self, rows: torch.Tensor) -> None:
        self.m1[rows] = 0
        self.m2[rows] = 0
        self.t[rows] = 0

    def select(self, keep: torch.Tensor) -> None:
        self.m1, self.m2, self.t = self.m1[keep], self.m2[keep], self.t[keep]

    def extend(self, rows: int) -> None:
        d = self.m1.shape[1]
        zeros = lambda *s: torch.zeros(*s, device=self.m1.device)  # noqa: E731
        self.m1 = torch.cat([self.m1, zeros(rows, d)])
        self.m2 = torch.cat([self.m2, zeros(rows, d)])
        self.t = torch.cat([self.t, zeros(rows)])


def _schedule(r: Recipe, t: torch.Tensor) -> torch.Tensor | float:
    if r.schedule == "constant":
        return 1.0
    progress = (t / r.max_steps).clamp(max=1.0)
    return 0.1 + 0.9 * 0.5 * (1 + torch.cos(math.pi * progress))


def make_groups(problems: Sequence[Problem], share: str) -> dict[Hashable, list[Problem]]:
    """Problems by group key: every problem alone when nothing is shared."""
    if share not in SHARES:
        raise ProtoscopeError(f"unknown share mode {share!r}: allowed are {', '.join(SHARES)}")
    groups: dict[Hashable, list[Problem]] = {}
    for i, p in enumerate(problems):
        key = (p.text_id, p.seed, p.length) if share == "none" else (p.group, p.length)
        groups.setdefault(key, []).append(p)
    return groups


class Fitter:
    """Fits groups of problems in batches; calls `on_group` as each group finishes."""

    def __init__(self, decoder: Decoder, recipe: Recipe, share: str = "none",
                 batch_size: int | None = None, progress: Callable | None = None,
                 on_step: Callable | None = None, checkpoint: Checkpoint | None = None,
                 on_groups: Callable | None = None, frozen_m: torch.Tensor | None = None,
                 trajectory_every: int = 0):
        if share not in SHARES:
            raise ProtoscopeError(f"unknown share mode {share!r}: allowed are {', '.join(SHARES)}")
        self.decoder, self.recipe, self.share = decoder, recipe, share
        self.batch_size = batch_size
        self.progress = progress  # called with each finished FittedGroup
        self.on_step = on_step  # called with the accuracies of the active problems each step
        self.checkpoint = checkpoint  # saves the in-flight groups now and then (checkpoints.py)
        self.on_groups = on_groups  # called each step with GroupProgress of the groups in flight
        # every this many steps each problem's vectors are kept as its path (0: no paths)
        self.trajectory_every = int(trajectory_every)
        # A universal m (frozen.py): every problem's m starts there and never moves or restarts.
        self.frozen_m = None if frozen_m is None else frozen_m.detach().float().cpu().clone()
        info = decoder.loaded.info
        self.d = info.d_model
        self.scale = recipe.init_scale * (info.embedding_std if recipe.init == "embedding" else 1.0)
        self.device = decoder.loaded.device

    def auto_batch_size(self, length: int) -> int:
        """Problems per batch: about 512 (CPU) or 16384 (GPU) target tokens in flight.

        On CPU 512 is the measured best (`python -m protoscope.bench.batch_size`): at 16 and
        32 tokens 1024 tokens in flight ran at 0.66 and 0.74 of its problem-steps/s, 256 at
        0.98; past 512 the step's activations (the head's logits alone are 4 bytes x vocab per
        token) outgrow the caches. The GPU figure is untested here."""
        budget = 512 if self.device.type == "cpu" else 16384
        return max(1, min(256, budget // max(1, length)))

    def fit(self, problems: Sequence[Problem],
            on_group: Callable[[FittedGroup], None] | None = None) -> list[FittedGroup]:
        """Solve every problem; groups are returned (and reported) in the order they finish."""
        if self.recipe.curriculum:
            problems, on_group = self._curriculum(problems, on_group)
        groups = make_groups(problems, self.share)
        by_length: dict[int, list] = {}
        for key, members in groups.items():
            by_length.setdefault(members[0].length, []).append((key, members))
        done: list[FittedGroup] = []
        for length in sorted(by_length):
            batch = _Batch(self, length, by_length[length])
            saved = self.checkpoint.load(length) if self.checkpoint else None
            if saved:
                batch.restore(*saved)
                # Problems the checkpointed fit did not hold (a caller that asks for more than
                # it did then) wait behind its queue instead of being dropped.
                known = {(p.text_id, p.seed) for p in batch.problems}
                known |= {(p.text_id, p.seed) for _, members in batch.queue for p in members}
                extra = [p for _, members in by_length[length] for p in members
                         if (p.text_id, p.seed) not in known]
                batch.queue += list(make_groups(extra, self.share).items())
            for group in batch.run():
                done.append(group)
                if on_group:
                    on_group(group)
                if self.progress:
                    self.progress(group)
            if self.checkpoint:
                self.checkpoint.clear(length)
        return done


    def _curriculum(self, problems: Sequence[Problem], on_group):
        """Fit the N/4 and N/2 prefixes first (recipe.curriculum); return the full-length
        problems warm-started from the N/2 stage and an `on_group` that adds the earlier
        stages' steps, restarts and seconds to each solution."""
        from dataclasses import replace

        stage_fitter = Fitter(self.decoder, replace(self.recipe, curriculum=False), share=self.share,
                              batch_size=self.batch_size, on_step=self.on_step,
                              on_groups=self.on_groups, frozen_m=self.frozen_m,
                              trajectory_every=self.trajectory_every)
        current = list(problems)
        spent: dict[tuple, list[float]] = {(p.text_id, p.seed): [0, 0, 0.0] for p in problems}
        if len(spent) != len(problems):
            raise ProtoscopeError("a length curriculum fits one length per (text, seed) at a time")
        for divisor in (4, 2):
            stage = [replace(p, targets=full.targets[:max(1, full.length // divisor)])
                     for p, full in zip(current, problems)]
            stage = [p for p, full in zip(stage, problems) if p.length < full.length]
            if not stage:
                continue
            warm = {}
            for group in stage_fitter.fit(stage):
                for s in group.solutions:
                    key = (s.problem.text_id, s.problem.seed)
                    warm[key] = (group.e[s.e_row], group.m[s.m_row])
                    spent[key][0] += s.steps
                    spent[key][1] += s.restarts
                    spent[key][2] += s.seconds
            current = [replace(p, init_e=warm[(p.text_id, p.seed)][0], init_m=warm[(p.text_id, p.seed)][1])
                       if (p.text_id, p.seed) in warm else p for p in problems]

        def count_all(group: FittedGroup) -> None:
            for s in group.solutions:
                steps, restarts, seconds = spent[(s.problem.text_id, s.problem.seed)]
                s.steps, s.restarts, s.seconds = s.steps + int(steps), s.restarts + int(restarts), s.seconds + seconds
            if on_group:
                on_group(group)

        return current, count_all


class _Batch:
    """The active problems of one length: vectors, optimiser state and bookkeeping as tensors."""

    def __init__(self, fitter: Fitter, length: int, queue: list):
        self.f, self.r, self.length = fitter, fitter.recipe, length
        self.queue = list(queue)
        self.capacity = fitter.batch_size or fitter.auto_batch_size(length)
        dev, d = fitter.device, fitter.d
        self.E = torch.zeros(0, d, device=dev)
        self.M = torch.zeros(0, d, device=dev)
        self.adam_e = _RowAdam(0, d, self.r, dev)
        self.adam_m = _RowAdam(0, d, self.r, dev)
        self.best_e, self.best_m = self.E.clone(), self.M.clone()
        self.e_group = torch.zeros(0, dtype=torch.long, device=dev)  # group slot of each row
        self.m_group = torch.zeros(0, dtype=torch.long, device=dev)
        self.problems: list[Problem] = []
        self.keys: list[Hashable] = []
        cols = ("group", "e_row", "m_row", "steps", "restarts", "since")
        self.p = {c: torch.zeros(0, dtype=torch.long, device=dev) for c in cols}
        for c in ("seconds", "run_best", "snap_acc", "snap_loss", "snap_c", "acc_now", "loss_now"):
            self.p[c] = torch.zeros(0, device=dev)
        self.g_acc = torch.zeros(0, device=dev)
        self.g_loss = torch.zeros(0, device=dev)
        self.g_exact = torch.zeros(0, device=dev)  # exact members in the group's best snapshot
        self.g_since = torch.zeros(0, dtype=torch.long, device=dev)  # steps since that best improved
        self.release = self.r.share_policy == "release"
        self.failures: dict[int, str] = {}  # id(problem) -> reason of the last fault
        self.paths: dict[int, list[torch.Tensor]] = {}  # id(problem) -> its path rows so far

    # -- membership -------------------------------------------------------------------------
    def admit(self) -> None:
        while self.queue and (not self.problems or
                              len(self.problems) + len(self.queue[0][1]) <= self.capacity):
            key, members = self.queue.pop(0)
            self._add_group(key, members)

    def _add_group(self, key, members: list[Problem]) -> None:
        dev, slot = self.f.device, len(self.keys)
        own_e = self.f.share != "e"
        own_m = self.f.share != "m"
        e_rows = [self._init(p, "e", 0) for p in members] if own_e else [self._init(members[0], "e", 0, key)]
        m_rows = [self._init(p, "m", 0) for p in members] if own_m else [self._init(members[0], "m", 0, key)]
        e0, m0 = len(self.E), len(self.M)
        k = len(members)
        new = {
            "group": [slot] * k,
            "e_row": [e0 + (i if own_e else 0) for i in range(k)],
            "m_row": [m0 + (i if own_m else 0) for i in range(k)],
            # Unknown until a finite evaluation is snapshot: a problem that fails on its first
            # step must not report a perfect loss of 0.
            "snap_loss": [math.nan] * k,
        }
        for c, t in self.p.items():
            vals = new.get(c, [0] * k)
            self.p[c] = torch.cat([t, torch.tensor(vals, dtype=t.dtype, device=dev)])
        for name, rows in (("e", e_rows), ("m", m_rows)):
            block = torch.stack(rows).to(dev)
            setattr(self, name.upper(), torch.cat([getattr(self, name.upper()), block]))
            setattr(self, f"best_{name}", torch.cat([getattr(self, f"best_{name}"), block]))
            grp = torch.full((len(rows),), slot, dtype=torch.long, device=dev)
            setattr(self, f"{name}_group", torch.cat([getattr(self, f"{name}_group"), grp]))
            getattr(self, f"adam_{name}").extend(len(rows))
        self.problems += members
        self.keys.append(key)
        self.g_acc = torch.cat([self.g_acc, torch.full((1,), -1.0, device=dev)])
        self.g_loss = torch.cat([self.g_loss, torch.full((1,), math.inf, device=dev)])
        self.g_exact = torch.cat([self.g_exact, torch.full((1,), -1.0, device=dev)])
        self.g_since = torch.cat([self.g_since, torch.zeros(1, dtype=torch.long, device=dev)])

    def _init(self, p: Problem, name: str, restart: int, shared_key=None) -> torch.Tensor:
        if name == "m" and self.f.frozen_m is not None:
            return self.f.frozen_m.clone()
        warm = p.init_e if name == "e" else p.init_m
        if restart == 0 and warm is not None:
            return warm.detach().float().cpu().clone()
        if shared_key is not None:
            return seeded_vector(f"shared|{shared_key}|{restart}|{name}", self.f.d, self.f.scale)
        return start_vector(p, name, restart, self.f.d, self.f.scale)

    def drop(self, slots: list[int]) -> None:
        dev = self.f.device
        gone = torch.tensor(slots, dtype=torch.long, device=dev)
        keep_g = ~torch.isin(torch.arange(len(self.keys), device=dev), gone)
        keep_p = ~torch.isin(self.p["group"], gone)
        keep_e = ~torch.isin(self.e_group, gone)
        keep_m = ~torch.isin(self.m_group, gone)
        new_slot = torch.cumsum(keep_g.long(), 0) - 1
        new_e, new_m = torch.cumsum(keep_e.long(), 0) - 1, torch.cumsum(keep_m.long(), 0) - 1
        self.p = {c: t[keep_p] for c, t in self.p.items()}
        self.p["group"] = new_slot[self.p["group"]]
        self.p["e_row"], self.p["m_row"] = new_e[self.p["e_row"]], new_m[self.p["m_row"]]
        self.E, self.best_e, self.e_group = self.E[keep_e], self.best_e[keep_e], new_slot[self.e_group[keep_e]]
        self.M, self.best_m, self.m_group = self.M[keep_m], self.best_m[keep_m], new_slot[self.m_group[keep_m]]
        self.adam_e.select(keep_e)
        self.adam_m.select(keep_m)
        kp = keep_p.tolist()
        self.problems = [p for p, k in zip(self.problems, kp) if k]
        self.keys = [k for k, kg in zip(self.keys, keep_g.tolist()) if kg]
        self.g_acc, self.g_loss = self.g_acc[keep_g], self.g_loss[keep_g]
        self.g_exact, self.g_since = self.g_exact[keep_g], self.g_since[keep_g]

    # -- the loop ---------------------------------------------------------------------------
    def run(self):
        self.admit()
        targets_of = lambda: torch.tensor([p.targets for p in self.problems], device=self.f.device)  # noqa: E731
        targets = targets_of()
        checkpoint = self.f.checkpoint
        while self.problems:
            started = time.perf_counter()
            finished = self._step(targets)
            self.p["seconds"] += (time.perf_counter() - started) / len(self.problems)
            if self.f.on_groups:
                self.f.on_groups(self.group_progress())
            if finished:
                # Emitted (and stored by the caller) before the checkpoint below can drop them.
                yield from (self._emit(slot, status) for slot, status in finished)
                self.drop([slot for slot, _ in finished])
                self.admit()
                targets = targets_of() if self.problems else targets
            if checkpoint and self.problems and checkpoint.due():
                checkpoint.save(self.length, *self.state())

    # -- progress and checkpoints -------------------------------------------------------------
    def group_progress(self) -> list[GroupProgress]:
        p, out = self.p, []
        for slot, key in enumerate(self.keys):
            members = p["group"] == slot
            acc, loss = p["acc_now"][members], p["loss_now"][members]
            out.append(GroupProgress(key, int(members.sum()), int(p["steps"][members].min()),
                                     float(acc.min()), int((acc >= self.r.stop_accuracy).sum()),
                                     float(acc.mean()), float(loss[torch.isfinite(loss)].mean())))
        return out

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Everything the loop needs to go on exactly where it is: tensors and a JSON state."""
        tensors = {"E": self.E, "M": self.M, "best_e": self.best_e, "best_m": self.best_m,
                   "e_group": self.e_group, "m_group": self.m_group, "g_acc": self.g_acc,
                   "g_loss": self.g_loss, "g_exact": self.g_exact, "g_since": self.g_since}
        for name in ("e", "m"):
            adam = getattr(self, f"adam_{name}")
            tensors.update({f"adam_{name}.m1": adam.m1, f"adam_{name}.m2": adam.m2, f"adam_{name}.t": adam.t})
        tensors.update({f"p.{c}": t for c, t in self.p.items()})

        def record(prob: Problem, where: str) -> dict:
            for name in ("e", "m"):
                init = getattr(prob, f"init_{name}")
                if init is not None:
                    tensors[f"{where}.init_{name}"] = init.detach().float().cpu()
            return {"text_id": prob.text_id, "seed": prob.seed, "targets": list(prob.targets),
                    "group": prob.group, "init_from": prob.init_from, "where": where}

        index = {id(prob): i for i, prob in enumerate(self.problems)}
        state = {
            "capacity": self.capacity,
            "keys": [list(k) if isinstance(k, tuple) else k for k in self.keys],
            "problems": [record(prob, f"active.{i}") for i, prob in enumerate(self.problems)],
            "queue": [{"key": list(key) if isinstance(key, tuple) else key,
                       "members": [record(prob, f"queue.{g}.{i}") for i, prob in enumerate(members)]}
                      for g, (key, members) in enumerate(self.queue)],
            "failures": {str(index[k]): v for k, v in self.failures.items() if k in index},
            "groups": [{"key": g.key, "members": g.members, "steps": g.steps, "worst": g.worst,
                        "exact": g.exact} for g in self.group_progress()],
        }
        for i, prob in enumerate(self.problems):
            if self.paths.get(id(prob)):
                tensors[f"path.{i}"] = torch.stack(self.paths[id(prob)])
        return tensors, state

    def restore(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        """Go on from a saved state (replacing the queue this batch was built with)."""
        dev = self.f.device

        def problem(rec: dict) -> Problem:
            where = rec["where"]
            inits = {f"init_{n}": tensors.get(f"{where}.init_{n}") for n in ("e", "m")}
            return Problem(rec["text_id"], rec["seed"], tuple(rec["targets"]), group=_key(rec["group"]),
                           init_from=rec["init_from"], **inits)

        for name in ("E", "M", "best_e", "best_m", "e_group", "m_group", "g_acc", "g_loss",
                     "g_exact", "g_since"):
            setattr(self, name, tensors[name].to(dev))
        for name in ("e", "m"):
            adam = getattr(self, f"adam_{name}")
            adam.m1, adam.m2, adam.t = (tensors[f"adam_{name}.{k}"].to(dev) for k in ("m1", "m2", "t"))
        if "p.loss_now" not in tensors:  # a checkpoint written before the loss was kept
            tensors["p.loss_now"] = torch.full_like(tensors["p.acc_now"], math.nan)
        self.p = {c: tensors[f"p.{c}"].to(dev) for c in self.p}
        self.capacity = int(state["capacity"])
        self.keys = [_key(k) for k in state["keys"]]
        self.problems = [problem(rec) for rec in state["problems"]]
        self.queue = [(_key(q["key"]), [problem(rec) for rec in q["members"]]) for q in state["queue"]]
        self.failures = {id(self.problems[int(i)]): v for i, v in state["failures"].items()}
        self.paths = {id(prob): list(tensors[f"path.{i}"]) for i, prob in enumerate(self.problems)
                      if f"path.{i}" in tensors}

    def _step(self, targets: torch.Tensor) -> list[tuple[int, str]]:
        r, p = self.r, self.p
        E = self.E.detach().requires_grad_(True)
        frozen = self.f.frozen_m is not None
        M = self.M.detach().requires_grad_(not frozen)
        out = self.f.decoder(E[p["e_row"]], M[p["m_row"]], targets, grad=True)
        loss = out.total_loss
        finite = torch.isfinite(loss)
        torch.where(finite, loss, 0.0).sum().backward()
        acc, c_tokens, loss = out.accuracy, out.c_tokens.float(), loss.detach()
        p["acc_now"], p["loss_now"] = acc, loss
        # An arrangement without m (`e*`, `mem`) leaves M without a gradient: it stays put.
        grad_e = E.grad if E.grad is not None else torch.zeros_like(E)
        grad_m = M.grad if M.grad is not None else torch.zeros_like(M)
        bad_e = ~(torch.isfinite(grad_e).all(1) & torch.isfinite(self.E).all(1))
        bad_m = ~((torch.isfinite(grad_m).all(1) | frozen) & torch.isfinite(self.M).all(1))
        bad = ~finite | bad_e[p["e_row"]] | bad_m[p["m_row"]]
        n_groups, dev = len(self.keys), acc.device
        group = p["group"]
        # Group verdicts are taken on the vectors just evaluated, before this step's update.
        g_min = torch.full((n_groups,), 2.0, device=dev).scatter_reduce(0, group, acc, "amin")
        g_bad = torch.zeros(n_groups, dtype=torch.long, device=dev).index_add_(0, group, bad.long()) > 0
        converged = (g_min >= r.stop_accuracy) & ~g_bad
        self._keep_best(acc, c_tokens, torch.where(bad, math.inf, loss), force=converged)
        p["steps"] += 1
        improved = acc > p["run_best"]
        p["run_best"] = torch.maximum(p["run_best"], acc)
        p["since"] = torch.where(improved, 0, p["since"] + 1)
        exact = (acc >= r.stop_accuracy) & ~bad
        if self.release:  # an exact member is done, never stuck: it waits for its group
            p["since"] = torch.where(exact, 0, p["since"])
        stuck = (p["since"] >= r.patience) if r.patience > 0 else torch.zeros_like(bad)
        can_restart = (p["restarts"] < r.max_restarts) & (p["steps"] < r.max_steps)
        done = exact if self.release else converged[group]
        restart = (bad | (stuck & ~done)) & can_restart
        failed = bad & ~can_restart
        if self.f.trajectory_every:
            self._record_paths(acc, loss)
        self._update(grad_e, grad_m, restart, bad, bad_e, bad_m)
        if self.f.on_step:
            self.f.on_step(acc)
        g_steps = torch.full((n_groups,), 1 << 62, device=dev).scatter_reduce(0, group, p["steps"], "amin")
        out_of_budget = g_steps >= r.max_steps
        g_failed = torch.zeros(n_groups, dtype=torch.long, device=dev).index_add_(0, group, failed.long()) > 0
        for i in torch.nonzero(failed).flatten().tolist():
            self.failures[id(self.problems[i])] = f"non-finite loss, vector or gradient at step {int(p['steps'][i])}"
        released = ((self.g_since >= r.group_patience) & (self.g_exact >= 1) if self.release
                    else torch.zeros_like(converged))
        finished = []
        for slot in range(n_groups):
            if converged[slot]:
                finished.append((slot, "converged"))
            elif g_failed[slot]:
                finished.append((slot, "failed"))
            elif out_of_budget[slot]:
                finished.append((slot, "budget"))
            elif released[slot]:
                finished.append((slot, "stalled"))
        return finished

    def _record_paths(self, acc: torch.Tensor, loss: torch.Tensor) -> None:
        """Keep the vectors just evaluated (before this step's update) of every problem whose
        step is 1, K + 1, 2K + 1, ...: its path starts at its initial point."""
        p, every = self.p, self.f.trajectory_every
        due = torch.nonzero((p["steps"] - 1) % every == 0).flatten().tolist()
        if not due:
            return
        rows = torch.cat([torch.stack([p["steps"][due].float() - 1, p["restarts"][due].float(),
                                       acc[due].float(), loss[due].float()], 1),
                          self.E[p["e_row"][due]].detach().float(),
                          self.M[p["m_row"][due]].detach().float()], 1).cpu()
        for i, row in zip(due, rows):
            self.paths.setdefault(id(self.problems[i]), []).append(row)

    def _keep_best(self, acc, c_tokens, loss, force) -> None:
        """Snapshot every group whose mean accuracy (then loss) beats its best so far.

        A group that has just converged is always snapshot: those are the vectors it stops with.
        """
        p, n_groups = self.p, len(self.keys)
        count = torch.zeros(n_groups, device=acc.device).index_add_(0, p["group"], torch.ones_like(acc))
        g_acc = torch.zeros(n_groups, device=acc.device).index_add_(0, p["group"], acc) / count
        g_loss = torch.zeros(n_groups, device=acc.device).index_add_(0, p["group"], loss)
        better = (g_acc > self.g_acc) | ((g_acc == self.g_acc) & (g_loss < self.g_loss))
        progress = g_acc > self.g_acc
        if self.release:  # more exact members first: those are the solutions a release keeps
            exact = (acc >= self.r.stop_accuracy).float()
            g_exact = torch.zeros(n_groups, device=acc.device).index_add_(0, p["group"], exact)
            better = (g_exact > self.g_exact) | ((g_exact == self.g_exact) & better)
            progress = (g_exact > self.g_exact) | ((g_exact == self.g_exact) & progress)
        finite = torch.isfinite(g_loss)
        # The release clock counts steps without more exact members or a higher mean accuracy:
        # a loss that keeps creeping down (exact members keep training) is no progress.
        self.g_since = torch.where((progress & finite) | force, 0, self.g_since + 1)
        better = (better & finite) | force
        if not bool(better.any()):
            return
        if self.release:
            self.g_exact = torch.where(better, g_exact, self.g_exact)
        self.g_acc = torch.where(better, g_acc, self.g_acc)
        self.g_loss = torch.where(better, g_loss, self.g_loss)
        rows_e, rows_m, probs = better[self.e_group], better[self.m_group], better[p["group"]]
        self.best_e[rows_e] = self.E[rows_e]
        self.best_m[rows_m] = self.M[rows_m]
        for name, value in (("snap_acc", acc), ("snap_c", c_tokens), ("snap_loss", loss)):
            p[name] = torch.where(probs, value, p[name])

    def _update(self, grad_e, grad_m, restart, bad, bad_e, bad_m) -> None:
        """One Adam step, then fresh vectors for restarted problems (and non-finite rows)."""
        p = self.p
        with torch.no_grad():
            self.adam_e.step(self.E, torch.nan_to_num(grad_e), ~bad_e)
            if self.f.frozen_m is None:
                self.adam_m.step(self.M, torch.nan_to_num(grad_m), ~bad_m)
        if not bool(restart.any()) and not bool(bad_e.any() | bad_m.any()):
            return
        own_e, own_m = self.f.share != "e", self.f.share != "m" and self.f.frozen_m is None
        for i in torch.nonzero(restart).flatten().tolist():
            prob = self.problems[i]
            p["restarts"][i] += 1
            p["since"][i], p["run_best"][i] = 0, 0.0
            if bad[i]:
                self.failures[id(prob)] = f"non-finite loss, vector or gradient at step {int(p['steps'][i])}"
            k = int(p["restarts"][i])
            for name, own in (("e", own_e), ("m", own_m)):
                if own:
                    self._reinit(name, int(p[f"{name}_row"][i]), prob, k)
        for name, bad_rows in (("e", bad_e), ("m", bad_m)):  # a non-finite shared vector
            for row in torch.nonzero(bad_rows).flatten().tolist():
                slot = int(getattr(self, f"{name}_group")[row])
                first = self._first_member(slot)
                restart = int(p["restarts"][first]) + 1  # a fresh draw each time it goes bad
                self._reinit(name, row, self.problems[first], restart, self.keys[slot])

    def _reinit(self, name: str, row: int, prob: Problem, restart: int, shared_key=None) -> None:
        table = getattr(self, name.upper())
        table[row] = self._init(prob, name, restart, shared_key).to(table.device)
        getattr(self, f"adam_{name}").reset(torch.tensor([row], device=table.device))

    def _first_member(self, slot: int) -> int:
        return int(torch.nonzero(self.p["group"] == slot)[0])

    def _emit(self, slot: int, status: str) -> FittedGroup:
        p = self.p
        members = torch.nonzero(p["group"] == slot).flatten()
        e_rows = torch.nonzero(self.e_group == slot).flatten()
        m_rows = torch.nonzero(self.m_group == slot).flatten()
        e_local = {int(r): i for i, r in enumerate(e_rows)}
        m_local = {int(r): i for i, r in enumerate(m_rows)}
        solutions = []
        for i in members.tolist():
            prob = self.problems[i]
            acc = float(p["snap_acc"][i])
            path = None
            if self.f.trajectory_every:  # its rows so far, then the kept vectors themselves
                kept = torch.cat([torch.tensor([float(p["steps"][i]), float(p["restarts"][i]), acc,
                                                float(p["snap_loss"][i])]),
                                  self.best_e[p["e_row"][i]].detach().float().cpu(),
                                  self.best_m[p["m_row"][i]].detach().float().cpu()])
                path = torch.stack(self.paths.pop(id(prob), []) + [kept])
            own = status
            if self.release and status != "converged":  # members exact in the kept snapshot
                own = "converged" if acc >= self.r.stop_accuracy else status
            solutions.append(Solution(
                problem=prob, e_row=e_local[int(p["e_row"][i])], m_row=m_local[int(p["m_row"][i])],
                accuracy=acc, c_tokens=int(p["snap_c"][i]), loss=float(p["snap_loss"][i]),
                steps=int(p["steps"][i]), restarts=int(p["restarts"][i]),
                seconds=float(p["seconds"][i]), converged=own == "converged",
                status=own, failure=self.failures.get(id(prob)) if own == "failed" else None,
                path=path,
            ))
        return FittedGroup(self.keys[slot], solutions,
                           self.best_e[e_rows].detach().float().cpu().clone(),
                           self.best_m[m_rows].detach().float().cpu().clone())


def _key(value):
    """A group key back from JSON, where tuples became lists."""
    return tuple(_key(v) for v in value) if isinstance(value, list) else value
