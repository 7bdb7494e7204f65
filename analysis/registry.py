"""Which analyses are there, and what does each take, write, draw and answer? The registry.

One `Analysis` per analysis: its module (whose `analyze(store, loaded, progress=None, *,
...)` takes exactly the declared options as keyword-only parameters, its defaults here and
only here, see `options.takes`), the tables it writes (their columns: geometry/tables.py), its
options (name, kind, default, bound, help, the paper's value), the report module that draws
it, the findings rows it feeds (analysis/findings.py) and, read from the module, the VERSION
its table stamps carry. `analyze`'s flags, the API's keywords, the checking of values, the
table stamp (analysis/run.py) and the protocol header of a report come from here.

Adding an analysis: its module, one entry here, its columns in geometry/tables.py, its figures
(docs/extending.md lists the files). Nothing here imports a model: the command line reads it
before anything loads.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..geometry.tables import RECONSTRUCTED
from ..options import ALL, Option

# paths.T_SAMPLING and paths.CURVES, which a test keeps equal (this module imports no engine)
T_SAMPLING = ("uniform", "worst")
CURVE_FAMILIES = ("bezier", "chain")


@dataclass(frozen=True)
class Analysis:
    name: str
    question: str
    tables: tuple[str, ...]
    options: tuple[Option, ...]
    figures: str  # the reports module that draws its tables
    findings: tuple[str, ...] = ()  # the findings rows its tables feed
    tensors: tuple[str, ...] = ()  # what it writes as NAME.safetensors instead of a table
    default: bool = True  # run by `analyze` without --only (and by the demo)

    @property
    def module(self):
        return importlib.import_module(f"{__package__}.{self.name}")

    @property
    def version(self) -> int:
        """The code version of its numbers (bump the module's VERSION when they change)."""
        return int(self.module.VERSION)


CONNECTIVITY = (
    Option("max_pairs", "int", ALL, "same-text pairs per text", least=1, all=True, flag="pairs",
           paper=45),
    Option("cross_text_pairs", "int", 3, "pairs of different texts walked straight", least=0),
    Option("grid", "int", 61, "points along each path", least=2, paper=61),
    Option("bezier_steps", "int", 100, "curve training budget in steps (0: no curves, straight "
           "paths only)", least=0),
    Option("samples_per_step", "int", 4, "t samples per curve step", least=1),
    Option("lr", "float", 0.1, "the control point's learning rate (the curve's midpoint moves "
           "at half of it, the fit recipe's 0.05)", positive=True, flag="curve-lr"),
    Option("seed", "int", 0, "seed of the pair sample and the curves' t", least=0, flag=""),
    Option("min_accuracy", "float", RECONSTRUCTED, "accuracy an endpoint needs", least=0, flag=""),
    Option("train_batch", "int", 64, "curves trained at once", least=1, flag=""),
    Option("check_every", "int", 5, "check the curve every k steps, stopping it once it holds "
           "(0: never, train the whole budget)", least=0),
    Option("hold_accuracy", "float", RECONSTRUCTED, "accuracy every grid point of a held path "
           "reaches", least=0, flag=""),
    Option("curves", "names", ("bezier",), "trained curve families: bezier (the paper's), chain "
           "(Garipov's polygonal chain), or bezier,chain", choices=CURVE_FAMILIES),
    Option("midpoint_steps", "int", 0, "a curve first fits its point at t = 0.5 for up to this "
           "many steps, one point a step (a fit from the midpoint); 0: none", least=0),
    Option("t_sampling", "str", "uniform", "uniform (Garipov's) or worst: one t a step beside "
           "the curve's worst point", choices=T_SAMPLING),
    Option("check_grid", "int", 21, "points of the coarse check, used where they are grid "
           "points (every (grid-1)/(k-1)-th), else the whole grid; the whole grid confirms a "
           "curve the coarse check holds", least=0),
)
NEIGHBOURHOODS = (
    Option("radii", "floats", (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
           "radii relative to the vector norm", least=0),
    Option("directions", "int", 4, "random directions per solution", least=1),
    Option("adversarial_steps", "int", 5, "gradient-ascent steps for the worst direction", least=0),
    Option("vectors", "str", "e", "which vectors move: e, or e+m", choices=("e", "e+m"),
           flag="neighbourhood-vectors"),
    Option("seed", "int", 0, "seed of the directions", least=0, flag=""),
    Option("batch_size", "int", None, "perturbed solutions per decoder pass (none: by length)",
           least=1, flag=""),
    Option("k_max", "int", 5, "largest k of the k-nearest-neighbour purity", least=1, flag=""),
    Option("umap", "bool", True, "draw UMAP maps (else PCA only)", flag=""),
    Option("umap_min_points", "int", 15, "fewest solutions for a UMAP map", least=2, flag=""),
)
INFORMATION = (
    Option("batch", "int", 64, "solutions through the model at once", least=1, flag=""),
    Option("throughput_batches", "ints", (1, 64), "batch sizes throughput is timed at (1: "
           "latency)", least=1),
    Option("repeats", "int", 3, "timed repeats per throughput batch, after a warm-up", least=1,
           flag="throughput-repeats"),
)
PROBES = (
    Option("positions", "ints", (1, 2, 4, 8, 16), "1-based token positions probed",
           least=1, flag="probe-positions"),
    Option("folds", "int", 5, "probe cross-validation folds (whole texts held out)", least=2),
    Option("permutations", "int", 10, "shuffled-label refits per probe for its baseline", least=1),
    Option("resamples", "int", 1000, "bootstrap resamples over texts for a probe's interval",
           least=1, flag=""),
    Option("min_class", "int", 3, "fewest texts a class needs to be probed", least=2, flag=""),
    Option("bag_min", "int", 5, "fewest texts a word needs to be a bag-of-words target",
           least=1, flag=""),
    Option("semantic", "bool", True, "probe MiniLM embeddings of the texts too", flag=""),
    Option("seed", "int", 0, "seed of folds and permutations", least=0, flag=""),
)
UNIQUENESS = (
    Option("semantic", "bool", True, "semantic distances with MiniLM (false: NaN)", flag=""),
    Option("n_bins", "int", 5, "text-distance bins", least=1, flag="bins"),
    Option("semantic_model", "str", None, "a sentence-transformers folder instead of the "
           "packaged MiniLM", flag=""),
    Option("max_pairs", "int", 100_000, "pairs per cohort before the table holds a sample "
           "stratified by pair kind", least=3, all=True, flag="uniqueness-pairs"),
    Option("seed", "int", 0, "seed of the pair sample", least=0, flag=""),
)
SPECTRUM = (
    Option("eigs", "int", 10, "top Hessian eigenvalues per solution and block (Lanczos)",
           least=1),
    Option("solutions", "int", 4, "solutions measured, the first seed of each text first",
           least=1, all=True, flag="spectrum-solutions"),
    Option("threshold", "float", 0.01, "a direction is stiff above this share of the top "
           "eigenvalue", positive=True, flag="stiff-threshold"),
    Option("step", "float", 1e-3, "finite-difference step of a Hessian-vector product, "
           "relative to |[e; m]|", positive=True, flag=""),
    Option("tol", "float", 1e-3, "Lanczos relative tolerance", positive=True, flag=""),
    Option("seed", "int", 0, "seed of the Lanczos start vectors", least=0, flag=""),
)
TRAJECTORIES = (
    Option("min_points", "int", 3, "fewest kept points a path needs to be described", least=2,
           flag="path-min-points"),
)

ANALYSES: dict[str, Analysis] = {a.name: a for a in (
    Analysis("uniqueness", "are a text's solutions closer to each other than to other texts'?",
             ("uniqueness", "uniqueness_summary", "uniqueness_bins"), UNIQUENESS,
             "reports.figures_uniqueness",
             ("same-text solutions closer than different-text",
              "same-context solutions closer than different-context")),
    Analysis("connectivity", "does a straight path or a trained curve between two solutions "
             "keep the text?", ("connectivity", "connectivity_pairs", "connectivity_tokens",
                                 "positions"),
             CONNECTIVITY, "reports.figures_connectivity",
             ("straight path keeps the text", "curve keeps the text",
              "curve length ratio (held curves)"), tensors=("curves",)),
    Analysis("neighbourhoods", "how far from a solution does the text survive?",
             ("neighbourhoods", "neighbourhood_radii", "neighbourhood_purity", "maps"),
             NEIGHBOURHOODS, "reports.figures_neighbourhoods",
             ("neighbourhood radius / nearest other text",)),
    Analysis("information", "how much does a solution hold, and what does it do as a prompt?",
             ("information", "prompting", "attention", "throughput"), INFORMATION,
             "reports.figures_information"),
    Analysis("probes", "what about its text can a linear probe read from e?", ("probes",),
             PROBES, "reports.figures_information", ("probe: ",)),
    Analysis("spectrum", "how many directions around a solution are stiff (top Hessian "
             "eigenvalues)?", ("spectrum", "spectrum_eigenvalues"), SPECTRUM,
             "reports.figures_dimension", ("stiff Hessian directions (top-k, ",),
             default=False),
    Analysis("trajectories", "how flat is the path the optimiser took, and where on it does "
             "the text appear?", ("trajectories", "trajectory_points"), TRAJECTORIES,
             "reports.figures_dimension", ("path variance in its first two components",)),
    Analysis("dimension", "in how few dimensions can a text be reconstructed (subspace fits)?",
             ("dimension", "intrinsic_dimension"), (), "reports.figures_dimension",
             ("intrinsic dimension (smallest K reconstructing",)),
)}
NAMES = tuple(ANALYSES)
DEFAULT = tuple(n for n, a in ANALYSES.items() if a.default)  # `analyze` without --only
# findings rows no analysis feeds: the capacity search (geometry/runs/capacity.py) writes its table
SEARCH_FINDINGS = {"capacity": ("capacity (tokens, median over texts)",)}


def options_of(name: str) -> tuple[Option, ...]:
    return ANALYSES[name].options


def flag_dest(analysis: str):
    """argparse dest of an analysis option (flags are unique; dests say whose they are)."""
    return lambda option: f"option_{analysis}_{option.name}"
