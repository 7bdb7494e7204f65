"""Which studies are there, and what does each take? The declarations of `protoscope study`.

One `Study` per protocol of the paper: its options (sizes, fit budget) with their defaults,
the analyses it runs and the protocol values it gives them where they differ from `analyze`'s
(`overrides`, shown in `--help` and `protoscope options NAME`), the paper's settings and the
pages it writes. Data only, and nothing here imports a model or a table library: the command
line builds every study's flags from this module before anything heavy loads. What a study
does with its options (its plan, its summary) lives in workflows/studies.py, keyed by name.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..analysis.registry import ANALYSES, DEFAULT
from ..options import Option, describe
from . import settings

PAPER_MODELS = "Pythia-160M/410M/1.4B, Llama-3.2-1B/3B, Llama-3.1-8B (GPU)"
PAPER_RECIPE = "AdamW lr 0.01, N(0,1) init, up to 5000 steps"


@dataclass(frozen=True)
class Study:
    name: str
    help: str  # one line, with the measured time of its defaults
    options: tuple[Option, ...]  # its own, beside the model options (settings.MODEL)
    analyses: tuple[str, ...]
    overrides: dict  # {analysis: {option: value}}: the protocol's, where analyze's differ
    paper: dict
    pages: tuple[str, ...] = ()  # "compare": a compare page of the first text

    @property
    def every_option(self) -> tuple[Option, ...]:
        return self.options + settings.MODEL

    def describe(self) -> str:
        lines = [f"study {self.name}: {self.help}"] + describe(self.every_option)
        for name in self.analyses:
            lines.append(f"[{name}]")
            lines += ["  " + line for line in describe(ANALYSES[name].options,
                                                        self.overrides.get(name))]
        return "\n".join(lines)


def _sizes(length: int | None, seeds: int, least_seeds: int = 1, max_steps: int | None = None,
           group_patience: int | None = None, generate_tokens: int = 48) -> tuple[Option, ...]:
    """The options every study has, with this study's defaults."""
    out = ()
    if length is not None:
        out += (Option("length", "int", length, "tokens per text", least=1),)
    return out + (
        Option("seeds", "int", seeds, "solutions per text", least=least_seeds),
        Option("max_steps", "int", max_steps, "fitting budget per problem, or none for the "
               "recipe's 2000", least=1),
        Option("group_patience", "int", group_patience, "steps a share group may go without a "
               "better snapshot, or none for the recipe's 150", least=1),
        Option("batch_size", "int", None, "problems per batch, or none to size by length", least=1),
        Option("text_seed", "int", 0, "seed for random and generated texts", least=0),
        Option("generate_tokens", "int", generate_tokens, "tokens per generated text", least=1),
        Option("overwrite", "bool", False, "replace an existing run directory"),
        Option("quiet", "bool", False, "no progress"),
    )


PROBE_TEXTS = "generated:4:10+windows:20+random:20"  # 80 texts: sized for a 2-core CPU
DIMENSION_TEXTS = "windows:5+generated:5:1+random:5"  # 5 texts of each source
SUBSPACE_KINDS = ("random", "pca")  # geometry/engine/subspace.KINDS, which a test keeps equal
DEMO_TEXTS = "builtin:5+generated:1:3+random:2"  # 10 texts: 7 gave 6 pairs, an interval down to 0.5

STUDIES: dict[str, Study] = {s.name: s for s in (
    Study("connectivity", "paths between a text's solutions, m shared by its seeds (defaults: "
          "467 s wall, 444 CPU-s at one thread, 2026-12-03)",
          (Option("texts", "str", "windows:8", "text SPEC (6 windows gave 4 texts with both "
                  "seeds exact, too few for an interval)", paper=5),)
          + _sizes(12, 2, least_seeds=2, max_steps=500, group_patience=150),
          ("connectivity",), {"connectivity": {"grid": 21, "cross_text_pairs": 2}},
          {"model": PAPER_MODELS, "arrangement": "e m*", "recipe": PAPER_RECIPE, "texts": 5,
           "seeds": 10, "share": "m shared by a text's seeds, e per solution", "pairs": 45,
           "bezier_steps": None, "grid": 61, "length": None},),
    Study("uniqueness", "C contexts x K continuations, one shared m (defaults: 40 solutions, "
          "304 steps; 34 min wall beside four other jobs, 2026-12-03)",
          (Option("contexts", "int", 10, "contexts C (at most 10; 5 or more for an interval)",
                  least=1, paper=50),
           Option("per_context", "int", 2, "continuations K per context", least=1, paper=10))
          + _sizes(8, 3),
          ("uniqueness",), {},
          {"model": PAPER_MODELS, "arrangement": "e m*", "recipe": PAPER_RECIPE, "contexts": 50,
           "per_context": 10, "seeds": 10, "share": "one m shared by every text and seed",
           "length": None},),
    Study("probes", "linear probes of e over many texts, m shared in groups (defaults: 737 s "
          "wall, 662 CPU-s at one thread, 2026-12-03)",
          (Option("texts", "str", PROBE_TEXTS, "text SPEC (80 texts; the paper probes none, "
                  "Bondarenko et al. 2,000)"),
           Option("group_size", "int", 4, "texts per shared m", least=1))
          + _sizes(8, 1, max_steps=300, group_patience=150),
          ("probes",), {},
          {"model": "Llama-3.2-1B (Bondarenko et al.)", "arrangement": "e m*",
           "recipe": PAPER_RECIPE, "share": "e and m per text", "solutions": None, "length": None},),
    Study("capacity", "the capacity search, m shared or not (defaults: 291 s wall, 249 CPU-s "
          "at one thread, 2026-12-03; every text reached 32, the grid's top)",
          (Option("texts", "str", "builtin:5", "text SPEC"),
           Option("lengths", "ints", (4, 8, 16, 32), "the length grid, increasing (the paper's "
                  "goes to 1448)", least=1),
           Option("share", "str", "none", "none, or m shared by every text and seed",
                  choices=("none", "m")),
           Option("method", "str", "one-step", "one-step, mem, or both",
                  choices=tuple(settings.METHODS)))
          + _sizes(None, 1, max_steps=500),
          (), {},  # the capacity search writes its own table (no analysis runs)
          {"model": PAPER_MODELS, "arrangement": "e m*", "recipe": PAPER_RECIPE, "seeds": None,
           "lengths": "4, 5, 8, ... 1448 (powers of sqrt 2)", "share": "none"},),
    Study("dimension", "intrinsic dimension by random-subspace fits (Li et al. 2018): per "
          "text the smallest K at which a fit in a K-dimensional slice of [e; m] reconstructs it",
          (Option("texts", "str", DIMENSION_TEXTS, "text SPEC (5 texts per source: an "
                  "interval per source needs 5)"),
           Option("dims", "ints", (4, 16, 64, 256), "subspace dimensions K tried, increasing",
                  least=1),
           Option("kind", "str", "random", "random (a seeded basis per seed) or pca (the token "
                  "embeddings' top directions)", choices=SUBSPACE_KINDS))
          + _sizes(16, 1, max_steps=500),
          ("dimension",), {},
          {},),  # the paper measures no dimension: no protocol of its to differ from
    Study("demo", "the main job on the default model, end to end: mixed texts x 2 seeds, m "
          "per text, every analysis, the report and a compare page (427 s wall, 410 CPU-s at "
          "one thread, 2026-12-03)",
          (Option("texts", "str", DEMO_TEXTS, "text SPEC"),) + _sizes(8, 2, max_steps=400),
          DEFAULT,
          {"connectivity": {"max_pairs": 1, "grid": 21, "cross_text_pairs": 1},
           "neighbourhoods": {"directions": 3, "adversarial_steps": 3}},
          {"model": PAPER_MODELS, "arrangement": "e m*", "recipe": PAPER_RECIPE,
           "share": "one m shared by every text and seed", "seeds": 10, "pairs": 45,
           "bezier_steps": None, "length": None},
          pages=("compare",)),
)}
