"""What can a fit, a capacity search and a study be asked for? Their options, declared once.

The command line's flags, the API's keywords (`protoscope.fit(out, length, **options)`), the
checking of values and `protoscope options` all read these tuples (options.py). The analyses'
options are declared in analysis/registry.py; a study's protocol values for them are its
overrides (workflows/protocols.py). Nothing here loads a model: the parser reads it first.
"""

from __future__ import annotations

from ..geometry.engine.arrangements import DEFAULT_ARRANGEMENT
from ..geometry.engine.recipes import INITS, OPTIMIZERS, RECIPES, SCHEDULES, SHARE_POLICIES
from ..geometry.errors import ProtoscopeError
from ..geometry.models import DEFAULT_MODEL
from ..options import Option

DTYPES = ("float32", "bfloat16", "float16")
SHARES = ("none", "m", "e")  # geometry/engine/fitting.SHARES, which a test keeps equal
METHODS = {"one-step": ("one-step",), "mem": ("mem",), "both": ("one-step", "mem")}
TEXTS_HELP = ("builtin | windows:COUNT | random:COUNT | generated:CONTEXTS:PER_CONTEXT | "
              "FILE.txt | FILE.jsonl | parquet:FILE[:COLUMN[,ID_COLUMN]] | csv:FILE[:COLUMN[,ID_COLUMN]] | "
              "hf:DIR[:SPLIT[:COLUMN[,ID_COLUMN]]]; join several with '+'")

MODEL = (
    Option("model", "str", DEFAULT_MODEL, "alias, local folder or hub id"),
    Option("device", "str", "cpu", "cpu, cuda, cuda:N, mps"),
    Option("dtype", "str", "float32", "the model's dtype", choices=DTYPES),
    Option("threads", "int", None, "CPU threads for torch, or none for torch's; kept in the manifest",
           least=1),
)
RECIPE = (  # the recipe and its fields (none: the recipe's value); geometry/engine/recipes.py
    Option("recipe", "str", "default", "the named fitting recipe", choices=tuple(RECIPES)),
    Option("max_steps", "int", None, "fitting budget per problem, restarts included", least=1),
    Option("lr", "float", None, "the optimiser's learning rate", positive=True),
    Option("patience", "int", None, "restart after this many steps without a better best "
           "accuracy (0: never)", least=0),
    Option("max_restarts", "int", None, "restarts per problem at most", least=0),
    Option("init_scale", "float", None, "scale of the random init", positive=True),
    Option("weight_decay", "float", None, "weight decay", least=0),
    Option("stop_accuracy", "float", None, "a problem stops once it reaches this accuracy",
           positive=True),
    Option("optimizer", "str", None, "the recipe's optimizer", choices=OPTIMIZERS),
    Option("schedule", "str", None, "the learning-rate schedule", choices=SCHEDULES),
    Option("share_policy", "str", None, "release: a share group stops, keeping its exact "
           "members, once its best stops improving; wait: for every member",
           choices=SHARE_POLICIES),
    Option("group_patience", "int", None, "steps without a better group best before a "
           "release", least=1),
)
RECIPE_FIELDS = tuple(o.name for o in RECIPE if o.name != "recipe")
TEXTS = (
    Option("texts", "str", "builtin", f"text SPEC: {TEXTS_HELP}"),
    Option("text_seed", "int", 0, "seed for random and generated texts", least=0),
    Option("generate_tokens", "int", 128, "tokens per generated text", least=1),
)
RUNNING = (
    Option("batch_size", "int", None, "problems per batch, or none to size by length", least=1),
    Option("overwrite", "bool", False, "replace an existing run directory"),
    Option("quiet", "bool", False, "no progress bar; one line of the groups in flight every "
           "progress_seconds"),
    Option("progress_seconds", "float", 60.0, "under quiet, seconds between progress lines",
           least=0),
    Option("checkpoint_steps", "int", 50, "checkpoint the groups in flight every this many "
           "steps ...", least=1),
    Option("checkpoint_seconds", "float", 60.0, "... or every this many seconds, whichever "
           "comes first", positive=True),
)
SOLUTIONS = (
    Option("seeds", "int", 2, "solutions per text", least=1),
    Option("arrangement", "str", DEFAULT_ARRANGEMENT, "e.g. 'bos e m*', 'e m*', 'e m*+1', 'e*', "
           "'(e m)*', 'mem'"),
    Option("share", "str", "none", "which vector a group of texts shares", choices=SHARES),
    Option("group_size", "int", 0, "texts per share group (0: all)", least=0),
    Option("m_from", "str", None, "keep this m frozen and fit e only: a run whose solutions "
           "share one m, or a .safetensors file with a tensor 'm'"),
)
STARTS = (
    Option("init", "str", None, f"{' | '.join(INITS)}: the recipe's init; encoder (the one "
           "shipped for the model) | encoder:ENC (one trained with `encoder train`): start each "
           "problem from the encoder's prediction (restarts use the recipe's init)"),
    Option("init_spread", "float", None, "with init encoder: seed s > 0 starts at the "
           "prediction plus seeded noise of S x its norm (none: 0.05; 0: every seed at the "
           "prediction); larger: seeds end further apart, at more steps", least=0),
    Option("curriculum", "bool", False, "length curriculum: fit N/4, then N/2, then N tokens, "
           "each warm-started from the last (steps count every stage)"),
)
RECORDING = (  # what a fit keeps beside its solutions
    Option("log_dir", "path", None, "also write TensorBoard event files here: per share group and "
           "step, loss and worst and mean accuracy (the tensorboard extra)"),
    Option("subspace", "str", None, "fit [e; m] = x0 + P z in a K-dimensional subspace: K or "
           "K,K,...[:random|pca] (random: a seeded orthonormal basis per seed; pca: the token "
           "embeddings' top directions); no restarts", flag="subspace"),
    Option("trajectory_every", "int", 0, "keep each solution's path, its vectors every this many "
           "steps, in RUN/trajectories (0: none; the trajectories analysis reads them)", least=0),
)
CAPACITY = TEXTS + SOLUTIONS + MODEL + RECIPE + STARTS + RUNNING + (
    Option("lengths", "ints", None, "the length grid, increasing, or none for the paper's "
           "sqrt-2 grid up to 256", least=1),
    Option("method", "str", "one-step", "one-step, mem, or both", choices=tuple(METHODS)),
    Option("warm_start", "bool", True, "start each length from the last one's solutions"),
)
FIT = TEXTS + SOLUTIONS + MODEL + RECIPE + STARTS + RUNNING + RECORDING


def split_init(init: str | None) -> tuple[str | None, str]:
    """`init` in two: the recipe's init (normal | embedding) or an encoder start ("encoder",
    "encoder:ENC"), the one place either is told apart."""
    if not init:
        return None, ""
    if init.partition(":")[0] == "encoder":
        if init.endswith(":"):
            raise ProtoscopeError(f"--init {init!r}: expected {', '.join(INITS)}, encoder or "
                                  "encoder:ENC")
        return None, init
    if init not in INITS:
        raise ProtoscopeError(f"--init must be one of {', '.join(INITS)}, encoder or "
                              f"encoder:ENC, got {init!r}")
    return init, ""


def check_lengths(lengths) -> tuple[int, ...]:
    if not lengths or list(lengths) != sorted(set(lengths)):
        raise ProtoscopeError(f"--lengths must be increasing positive integers, got {list(lengths or ())}")
    return tuple(lengths)
