"""How is a solution optimised? Named recipes: init, optimiser, schedule, stopping and restarts.

`paper` is the recipe of Mezentsev & Oseledets (PAPER.md). `default` is the fastest reliable
recipe measured on the default model (bench/recipe_search.py, results in bench/results/): vectors
start at the scale of the model's real token embeddings, Adam at lr 0.05 (median 88.5 steps to
exact on 8 problems at 16 tokens and 109 on 8 held-out ones, against 175 and 177 at lr 0.02;
0.01, 0.03, 0.1, beta2 0.99 and a cosine schedule were no better), and a problem whose best
accuracy has not improved for `patience` steps restarts from a new deterministic seed, because
a stuck seed rarely recovers (FITTING-NOTES.md) while a fresh one usually converges within a
few hundred steps.
Every field is an option; the manifest records the resolved values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..errors import ProtoscopeError

INITS = ("normal", "embedding")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")
SHARE_POLICIES = ("release", "wait")


@dataclass(frozen=True)
class Recipe:
    name: str = "default"
    init: str = "embedding"  # normal: N(0, 1) * init_scale; embedding: N(0, 1) * std of the embedding matrix * init_scale
    init_scale: float = 1.0
    optimizer: str = "adam"
    lr: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.9
    weight_decay: float = 0.0  # decoupled for adamw, L2 on the gradient for adam
    eps: float = 1e-8
    schedule: str = "constant"  # cosine decays to 10% of lr over max_steps of each problem's own clock
    max_steps: int = 2000  # budget per problem, restarts included
    stop_accuracy: float = 1.0  # a problem (or share group) stops once every member reaches it
    patience: int = 150  # restart after this many steps without a better best accuracy; 0: never
    max_restarts: int = 8
    # How a share group treats a member that stays short while the others are exact (fitting.py,
    # "Share groups"): release: exact members never restart and the group stops, keeping them,
    # once its best gains neither an exact member nor mean accuracy for group_patience steps;
    # wait: it runs until all are exact.
    share_policy: str = "release"
    group_patience: int = 400
    # Length curriculum: fit the first N/4, then N/2, then all N tokens, each stage warm-started
    # from the last one's vectors with the recipe's budget; a solution's steps, restarts and
    # seconds count every stage.
    curriculum: bool = False

    def __post_init__(self):
        checks = [
            (self.init in INITS, f"init must be one of {INITS}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}"),
            (self.lr > 0, "lr must be positive"),
            (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "betas must be in [0, 1)"),
            (self.max_steps >= 1, "max_steps must be at least 1"),
            (0 < self.stop_accuracy <= 1, "stop_accuracy must be in (0, 1]"),
            (self.patience >= 0 and self.max_restarts >= 0, "patience and max_restarts must be >= 0"),
            (self.init_scale > 0, "init_scale must be positive"),
            (self.share_policy in SHARE_POLICIES, f"share_policy must be one of {SHARE_POLICIES}"),
            (self.group_patience >= 1, "group_patience must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ProtoscopeError(f"bad recipe {self.name!r}: {message}")

    def to_dict(self) -> dict:
        return asdict(self)


RECIPES = {
    "default": Recipe(),
    "paper": Recipe(
        name="paper", init="normal", optimizer="adamw", lr=0.01, beta1=0.9, beta2=0.9,
        weight_decay=0.01, max_steps=5000, patience=0, max_restarts=0, share_policy="wait",
    ),
}


def resolve_recipe(name: str = "default", **overrides) -> Recipe:
    """A named recipe with any field overridden (None means: keep the recipe's value)."""
    if name not in RECIPES:
        raise ProtoscopeError(f"unknown recipe {name!r}: allowed are {', '.join(RECIPES)}")
    known = {f.name for f in fields(Recipe)}
    unknown = set(overrides) - known
    if unknown:
        raise ProtoscopeError(f"unknown recipe fields {sorted(unknown)}: allowed are {sorted(known)}")
    return replace(RECIPES[name], **{k: v for k, v in overrides.items() if v is not None})
