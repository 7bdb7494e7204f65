"""Which budget did an analysis run under? Its options: one table, from command line to stamp.

Every analysis takes keyword options (`analyze(store, loaded, **options)`); the ones a user may
set from the command line are listed once in `OPTIONS`, each as `--flag VALUE`, and reach
`run_analyses` as one dict `{analysis: {keyword: value}}` (the same dict a study passes).
`resolve` fills in the analysis's own defaults, so the manifest's per-analysis stamp names the
whole budget a table was computed under and a table computed under other options is
recomputed rather than reused.
"""

from __future__ import annotations

import argparse
import inspect
from dataclasses import dataclass
from typing import Callable

from ..geometry.errors import ProtoscopeError


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0, got {text!r}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _radii(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _t_sampling(text: str) -> str:
    from ..geometry.paths import T_SAMPLING

    if text not in T_SAMPLING:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(T_SAMPLING)}, got {text!r}")
    return text


def _all_or_count(value: int) -> int | None:
    return None if value == 0 else value


@dataclass(frozen=True)
class Option:
    flag: str  # --flag on the command line
    analysis: str
    keyword: str  # the analyze() keyword it sets
    parse: Callable[[str], object]
    help: str
    convert: Callable[[object], object] = lambda v: v  # command-line value -> keyword value


OPTIONS = (
    Option("pairs", "connectivity", "max_pairs", _count,
           "same-text pairs per text (default 0: all, as the paper)", _all_or_count),
    Option("cross-text-pairs", "connectivity", "cross_text_pairs", _count,
           "pairs of different texts walked straight (default 3)"),
    Option("grid", "connectivity", "grid", _positive, "points along each path (default 61)"),
    Option("bezier-steps", "connectivity", "bezier_steps", _count,
           "curve training budget in steps (default 100)"),
    Option("samples-per-step", "connectivity", "samples_per_step", _positive,
           "t samples per curve step (default 4)"),
    Option("curve-lr", "connectivity", "lr", _rate, "the control point's learning rate (default 0.1: the curve's midpoint moves at half of it, the fit recipe's 0.05)"),
    Option("check-every", "connectivity", "check_every", _count,
           "check the curve every k steps, stopping it once it holds "
           "(default 5; 0: never, train the whole budget)"),
    Option("midpoint-steps", "connectivity", "midpoint_steps", _count,
           "a curve first fits its point at t = 0.5 for up to this many steps, one point a "
           "step (a fit from the midpoint); 0: none"),
    Option("t-sampling", "connectivity", "t_sampling", _t_sampling,
           "uniform (Garipov's) or worst: one t a step beside the curve's worst point"),
    Option("check-grid", "connectivity", "check_grid", _count,
           "points of the coarse check (default 21), used where they are grid points (every "
           "(grid-1)/(k-1)-th), else the whole grid; the whole grid confirms a curve the "
           "coarse check holds"),
    Option("curves", "connectivity", "curves", _names,
           "trained curve families: bezier (default, the paper's), chain (Garipov's polygonal "
           "chain), or bezier,chain"),
    Option("directions", "neighbourhoods", "directions", _positive,
           "random directions per solution (default 4)"),
    Option("adversarial-steps", "neighbourhoods", "adversarial_steps", _count,
           "gradient-ascent steps for the worst direction (default 5)"),
    Option("radii", "neighbourhoods", "radii", _radii,
           "comma-separated radii relative to the vector norm (default 0,0.01,...,1)"),
    Option("bins", "uniqueness", "n_bins", _positive, "text-distance bins (default 5)"),
    Option("uniqueness-pairs", "uniqueness", "max_pairs", _count, "pairs per cohort before the "
           "table holds a sample stratified by pair kind (default 100000; 0: all)", _all_or_count),
    Option("folds", "probes", "folds", _positive, "probe cross-validation folds (default 5)"),
    Option("permutations", "probes", "permutations", _positive,
           "shuffled-label refits per probe for its baseline (default 10)"),
)


def add_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Add every analysis option (except the flags in `skip`) to a parser, default unset."""
    group = parser.add_argument_group("analysis budgets (recorded in the tables)")
    for option in OPTIONS:
        if option.flag not in skip:
            metavar = {_radii: "R1,R2,...", _rate: "X", _names: "NAME,..."}.get(option.parse, "N")
            group.add_argument(f"--{option.flag}", type=option.parse, default=None,
                               dest=_dest(option), metavar=metavar, help=option.help)


def from_args(args: argparse.Namespace) -> dict[str, dict]:
    """The options given on the command line, as run_analyses takes them."""
    out: dict[str, dict] = {}
    for option in OPTIONS:
        value = getattr(args, _dest(option), None)
        if value is not None:
            out.setdefault(option.analysis, {})[option.keyword] = option.convert(value)
    return out


def resolve(analyze: Callable, given: dict | None, name: str) -> dict:
    """The full keyword options of an analyze() call: its defaults, updated with `given`."""
    params = {k: p for k, p in inspect.signature(analyze).parameters.items()
              if p.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = sorted(set(given or {}) - set(params))
    if unknown:
        raise ProtoscopeError(f"{name} has no option {unknown[0]!r}; it takes "
                              f"{', '.join(sorted(params))}")
    return {**{k: p.default for k, p in params.items()}, **(given or {})}


def stamp_value(value: object) -> object:
    """An option as JSON keeps it (tuples become lists), so stamps compare after a reload."""
    if isinstance(value, (tuple, list)):
        return [stamp_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): stamp_value(v) for k, v in value.items()}
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def _dest(option: Option) -> str:
    return f"option_{option.analysis}_{option.keyword}"
